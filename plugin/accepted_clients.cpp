#include "plugin/accepted_clients.h"

#include <algorithm>
#include <utility>

namespace onboard::plugin {

void AcceptedClients::put(Client client, std::string_view client_id, std::string_view device_id,
                          bool deferred, bool claim) {
  forget(client);
  Entry e;
  e.client_id = client_id;
  e.device_id = device_id;
  e.comparable = client_id.find('\0') == std::string_view::npos &&
                 device_id.find('\0') == std::string_view::npos;
  e.deferred = deferred;
  e.claim = claim;
  e.online = true;
  e.generation = next_generation_++;
  entries_.emplace(client, std::move(e));
}

void AcceptedClients::accept_device(Client client, std::string_view client_id,
                                    std::string_view device_id) {
  put(client, client_id, device_id, false);
}

void AcceptedClients::accept_claim(Client client, std::string_view client_id,
                                   std::string_view claim_username) {
  put(client, client_id, claim_username, false, true);
}

void AcceptedClients::defer(Client client, std::string_view client_id) {
  put(client, client_id, {}, true);
}

void AcceptedClients::forget(Client client) {
  refused_.erase(client);
  auto it = entries_.find(client);
  if (it != entries_.end()) erase(it);
}

void AcceptedClients::erase(Entries::iterator it) {
  if (it->first == last_client_) {
    last_client_ = nullptr;
    last_entry_ = nullptr;
  }
  entries_.erase(it);
}

std::optional<AcceptedClients::Standing> AcceptedClients::offline_session(
    Client client, std::string_view client_id) const {
  auto it = entries_.find(client);
  if (it == entries_.end() || it->second.online || it->second.client_id != client_id)
    return std::nullopt;
  if (it->second.deferred) return Standing::deferred;
  return it->second.claim ? Standing::claim : Standing::device;
}

// Decision table for a DISCONNECT:
//  - no entry: nothing to do (a socket TLS refused, a client the plugin never accepted);
//  - an open entry under the same client id: its connection ended → offline (kept for the will
//    and the offline session; dropped at the next sweep when the session ends with it);
//  - an ended entry, no certificate, same client id: the broker closing an offline session again
//    (SIGHUP re-check, a reconnect taking the session over) → kept;
//  - anything else (another client id, or a certificate on an ended entry): the memory holds a
//    new client that never passed BASIC_AUTH → dropped.
void AcceptedClients::disconnected(Client client, const char* client_id, bool has_certificate,
                                   bool session_ends) {
  refused_.erase(client);
  auto it = entries_.find(client);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  const bool same_id = client_id != nullptr && e.client_id == client_id;
  if (same_id && e.online) {
    e.online = false;
    if (session_ends) ending_.emplace_back(client, e.generation);
  } else if (!same_id || has_certificate) {
    erase(it);
  }
}

bool AcceptedClients::refuse(Client client, std::string_view client_id,
                             std::string_view kick_username) {
  if (refused_.size() >= kMaxRefused) refused_.clear();
  auto [it, inserted] = refused_.try_emplace(client, client_id);
  if (!inserted) {
    if (it->second == client_id) return false;
    it->second = client_id;  // the memory holds another client by now
  }
  if (!kick_username.empty()) kicks_.emplace_back(kick_username);
  return true;
}

std::vector<std::string> AcceptedClients::take_kicks() {
  std::vector<std::string> kicks;
  kicks.swap(kicks_);
  std::sort(kicks.begin(), kicks.end());
  kicks.erase(std::unique(kicks.begin(), kicks.end()), kicks.end());
  return kicks;
}

void AcceptedClients::sweep() {
  for (const auto& [client, generation] : ending_) {
    auto it = entries_.find(client);
    if (it != entries_.end() && !it->second.online && it->second.generation == generation)
      erase(it);
  }
  ending_.clear();
}

std::size_t AcceptedClients::heap_bytes() const noexcept {
  constexpr std::size_t kAllocationOverhead = 16;  // glibc malloc's per allocation
  constexpr std::size_t kInline = 15;              // what std::string keeps without the heap
  auto string_bytes = [&](const std::string& s) {
    return s.capacity() > kInline ? kAllocationOverhead + s.capacity() + 1 : 0;
  };
  // A node of std::unordered_map<const void*, Entry>: the next pointer, then the key and the
  // entry (no cached hash for a pointer key).
  constexpr std::size_t kNode = sizeof(void*) + sizeof(Entries::value_type);
  std::size_t bytes = entries_.bucket_count() * sizeof(void*) + kAllocationOverhead;
  for (const auto& [client, e] : entries_) {
    bytes += kAllocationOverhead + kNode + string_bytes(e.client_id) + string_bytes(e.device_id) +
             e.rules.heap_bytes();
  }
  return bytes;
}

bool LogLimiter::allow(Clock::time_point now, std::size_t& suppressed) {
  if (!started_ || now - window_start_ >= period_) {
    started_ = true;
    window_start_ = now;
    used_ = 0;
  }
  if (used_ < burst_) {
    ++used_;
    suppressed = std::exchange(suppressed_, 0);
    return true;
  }
  ++suppressed_;
  return false;
}

}  // namespace onboard::plugin
