// The clients the plugin's own connect check vouched for, so that a topic check can tell them from
// clients that reached the broker some other way.
//
// Why: with `use_identity_as_username true` or `use_subject_as_username true` on a listener,
// Mosquitto 2.0 never calls the plugin's BASIC_AUTH, so a revoked certificate, one the registry
// does not know, or a client id that is not the device id would connect unchecked, with the
// username set to the certificate's CN. Whatever the configuration, the topic check therefore only
// grants a device's rights to a connection the connect check accepted.
//
// Keys: the broker's `struct mosquitto*`, used as an opaque key and never dereferenced, plus the
// client id it had when accepted. The broker frees a client some time after its DISCONNECT event
// (at once for a clean session, after the will and the offline session otherwise) and may then
// reuse the memory for a new client. Every client that reaches BASIC_AUTH replaces what the
// pointer held; one that skips it (an identity listener) always presents a certificate, and an
// entry of an ended connection never vouches for a client with a certificate.
//
// Broker thread only: no lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "plugin/client_rules.h"

namespace onboard::plugin {

class AcceptedClients {
 public:
  using Client = const void*;

  AcceptedClients() = default;
  // find()'s memo points into this table: a copy would point into the original's.
  AcceptedClients(const AcceptedClients&) = delete;
  AcceptedClients& operator=(const AcceptedClients&) = delete;

  // BASIC_AUTH accepted a device's certificate and set the username to `device_id`.
  void accept_device(Client client, std::string_view client_id, std::string_view device_id);
  // BASIC_AUTH accepted a claim's certificate and set the username to `claim_username`
  // (registry::claim_username): the client may only ask for its own certificate.
  void accept_claim(Client client, std::string_view client_id, std::string_view claim_username);
  // BASIC_AUTH left a client without a certificate to Mosquitto's other mechanisms
  // (plugin_opt_clients_without_certificate defer).
  void defer(Client client, std::string_view client_id);
  // BASIC_AUTH refused the client (or it asked for enhanced authentication): whatever this
  // pointer vouched for before belongs to an earlier client.
  void forget(Client client);

  enum class Standing {
    device,        // the connect check accepted this device: its registry rights apply
    claim,         // the connect check accepted this claim: the claim gate's rights apply
    deferred,      // no certificate, left to Mosquitto's other mechanisms: defer the decision
    not_accepted,  // the connect check did not accept this client: deny (see take_kicks())
  };

  // The standing of a session whose connection ended (will pending, offline session) under this
  // client id, or nullopt. Mosquitto re-runs BASIC_AUTH on SIGHUP for every session, offline ones
  // included, with no certificate: such an entry is kept as it is.
  std::optional<Standing> offline_session(Client client, std::string_view client_id) const;

  // The DISCONNECT event (it fires for every socket, refused ones too). `has_certificate`: the
  // client presents one now. `session_ends`: the session ends with the connection (MQTT 3.x clean
  // session), so the entry is dropped at the next sweep(); the will, the only check still to come,
  // is decided synchronously right after this event.
  void disconnected(Client client, const char* client_id, bool has_certificate, bool session_ends);

  struct Verdict {
    Standing standing = Standing::not_accepted;
    std::string_view device_id;    // for `device`: the id the connect check accepted; for
                                   // `claim`: the username it was given
    std::string_view client_id;    // for `device`: the client id it was accepted with
    bool has_certificate = false;  // for `not_accepted`: what the client presents now
    // For `device`: the client's bound rules (client_rules.h), kept with the entry and dropped
    // with it, so that a new client at the same address never inherits them.
    ClientRules* rules = nullptr;
  };

  // Decision table for one topic check (the first row that applies decides):
  //  1. an entry for this pointer under another client id, or a username that is not the device
  //     id the plugin set: stale (the memory now holds another client) → dropped, not_accepted;
  //  2. an entry whose connection is open → its standing (device / deferred);
  //  3. an entry whose connection ended, no certificate now: a will published after the socket
  //     closed, an offline persistent session → its standing, exactly as while connected;
  //  4. an entry whose connection ended, but a certificate now: a new connection reusing the
  //     memory that skipped BASIC_AUTH → dropped, not_accepted;
  //  5. no entry → not_accepted: an identity/subject listener's client, a session restored from
  //     the persistence file (never checked by this broker run; it is vouched for again when its
  //     device reconnects), a client another plugin authenticated before this one.
  // `has_certificate()` is asked only when the answer depends on it (never for rule 2).
  template <class HasCertificate>
  Verdict check(Client client, const char* client_id, const char* username,
                HasCertificate&& has_certificate) {
    std::optional<bool> certificate;
    auto presents_certificate = [&] {
      if (!certificate) certificate = static_cast<bool>(has_certificate());
      return *certificate;
    };
    if (Entry* e = find(client); e != nullptr) {
      const bool same_client =
          e->comparable && client_id != nullptr && same_text(e->client_id, client_id) &&
          (e->deferred || (username != nullptr && same_text(e->device_id, username)));
      if (same_client && (e->online || !presents_certificate())) {
        if (e->deferred) return Verdict{Standing::deferred, {}, {}, false, nullptr};
        if (e->claim) return Verdict{Standing::claim, e->device_id, e->client_id, false, nullptr};
        return Verdict{Standing::device, e->device_id, e->client_id, false, &e->rules};
      }
      erase(entries_.find(client));
    }
    return Verdict{Standing::not_accepted, {}, {}, presents_certificate(), nullptr};
  }

  // A client the topic check refused. True the first time for this connection: the caller logs
  // it. A non-empty `kick_username` is queued for take_kicks().
  bool refuse(Client client, std::string_view client_id, std::string_view kick_username);
  // The usernames whose connections to close now, each once (on the tick, never inside the
  // client's own callback). By username, not client id: Mosquitto kicks by username only among
  // open connections, by client id also among offline sessions, and closing an offline session
  // again puts it on the session-expiry list twice (2.0.11), which breaks the broker at expiry.
  std::vector<std::string> take_kicks();
  // Drops the entries of sessions that ended with their connection (see disconnected()).
  void sweep();
  // Something for sweep() or take_kicks() to do: the broker's tick skips both otherwise.
  bool has_work() const noexcept { return !ending_.empty() || !kicks_.empty(); }

  std::size_t size() const noexcept { return entries_.size(); }
  // Heap bytes the table holds for its clients: each entry's node (with malloc's overhead), the
  // ids' heap when longer than std::string keeps inline, the bound rules' (ClientRules::heap_bytes)
  // and the bucket array. The refusal bookkeeping is not counted (bounded, and no connected
  // device's). For the memory figure per connected client (bench/registry_bench.cpp).
  std::size_t heap_bytes() const noexcept;

 private:
  struct Entry {
    std::string client_id;
    std::string device_id;  // empty for a deferred client; the username for a claim's
    // Neither id holds a NUL: only then can the broker's C strings be equal to them, and
    // same_text() compare them without their lengths.
    bool comparable = true;
    bool deferred = false;
    bool claim = false;
    bool online = true;
    std::uint64_t generation = 0;
    ClientRules rules;  // for a device: bound at its first topic check
  };
  using Entries = std::unordered_map<Client, Entry>;

  void put(Client client, std::string_view client_id, std::string_view device_id, bool deferred,
           bool claim = false);
  void erase(Entries::iterator it);

  // The entry for `client`, or null. The broker asks about the same client several times in a
  // row (its PUBLISH's write check, then the read check of each subscriber, often itself): the
  // last entry found is remembered, so that such a run costs one pointer compare instead of a
  // hash lookup. Forgotten whenever an entry is erased (erase()); a node's address in the table
  // never changes while it is in there.
  Entry* find(Client client) {
    if (client == last_client_ && last_entry_ != nullptr) return last_entry_;
    auto it = entries_.find(client);
    if (it == entries_.end()) return nullptr;
    last_client_ = client;
    last_entry_ = &it->second;
    return last_entry_;
  }
  // `text` (no NUL in it: Entry::comparable) equals the C string `c`: one strcmp instead of a
  // strlen and a memcmp.
  static bool same_text(const std::string& text, const char* c) noexcept {
    return std::strcmp(text.c_str(), c) == 0;
  }

  // Bounds the refusal bookkeeping under a flood of distinct clients; clearing it only means a
  // client may be logged and kicked twice.
  static constexpr std::size_t kMaxRefused = 65536;

  Entries entries_;
  Client last_client_ = nullptr;  // find()'s memo
  Entry* last_entry_ = nullptr;
  std::vector<std::pair<Client, std::uint64_t>> ending_;  // entries to drop at the next sweep
  std::unordered_map<Client, std::string> refused_;       // refused this connection: logged, kicked
  std::vector<std::string> kicks_;
  std::uint64_t next_generation_ = 1;
};

// At most `burst` lines per `period`, so that a flood of refused clients cannot fill the log.
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  LogLimiter(std::size_t burst, Clock::duration period) : burst_(burst), period_(period) {}
  // True: write the line; `suppressed` is then how many lines were dropped since the last one.
  bool allow(Clock::time_point now, std::size_t& suppressed);

 private:
  std::size_t burst_;
  Clock::duration period_;
  bool started_ = false;
  Clock::time_point window_start_{};
  std::size_t used_ = 0;
  std::size_t suppressed_ = 0;
};

}  // namespace onboard::plugin
