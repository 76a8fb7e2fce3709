// The snapshot the broker thread decides with. The plugin's init does not wait for the registry's
// full read (seconds at a million devices): the watcher thread reads it and hands the first
// snapshot over like every later one. Until it is in there is none, and every decision fails
// closed: each connect is refused and each topic check denied.
//
// Broker thread only.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "plugin/client_rules.h"
#include "plugin/handover.h"
#include "registry/acl.h"
#include "registry/snapshot.h"

namespace onboard::plugin {

class BrokerSnapshot {
 public:
  // False until the first snapshot is in.
  bool loaded() const noexcept { return current_ != nullptr; }
  // Only while loaded().
  const registry::Snapshot& get() const noexcept { return *current_; }
  // What each swap changed: a client's rules bound before a swap that changed its device's shard
  // or the groups are bound again before their next answer; every other binding stays as it is
  // (plugin/client_rules.h).
  const SnapshotChanges& changes() const noexcept { return changes_; }

  // Puts `next` in force. The one it replaces goes back to the watcher thread to be freed there,
  // after its shards were compared with the new one's.
  void replace(std::shared_ptr<const registry::Snapshot> next, Handover& handover) {
    auto old = std::exchange(current_, std::move(next));
    ++generation_;
    if (current_) {
      changes_.record(old.get(), *current_, generation_);
    } else {
      changes_ = SnapshotChanges();  // none in force: the next one is a first one
    }
    if (old) handover.retire(std::move(old));
  }

  // The registry's verdict on a connect, or nullopt before the first snapshot: refuse it then.
  std::optional<registry::ConnectVerdict> connect_verdict(const registry::ConnectRequest& request,
                                                          std::time_t now, bool stale) const {
    if (!current_) return std::nullopt;
    return current_->connect_verdict(request, now, stale);
  }

  // A device client's topic decision (plugin::decide); denied before the first snapshot.
  acl::Evaluation decide(ClientRules& rules, std::string_view username, std::string_view client_id,
                         acl::Access access, std::string_view topic_or_filter) const {
    if (!current_) return {acl::Decision::deny, nullptr};
    return plugin::decide(rules, *current_, changes_, username, client_id, access, topic_or_filter);
  }
  // The same for a topic as the broker hands it over (NUL-terminated).
  acl::Evaluation decide(ClientRules& rules, std::string_view username, std::string_view client_id,
                         acl::Access access, const char* topic_or_filter) const {
    if (!current_) return {acl::Decision::deny, nullptr};
    return plugin::decide(rules, *current_, changes_, username, client_id, access, topic_or_filter);
  }

 private:
  std::shared_ptr<const registry::Snapshot> current_;
  std::uint64_t generation_ = 0;  // of the snapshot in force: counts the swaps, from 1
  SnapshotChanges changes_;
};

}  // namespace onboard::plugin
