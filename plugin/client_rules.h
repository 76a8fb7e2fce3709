// A connected device's topic rules, bound to the client once instead of looked up per decision.
//
// Why: the broker asks for a decision on every PUBLISH and every delivered message. Looking the
// device and its type group up in the snapshot, and substituting %d, %c and %u into every rule's
// pattern, on every call, cost most of a decision (callgrind, bench/run broker_cost). A client's
// device, client id and username do not change while it is connected, so its rules are bound
// the first time it asks after the connect (and again after a swap that changed them): the
// device and its groups found once, each placeholder written into the pattern (`devices/%d/#`
// becomes the literal `devices/dev1/#`), and the last topic's answers kept.
//
// Correctness: the plugin notes, at every swap, which of the snapshot's 4096 device shards
// (compared by address) and whether its groups (by serial) changed: SnapshotChanges keeps, per
// shard, the generation of the last swap that changed the shard or the groups. A binding remembers
// that generation for its device's shard when bound, and answers only while it is still the same:
// then find_device(username) in the current snapshot returns the very record it was bound to (or
// none) and find_group the same groups. Else it is bound again before it answers, so the first
// check after a change (revoke, disable, rule added or removed, group change) is decided by the
// new snapshot. Every answer equals Snapshot::check_access's for the current snapshot (the
// differential tests in tests/plugin/client_rules_test.cpp).
//
// So a change to one device costs the broker thread the swap's shard comparison (a few
// microseconds) and a new binding for the clients of that device's shard (1 in 4096 of them);
// every other client's binding stays current with no work at all, however many are connected.
// In the rebuilt shard, binding again is one device lookup when the change was to another device
// of it: the new snapshot holds the very same device record (with_changes keeps a device it did
// not change at its address) and the same groups (Snapshot::groups_serial), so the binding's rules
// and kept answers are still exactly right and stay. The binding holds its device's record
// (SnapshotDevice::hold), so that an equal address always means the same record, never a later
// one made where it was freed.
//
// Broker thread only. The rule spans point into the bound device record (held by the binding, so
// alive however many snapshots are swapped) and into group objects, which every snapshot with the
// same groups_serial() shares: the current snapshot's own whenever the binding answers, since it
// answers only while current, and a groups change makes every binding stale. A stale binding
// reads nothing of them before it is bound again.
#pragma once

#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "registry/acl.h"
#include "registry/snapshot.h"

namespace onboard::plugin {

// What the swaps changed: for each device shard (Snapshot::device_shard), the generation of the
// last swap that put another shard, or another set of groups, in force. While it is the same as
// when a binding was made, the binding is exactly right: find_device(username) returns the same
// record (or none) and find_group the same groups. Broker thread only.
class SnapshotChanges {
 public:
  // Until record() is called, no binding is current: every decision binds again.
  SnapshotChanges() noexcept { shards_.fill(kUnknown); }

  // `next` was put in force as `generation` (never 0, and more than any before) in place of
  // `previous` (null: the first snapshot, which changes everything). Both must be alive: shards
  // are compared by address.
  void record(const registry::Snapshot* previous, const registry::Snapshot& next,
              std::uint64_t generation) noexcept;

  // The generation of the last swap that changed this shard or the groups; 0 before record().
  std::uint64_t last_change(std::size_t shard) const noexcept {
    const std::uint64_t g = shards_[shard];
    return g == kUnknown ? 0 : g;
  }

 private:
  static constexpr std::uint64_t kUnknown = ~std::uint64_t{0};
  std::array<std::uint64_t, registry::Snapshot::kShards> shards_;
};

class ClientRules {
 public:
  ClientRules() = default;
  // A binding views the client id its owner keeps and rules of the snapshot it was bound to: a
  // copy could outlive either unnoticed. Moved only unbound, into AcceptedClients' table.
  ClientRules(const ClientRules&) = delete;
  ClientRules& operator=(const ClientRules&) = delete;
  ClientRules(ClientRules&& other) noexcept;
  ClientRules& operator=(ClientRules&& other) noexcept;
  ~ClientRules();

  // Binds to the rules `snapshot` (put in force as `changes` last recorded) holds for device
  // `username` and a client with this client id. An unknown or inactive device is bound to deny
  // everything. `client_id` must outlive the binding (AcceptedClients' own copy does); one longer
  // than MQTT allows (65,535 bytes, which no broker hands over) is bound to deny everything. When
  // the snapshot holds the same device record and groups as the current binding, for the same
  // client id, the binding is kept (kept answers included) and only made current. A binding is
  // always asked with the username it was bound with (AcceptedClients keeps one per accepted
  // connection, whose ids never change).
  void bind(const registry::Snapshot& snapshot, const SnapshotChanges& changes,
            std::string_view username, std::string_view client_id);
  // Nothing it was bound from changed since (SnapshotChanges): it may answer.
  bool current(const SnapshotChanges& changes) const noexcept {
    return verified_ != 0 && changes.last_change(shard_) == verified_;
  }
  // Bound for this username's shard and this client id, as given to bind() (its storage, not
  // only its text): a current binding is asked with no other. Debug builds check it in decide();
  // a client id longer than MQTT allows is not kept, so it is not compared.
  bool bound_for(std::string_view username, std::string_view client_id) const noexcept {
    return registry::Snapshot::device_shard(username) == shard_ &&
           (client_id.size() > 0xffff ||
            (client_id.data() == client_id_data_ && client_id.size() == client_id_size_));
  }

  // The decision for the bound snapshot, the same as snapshot.check_access(username, client_id,
  // access, topic_or_filter) with the values given to bind(). The rule pointer is valid while the
  // binding is.
  acl::Evaluation check(acl::Access access, std::string_view topic_or_filter);

  // The kept answer when `topic_or_filter` (a C string, as the broker hands it over) is the last
  // topic check() answered for `access`, or null: then check() decides. No strlen and no call
  // into the rules on the broker's common case, a client publishing to and reading the same
  // topic message after message. Only answers of the binding's rules are kept (a bind() that
  // changes them drops them all).
  const acl::Evaluation* kept(acl::Access access, const char* topic_or_filter) const noexcept {
    if (access != acl::kPublish && access != acl::kSubscribe && access != acl::kRead)
      return nullptr;
    const std::size_t i = slot(access);
    if ((cached_ & (1u << i)) == 0 || std::strcmp(topic_.c_str(), topic_or_filter) != 0)
      return nullptr;
    return &answers_[i];
  }

  // Heap bytes this binding holds (compiled patterns, the kept topic), for the memory figure.
  std::size_t heap_bytes() const noexcept;

 private:
  static constexpr std::size_t kMaxCachedTopic = 256;     // longer topics are evaluated every time
  static constexpr std::size_t kAllocationOverhead = 16;  // glibc malloc's per allocation
  // Heap for compiled rule sets per client, so that a connected client stays near 512 bytes.
  static constexpr std::size_t kCompiledBudget = 160;
  static std::size_t slot(acl::Access access) noexcept {
    return access == acl::kPublish ? 0 : access == acl::kSubscribe ? 1 : 2;
  }

  // Drops the held device record.
  void release_device() noexcept;

  // In the order a decision reads them: its currency, the kept topic and its answers first, so
  // that a kept answer (AcceptedClients' entry around it included) touches as few cache lines as
  // may be; then what an evaluation reads.
  std::uint64_t verified_ = 0;  // SnapshotChanges::last_change(shard_) when bound; 0: not bound
  // Low two bits: how many rule sets (0: every check denied, an unknown or inactive device); bits
  // 2 to 4: PreparedSubstitutions::usable_mask of the binding's substitutions, found once when
  // bound instead of once per decision. One byte for both, so that a client stays within budget.
  std::uint8_t set_count_ = 0;
  std::size_t set_count() const noexcept { return set_count_ & 3u; }
  std::uint8_t usable_mask() const noexcept { return static_cast<std::uint8_t>(set_count_ >> 2); }
  std::uint8_t cached_ = 0;           // which slots of answers_ hold the answer for topic_
  std::uint16_t client_id_size_ = 0;  // of client_id_data_ (MQTT's limit: 65,535 bytes)
  std::uint16_t shard_ = 0;           // Snapshot::device_shard of the username
  std::uint16_t pattern_bytes_ = 0;   // of the compiled patterns' own nodes (capped at 0xffff)
  std::string topic_;
  std::array<acl::Evaluation, 3> answers_{};
  std::array<std::span<const acl::Rule>, 3> sets_{};
  // The record bound to (held while bound; null for an unknown device) and the snapshot's groups
  // (Snapshot::groups_serial): when a new snapshot has both, the binding stays as it is.
  const registry::SnapshotDevice* device_ = nullptr;
  // Substitutions for the rules that could not be compiled (a malformed pattern, a value that
  // cannot be written into one): the device's id (also the username), from its record, and the
  // client id given to bind(), kept as its address and a 16-bit size (eight bytes a client less).
  const char* client_id_data_ = nullptr;
  std::string_view client_id() const noexcept { return {client_id_data_, client_id_size_}; }
  std::uint64_t groups_serial_ = 0;
  std::vector<acl::Rule> compiled_;  // the sets that had placeholders, substituted, in set order
};

// The decision for a device client the connect check accepted: binds `rules` again when something
// it was bound from changed (ClientRules::current), then checks.
acl::Evaluation decide(ClientRules& rules, const registry::Snapshot& snapshot,
                       const SnapshotChanges& changes, std::string_view username,
                       std::string_view client_id, acl::Access access,
                       std::string_view topic_or_filter);

// The same for a topic as the broker hands it over (NUL-terminated): the kept answer when the
// topic is the last one asked, else the decision above.
inline acl::Evaluation decide(ClientRules& rules, const registry::Snapshot& snapshot,
                              const SnapshotChanges& changes, std::string_view username,
                              std::string_view client_id, acl::Access access,
                              const char* topic_or_filter) {
  if (!rules.current(changes)) rules.bind(snapshot, changes, username, client_id);
  assert(rules.bound_for(username, client_id));
  if (const acl::Evaluation* kept = rules.kept(access, topic_or_filter)) return *kept;
  return rules.check(access, std::string_view(topic_or_filter));
}

}  // namespace onboard::plugin
