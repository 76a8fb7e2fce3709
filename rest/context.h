// The REST server's state, shared by every worker thread: the CA, the registry (one store per
// worker at a time), the secrets and the writers' turn.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ca/authority.h"
#include "ca/ocsp.h"
#include "core/secret.h"
#include "ops/enrol_group.h"
#include "ops/workspace.h"
#include "registry/store.h"

namespace onboard::rest {

// A Store belongs to one thread at a time; a worker borrows one for a request and gives it back.
// At most `threads` are ever open, each a SQLite connection with its own busy timeout.
class StorePool {
 public:
  explicit StorePool(ops::Workspace workspace) : workspace_(std::move(workspace)) {}

  class Lease {
   public:
    Lease(StorePool& pool, std::unique_ptr<registry::Store> store)
        : pool_(&pool), store_(std::move(store)) {}
    Lease(Lease&&) = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (store_) pool_->give_back(std::move(store_));
    }
    registry::Store& operator*() const { return *store_; }

   private:
    StorePool* pool_;
    std::unique_ptr<registry::Store> store_;
  };

  Result<Lease> borrow() {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        auto store = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(store));
      }
    }
    ONBOARD_TRY(auto store, ops::open_registry(workspace_));
    return Lease(*this, std::move(store));
  }

 private:
  void give_back(std::unique_ptr<registry::Store> store) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(store));
  }
  ops::Workspace workspace_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<registry::Store>> idle_;
};

struct Context {
  ops::Workspace workspace;
  ca::Authority ca;
  std::optional<Secret> hold_passphrase;
  Secret link_secret;
  StorePool stores;
  // The server's writers take turns here rather than in SQLite's busy handler, whose sleeps grow
  // to 100 ms and serve waiters in no order (measured: p99 of registrations 350 ms with four
  // writers, 4 ms alone). Key generation and signing run before the turn, in parallel. The turn
  // also keeps two CRL rewrites from finishing out of order (an older CRL replacing a newer one).
  // Other processes (the CLI) still meet the server in SQLite's lock and busy timeout.
  std::mutex write_turn;
  // Enrolments over MQTT waiting for the write turn together are recorded in one transaction
  // (ops/enrol_group.h): a burst costs one commit per batch, not one per device.
  ops::EnrolmentGroup enrolments{};
  // The delegated OCSP responders, one per issuing CA in ops::ocsp_issuers() order, each loaded
  // or made on the first request about its issuer and renewed when it nears its end
  // (rest/ocsp.cpp).
  struct OcspState {
    struct Responder {
      std::shared_ptr<const ca::OcspResponder> responder;
      UnixTime not_after = 0;
      UnixTime retry_at = 0;  // after a failed renewal, not before this
    };
    std::mutex mutex;
    std::vector<Responder> by_issuer;
  } ocsp{};
  // What the broker's plugin sends as its bearer token to hand over enrolment requests
  // (--provision-token-file); none: the provisioning route refuses every caller.
  std::optional<Secret> provision_token{};
  // The SHA-256 fingerprints of the client certificates the brokers' plugins may authenticate
  // with instead (--provision-client-cert, verified against --client-ca); none: no certificate
  // may.
  std::vector<std::string> provision_client_sha256{};
  // The least age, in seconds, of the certificate a device renews (--renewal-min-age).
  UnixTime renewal_min_age = 0;
  // Set when a revocation was committed but its CRL rewrite may have failed (a device's renewed
  // certificate connecting, the renewal sweep): refresh_crl_on_schedule rewrites the CRL at its
  // next check, and keeps it set until a rewrite succeeds.
  std::atomic<bool> crl_stale{false};
};

}  // namespace onboard::rest
