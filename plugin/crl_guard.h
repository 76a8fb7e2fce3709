// Guards the CRL file the broker's listener loads (`crlfile`), for plugin_opt_crl_file.
//
// Mosquitto reads `crlfile` at start and on SIGHUP only. Once the CRL it holds is past its next
// update, OpenSSL refuses every client certificate; a corrupt CRL at SIGHUP is dropped silently
// and revoked certificates pass TLS (fail open). So, on the watcher thread: notice when the file
// changes, check it the way the broker will load it, and only when it is usable ask the broker to
// reload it (the tick raises SIGHUP). Warn when the CRL the broker holds nears its next update and
// report an error once it has expired: the plugin cannot sign a new one (the CA key never enters
// the broker); `onboardctl crl --if-expiring-within` or `onboardctl serve` must.
#pragma once

#include <atomic>
#include <cstddef>
#include <optional>
#include <string>

#include "core/time.h"
#include "plugin/file_stamp.h"
#include "plugin/handover.h"

namespace onboard::plugin {

struct CrlFileCheck {
  std::string problem;         // empty: the broker can load it and it is in force now
  bool not_yet_valid = false;  // the problem will go away by itself (a writer's clock ahead)
  std::size_t crls = 0;
  UnixTime this_update = 0;  // of the CRL that expires first
  UnixTime next_update = 0;  // the earliest next update in the file; 0 when none has one
  bool ok() const noexcept { return problem.empty(); }
};

// Reads every CRL in the PEM file the way Mosquitto does (X509_load_crl_file), and checks that
// there is at least one, that each is in force at `now` (this update passed, next update not) and,
// when `issuers` is not empty, that each is signed by one of those certificates. Files larger than
// 64 MiB are refused unread.
CrlFileCheck check_crl_file(const std::string& path, UnixTime now,
                            const std::string& issuers_pem = {});

class CrlGuard {
 public:
  // `issuers_pem`: the CA certificates (PEM) a CRL must be signed by; empty: not checked.
  // Made at plugin init, which Mosquitto runs before its listeners load the CRL: the file as it is
  // now is what the broker is about to load, and a later replacement is a change to check.
  explicit CrlGuard(std::string path, std::string issuers_pem = {});

  // On every watcher poll, with the wall clock: looks at the file, posts a reload or log lines.
  void poll(Handover& handover, UnixTime now);

  // The broker reloaded its configuration (any SIGHUP): it now holds whatever is on disk. Called on
  // the broker thread; acted on at the next poll.
  void broker_reloaded() noexcept { reloaded_.store(true, std::memory_order_release); }

  const std::string& path() const noexcept { return path_; }

 private:
  void hold(const CrlFileCheck& check);
  void check_expiry(Handover& handover, UnixTime now);

  std::string path_;
  std::string issuers_pem_;
  std::atomic<bool> reloaded_{false};
  bool started_ = false;
  std::optional<FileStamp> at_init_;   // the file when the plugin started (see the constructor)
  std::optional<FileStamp> seen_;      // the file as last checked for good
  std::optional<FileStamp> reported_;  // the file whose problem was last logged
  bool missing_reported_ = false;
  // The CRL the broker holds, as far as the plugin knows.
  UnixTime held_this_update_ = 0, held_next_update_ = 0;
  enum class Warned { none, near, expired } warned_ = Warned::none;
};

}  // namespace onboard::plugin
