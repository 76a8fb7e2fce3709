#include "plugin/recovery_guard.h"

namespace onboard::plugin {

void RecoveryGuard::connected(Client client, std::string_view client_id, bool claim) {
  live_.insert_or_assign(std::string(client_id), Live{client, claim});
}

void RecoveryGuard::disconnected(Client client, std::string_view client_id) {
  auto it = live_.find(std::string(client_id));
  if (it != live_.end() && it->second.client == client) live_.erase(it);
}

bool RecoveryGuard::live(std::string_view client_id) const {
  return live_.find(std::string(client_id)) != live_.end();
}

bool RecoveryGuard::live_other(Client client, std::string_view client_id) const {
  auto it = live_.find(std::string(client_id));
  return it != live_.end() && it->second.client != client;
}

bool RecoveryGuard::live_claim(Client client, std::string_view client_id) const {
  auto it = live_.find(std::string(client_id));
  return it != live_.end() && it->second.client == client && it->second.claim;
}

bool RecoveryGuard::live_device(Client client, std::string_view client_id) const {
  auto it = live_.find(std::string(client_id));
  return it != live_.end() && it->second.client == client && !it->second.claim;
}

RecoveryGuard::Holder RecoveryGuard::holder(std::string_view client_id) const {
  auto it = live_.find(std::string(client_id));
  if (it == live_.end()) return Holder::none;
  return it->second.claim ? Holder::claim : Holder::device;
}

void RecoveryGuard::prune(Clock::time_point now) {
  for (auto it = seen_.begin(); it != seen_.end();) {
    if (now - it->second > window_) {
      it = seen_.erase(it);
    } else {
      ++it;
    }
  }
}

void RecoveryGuard::device_seen(std::string_view device_id, Clock::time_point now) {
  auto it = seen_.find(std::string(device_id));
  if (it != seen_.end()) {
    it->second = now;
    return;
  }
  // Pruning walks everything: at most once a minute while full.
  if (seen_.size() >= capacity_ && now >= next_prune_) {
    prune(now);
    next_prune_ = now + std::chrono::minutes(1);
  }
  if (seen_.size() >= capacity_) {
    refuse_until_ = now + window_;
    return;
  }
  seen_.emplace(std::string(device_id), now);
}

bool RecoveryGuard::may_recover(Client client, std::string_view device_id, Clock::time_point now) {
  if (live_other(client, device_id) || now < refuse_until_) return false;
  auto it = seen_.find(std::string(device_id));
  return it == seen_.end() || now - it->second > window_;
}

}  // namespace onboard::plugin
