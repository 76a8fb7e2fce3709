// Enrolment requests off the broker's thread (docs/provisioning.md): the broker thread submits
// what a claim client published on `$provision/<client id>/csr` to a bounded queue and never
// waits; worker threads owned by the plugin hand each request to the signer (`onboardctl serve`,
// where the CA key is) and queue its answer; the broker thread takes the answers on its tick and
// publishes each to its client. No broker headers: tested with a fake signer.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <openssl/types.h>

#include "core/error.h"
#include "plugin/handover.h"

namespace onboard::plugin {

// What a worker hands to the signer: an enrolment (a claim client's `$provision/<id>/csr`), a
// renewal (a device's `$provision/<id>/renew`), or the news that a device connected with a
// renewed certificate (its predecessors are then superseded; nothing is published).
enum class RequestKind { enroll, renew, connected };

struct ProvisionRequest {
  std::string claim;  // enroll: the claim the client connected with
  std::string client_id;
  std::string payload;  // as published (empty for connected)
  RequestKind kind = RequestKind::enroll;
  // renew, connected: the SHA-256 fingerprint of the certificate the client connected with.
  std::string certificate_sha256{};
};

struct ProvisionAnswer {
  std::string client_id;
  std::string result;   // "accepted" or "rejected": the last level of the answer's topic
  std::string payload;  // JSON, as the device receives it
  std::string code;     // a rejection's code, for the log
  RequestKind kind = RequestKind::enroll;
  // renew, accepted: the fingerprint of the new certificate (the acceptance waits until the
  // snapshot knows it). connected: the certificate the device connected with.
  std::string certificate_sha256{};
};

// A rejection the plugin answers itself: {"code","message","retryable"}. Codes and messages are
// fixed text of the plugin's own (nothing to escape).
ProvisionAnswer rejection(std::string client_id, std::string_view code, std::string_view message,
                          bool retryable);

// One connection to the signer, used by one worker thread at a time. Throws or returns a
// signer_unavailable rejection when the signer cannot be reached.
class SignerClient {
 public:
  virtual ~SignerClient() = default;
  virtual ProvisionAnswer send(const ProvisionRequest& request) = 0;
};

struct SignerOptions {
  std::string url;     // http://HOST:PORT or https://HOST:PORT
  std::string token;   // the bearer secret; empty: none sent (a client certificate instead)
  std::string cafile;  // https: the CA certificates the signer's certificate is checked against
  std::chrono::milliseconds timeout{5000};
  // https: the plugin's client certificate (PEM: the certificate, then any intermediates; all are
  // sent) and its unencrypted key; empty: none presented.
  std::string certfile{};
  std::string keyfile{};
};

// Loads `certfile` (PEM: the client certificate first, then any intermediate CA certificates, all
// of which the handshake sends) and `keyfile` (an unencrypted PEM key of that certificate) into
// `ctx`. An encrypted key is refused with an error that says so: its passphrase is never asked
// for (OpenSSL would otherwise prompt on the broker's terminal).
Status use_client_credential(SSL_CTX& ctx, const std::string& certfile, const std::string& keyfile);
// Whether `certfile` and `keyfile` make a usable TLS client credential, by the same loading the
// signer's connections use (use_client_credential): checked at init, so that a broker with a
// broken credential refuses to start rather than answering every device signer_unavailable.
Status check_client_credential(const std::string& certfile, const std::string& keyfile);
// The signer over HTTP(S): POST /v1/provision/<claim>/<client id> with the payload as its body;
// a renewal POST /v1/renew/<client id> with the presented certificate's fingerprint in
// X-Client-Certificate; connected POST /v1/renew/<client id>/connected likewise, answered with
// result "connected" (nothing to publish) and, in `payload`, the signer's JSON.
std::unique_ptr<SignerClient> http_signer(const SignerOptions& options);

// The requests waiting for a worker: at most `limit` in all, and at most `claim_share` enrolments
// of any one claim, so that a leaked claim flooding requests cannot fill the queue every claim
// shares (its excess is answered claim_queue_full; other claims' requests still find room).
// Renewals and connected notices are devices' own, already limited to one at a time per device
// by the plugin: they count towards `limit` only. Requests leave in the order they came. Not
// thread-safe: the Provisioner holds its lock around every call. push throws only std::bad_alloc,
// and then leaves the queue, every claim's count and the request as they were.
class RequestQueue {
 public:
  enum class Admission {
    queued,            // taken (and moved from)
    full,              // `limit` requests wait: the request is left as it was
    claim_share_full,  // `claim_share` enrolments of its claim wait: left as it was
  };
  RequestQueue(std::size_t limit, std::size_t claim_share);
  Admission push(ProvisionRequest& request);
  std::optional<ProvisionRequest> pop();
  bool empty() const noexcept { return requests_.empty(); }
  std::size_t size() const noexcept { return requests_.size(); }
  // How many enrolments of `claim` wait.
  std::size_t waiting(const std::string& claim) const;
  // After a claim_share_full: whether it is the claim's first since its share was last taken (its
  // waiting enrolments then drained to none), so that a flood is logged once, not per request.
  bool first_refusal(const std::string& claim);

 private:
  std::size_t limit_;
  std::size_t claim_share_;
  std::deque<ProvisionRequest> requests_;
  struct Waiting {
    std::size_t count = 0;
    bool refused = false;  // a request of the claim was refused since count was last 0
  };
  // Enrolments waiting, by claim; a claim with none has no entry (at most `limit` entries).
  std::unordered_map<std::string, Waiting> per_claim_;
};

class Provisioner {
 public:
  using MakeClient = std::function<std::unique_ptr<SignerClient>()>;
  // `queue_limit` and `claim_share`: RequestQueue's.
  Provisioner(MakeClient make_client, std::size_t workers, std::size_t queue_limit,
              std::size_t claim_share, std::function<void(LogLevel, std::string)> log);
  Provisioner(const Provisioner&) = delete;
  Provisioner& operator=(const Provisioner&) = delete;
  ~Provisioner();  // stops the workers; a request in flight ends within the signer's timeout

  // Broker thread: queues the request, or queues a rejection for it at once: claim_queue_full
  // when its claim's share of the queue is taken, signer_unavailable when the whole queue is
  // (both retryable). Never waits for the signer.
  void submit(ProvisionRequest request);
  // Broker thread: whether answers wait, without the lock.
  bool pending() const noexcept { return pending_.load(std::memory_order_acquire); }
  std::vector<ProvisionAnswer> take();

 private:
  void run(std::stop_token stop, SignerClient* client);
  void answer(ProvisionAnswer answer);

  std::function<void(LogLevel, std::string)> log_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  RequestQueue requests_;
  std::vector<ProvisionAnswer> answers_;
  std::atomic<bool> pending_{false};
  std::vector<std::unique_ptr<SignerClient>> clients_;
  std::vector<std::jthread> workers_;  // last: stopped and joined first
};

}  // namespace onboard::plugin
