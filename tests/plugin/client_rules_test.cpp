// The plugin's bound, cached decisions (plugin/client_rules.h) against the plain evaluation
// (Snapshot::check_access) of the snapshot in force, over random interleavings of registry changes,
// connects, disconnects and topic checks.
#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/accepted_clients.h"
#include "plugin/broker_snapshot.h"
#include "plugin/client_rules.h"
#include "registry/snapshot.h"

namespace {

using onboard::plugin::AcceptedClients;
using onboard::plugin::BrokerSnapshot;
using onboard::plugin::ClientRules;
using onboard::plugin::decide;
using onboard::plugin::SnapshotChanges;
using onboard::registry::DeviceAccess;
using onboard::registry::DeviceStatus;
using onboard::registry::GroupAccess;
using onboard::registry::Snapshot;
using onboard::registry::SnapshotDevice;
namespace acl = onboard::acl;

// Ids with the characters a placeholder cannot be written with ('%', '+', '/'), so that the
// uncompiled path is compared as well.
const std::vector<std::string> kDeviceIds{"dev1", "dev2", "dev3", "sensor-7", "a.b_c",
                                          "x%dy", "p+q",  "s/t",  "dev10",    "d"};
const std::vector<std::string> kTypes{"", "ta", "tb", "tc"};  // tc has no group
const std::vector<std::string> kPatterns{
    "devices/%d/#", "devices/%c/+", "devices/%u/x", "devices/+/x", "#", "a/%d", "a/b%dc/#",
    "devices/%d", "$SYS/#", "+/%d/#", "fleet/#", "fleet/+/status", "a/#/b", "a/x%zy",
    "devices/%d%c/#", "%d/#", "devices/%d/+/t", "+/+", "devices/dev1/#",
    // First levels a rule's first-level tag must not pass over wrongly: empty, '$', wildcards, a
    // placeholder, a literal that is also a device id.
    "/devices/#", "/%d", "$SYS/+", "+/#", "x/#", "dev1/+", "%c/+"};

struct World {
  std::mt19937 rng{20261207};
  std::int64_t next_rule = 1;
  std::int64_t seq = 1;
  std::vector<std::string> ids = kDeviceIds;  // the devices and the topic levels named after them

  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(pick(static_cast<int>(v.size())))];
  }

  std::vector<acl::Rule> rules() {
    std::vector<acl::Rule> out;
    const int n = pick(4);
    for (int i = 0; i < n; ++i) {
      out.push_back(acl::Rule{next_rule++, pick(kPatterns), static_cast<std::uint8_t>(1 + pick(7)),
                              pick(3) == 0 ? acl::Effect::deny : acl::Effect::allow, pick(3)});
    }
    return out;
  }

  DeviceAccess device(const std::string& id) {
    DeviceAccess d;
    d.id = id;
    const int status = pick(8);
    d.status = status == 0   ? DeviceStatus::disabled
               : status == 1 ? DeviceStatus::revoked
                             : DeviceStatus::active;
    d.type = pick(kTypes);
    d.rules = rules();
    return d;
  }

  GroupAccess group(const std::string& name) { return GroupAccess{name, rules()}; }

  std::string level(const std::vector<std::string>& extra) {
    switch (pick(6)) {
      case 0:
        return pick(ids);
      case 1:
        return "b" + pick(ids) + "c";
      case 2:
        return pick(ids) + pick(ids);
      default: {
        static const std::vector<std::string> words{"devices", "a",    "x", "fleet", "status",
                                                    "t",       "$SYS", "",  "b",     "dev1"};
        return pick(3) == 0 && !extra.empty() ? pick(extra) : pick(words);
      }
    }
  }

  std::string topic(bool filter) {
    static const std::vector<std::string> wildcards{"+", "#"};
    std::string out;
    const int n = 1 + pick(4);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out += '/';
      out += level(filter ? wildcards : std::vector<std::string>{});
    }
    return out;
  }
};

acl::Access random_access(World& w) {
  const int a = w.pick(3);
  return a == 0 ? acl::kPublish : a == 1 ? acl::kSubscribe : acl::kRead;
}

// The random tests' comparison: a device client's check through the plugin's path against the
// plain evaluation (Snapshot::check_access) of the snapshot in force, decision and rule alike.
struct Comparison {
  int compared = 0, allowed = 0, denied = 0, mismatches = 0, repeats = 0;
  std::vector<std::string> examples;                        // the first few mismatches, in words
  std::vector<std::pair<std::string, acl::Access>> recent;  // checks to ask again

  // One random check by `client` as the broker would ask it (compared only when the client is a
  // device the connect check accepted): half the time one of the recent checks again, so that
  // kept answers are put to the test, else a new topic or filter.
  void check_client(World& w, AcceptedClients& clients, const void* client,
                    const std::string& client_id, const std::string& username,
                    const Snapshot& snapshot, const SnapshotChanges& changes) {
    std::pair<std::string, acl::Access> check;
    if (!recent.empty() && w.pick(2) == 0) {
      check = w.pick(recent);  // the same topic again: the kept answer must still be right
      ++repeats;
    } else {
      const acl::Access access = random_access(w);
      check = {w.topic(access == acl::kSubscribe), access};
      if (recent.size() < 16) {
        recent.push_back(check);
      } else {
        recent[static_cast<std::size_t>(w.pick(16))] = check;
      }
    }
    auto verdict = clients.check(client, client_id.c_str(), username.c_str(), [] { return false; });
    if (verdict.standing != AcceptedClients::Standing::device) return;
    compare(w, verdict, snapshot, changes, check);
  }

  void compare(World& w, const AcceptedClients::Verdict& verdict, const Snapshot& snapshot,
               const SnapshotChanges& changes, const std::pair<std::string, acl::Access>& check) {
    // Half the checks as the broker hands the topic over (a C string: the kept answer's fast
    // path, plugin.cpp), half as a string_view.
    const auto ours = w.pick(2) == 0
                          ? decide(*verdict.rules, snapshot, changes, verdict.device_id,
                                   verdict.client_id, check.second, check.first.c_str())
                          : decide(*verdict.rules, snapshot, changes, verdict.device_id,
                                   verdict.client_id, check.second, std::string_view(check.first));
    const auto plain =
        snapshot.check_access(verdict.device_id, verdict.client_id, check.second, check.first);
    ++compared;
    (plain.decision == acl::Decision::allow ? allowed : denied)++;
    const std::int64_t our_rule = ours.rule != nullptr ? ours.rule->id : 0;
    const std::int64_t plain_rule = plain.rule != nullptr ? plain.rule->id : 0;
    if (ours.decision == plain.decision && our_rule == plain_rule) return;
    ++mismatches;
    if (examples.size() < 5) {
      examples.push_back(
          std::string(acl::access_name(check.second)) + " '" + check.first + "' by '" +
          std::string(verdict.device_id) + "' client '" + std::string(verdict.client_id) +
          "': bound " + std::string(acl::to_string(ours.decision)) + " rule " +
          std::to_string(our_rule) + ", plain " + std::string(acl::to_string(plain.decision)) +
          " rule " + std::to_string(plain_rule));
    }
  }
};

// The plugin's record of its swaps (BrokerSnapshot::replace), for the tests that swap by hand.
struct Swaps {
  SnapshotChanges changes;
  std::uint64_t generation = 0;
  // `next` put in force in place of `previous` (null: the first snapshot); both alive.
  void put(const Snapshot* previous, const Snapshot& next) {
    changes.record(previous, next, ++generation);
  }
};

}  // namespace

TEST_CASE("bound and cached decisions equal the plain evaluation through changes and reconnects") {
  World w;
  std::vector<DeviceAccess> devices;
  for (std::size_t i = 0; i + 2 < kDeviceIds.size(); ++i)
    devices.push_back(w.device(kDeviceIds[i]));
  auto snapshot = Snapshot::build(devices, {w.group("default"), w.group("ta"), w.group("tb")}, 1);
  Swaps swaps;  // recorded as the plugin records them: most bindings stay current
  swaps.put(nullptr, *snapshot);
  AcceptedClients clients;

  // Eight client slots: the broker's `struct mosquitto*` addresses, reused by later clients.
  struct Slot {
    std::string client_id, username;
  };
  std::array<int, 8> addresses{};
  std::array<Slot, 8> slots;
  Comparison result;
  int swapped = 0;
  for (int step = 0; step < 60000; ++step) {
    const int op = w.pick(100);
    const std::size_t s = static_cast<std::size_t>(w.pick(8));
    const void* client = &addresses[s];
    if (op < 4) {
      // A registry change: a device replaced (rules, status, type), added or removed, or a group's
      // rules replaced; then the swap, as the plugin's tick does it.
      ++swapped;
      std::vector<DeviceAccess> changed;
      std::vector<std::string> removed;
      std::vector<GroupAccess> groups;
      const int kind = w.pick(4);
      if (kind == 0) {
        groups.push_back(w.group(w.pick(std::vector<std::string>{"default", "ta", "tb"})));
      } else if (kind == 1) {
        removed.push_back(w.pick(kDeviceIds));
      } else {
        changed.push_back(w.device(w.pick(kDeviceIds)));
      }
      auto next = snapshot->with_changes(std::move(changed), removed, std::move(groups), ++w.seq);
      swaps.put(snapshot.get(), *next);
      snapshot = std::move(next);
    } else if (op < 12) {
      // A connect the connect check accepted: username := device id; the client id is normally the
      // device id, here sometimes not (the bound rules must not assume it).
      const std::string& device = w.pick(kDeviceIds);
      slots[s] = Slot{w.pick(4) == 0 ? w.pick(kDeviceIds) : device, device};
      clients.accept_device(client, slots[s].client_id, device);
    } else if (op < 16) {
      clients.disconnected(client, slots[s].client_id.c_str(), w.pick(2) == 0, w.pick(2) == 0);
      if (w.pick(3) == 0) clients.sweep();
    } else if (op < 17) {
      clients.forget(client);
    } else {
      result.check_client(w, clients, client, slots[s].client_id, slots[s].username, *snapshot,
                          swaps.changes);
    }
  }
  INFO(result.compared << " compared, " << result.allowed << " allowed, " << result.denied
                       << " denied, " << swapped << " changes, " << result.repeats
                       << " repeated topics");
  for (const auto& e : result.examples) UNSCOPED_INFO(e);
  CHECK(result.mismatches == 0);
  // The comparison covered both answers, many swaps and many repeated topics.
  CHECK(result.allowed > 1000);
  CHECK(result.denied > 1000);
  CHECK(swapped > 1000);
  CHECK(result.repeats > 10000);
}

TEST_CASE("bound decisions equal the plain evaluation through mixed swaps and full reloads") {
  // As above, with what the plugin's swaps also do: devices that share a shard with a bound one
  // (a shard rebuilt around a record kept at its address), several changes in one swap (a device
  // removed and added again, groups, "default"), a full reload (every record and group new, some
  // the same as before), a claims-only swap, older snapshots freed late (the watcher thread
  // frees them when it gets round to it, so their records stay alive a while), and snapshots the
  // broker never put in force (the watcher made the next one before the broker took it).
  World w;
  for (int i = 0; w.ids.size() < kDeviceIds.size() + 4; ++i) {
    const std::string id = "n" + std::to_string(i);
    if (Snapshot::device_shard(id) == Snapshot::device_shard("dev1")) w.ids.push_back(id);
  }
  std::vector<DeviceAccess> devices;
  for (const auto& id : w.ids) devices.push_back(w.device(id));
  auto snapshot = Snapshot::build(devices, {w.group("default"), w.group("ta"), w.group("tb")}, 1);
  Swaps swaps;
  swaps.put(nullptr, *snapshot);
  std::deque<std::shared_ptr<const Snapshot>> retired;
  AcceptedClients clients;
  struct Slot {
    std::string client_id, username;
  };
  std::array<int, 8> addresses{};
  std::array<Slot, 8> slots;
  const std::vector<std::string> group_names{"default", "ta", "tb", "tc"};

  Comparison result;
  int swapped = 0, reloads = 0, skipped = 0;
  for (int step = 0; step < 30000; ++step) {
    const int op = w.pick(100);
    const std::size_t s = static_cast<std::size_t>(w.pick(8));
    const void* client = &addresses[s];
    if (op < 5) {
      ++swapped;
      std::shared_ptr<const Snapshot> next;
      const int kind = w.pick(8);
      if (kind == 0) {
        // A full reload: the same data read again, some devices changed meanwhile.
        ++reloads;
        std::vector<DeviceAccess> all;
        std::vector<GroupAccess> groups;
        snapshot->for_each_device([&](const SnapshotDevice& d) {
          all.push_back(w.pick(4) == 0 ? w.device(std::string(d.id())) : d.to_access());
        });
        snapshot->for_each_group([&](const GroupAccess& g) { groups.push_back(g); });
        next = Snapshot::build(std::move(all), std::move(groups), ++w.seq);
      } else if (kind == 1) {
        next = snapshot->with_claims({});
      } else {
        std::vector<DeviceAccess> changed;
        std::vector<std::string> removed;
        std::vector<GroupAccess> groups;
        const int n = 1 + w.pick(3);
        for (int i = 0; i < n; ++i) {
          const std::string& id = w.pick(w.ids);
          switch (w.pick(5)) {
            case 0:
              removed.push_back(id);
              break;
            case 1:  // removed and added again, in one swap
              removed.push_back(id);
              changed.push_back(w.device(id));
              break;
            case 2:
              groups.push_back(w.group(w.pick(group_names)));
              break;
            case 3:
              groups.push_back(w.group("default"));
              break;
            default:
              changed.push_back(w.device(id));
          }
        }
        next = snapshot->with_changes(std::move(changed), removed, std::move(groups), ++w.seq);
      }
      // Sometimes the watcher made another snapshot on top before the broker took this one
      // (Handover::post replaces the one pending): the broker never puts the middle one in force.
      if (w.pick(4) == 0) {
        ++skipped;
        next = next->with_changes({w.device(w.pick(w.ids))}, {}, {}, ++w.seq);
      }
      swaps.put(snapshot.get(), *next);
      // The replaced snapshot sometimes freed at once, sometimes a few swaps later.
      if (w.pick(2) == 0) {
        retired.push_back(std::move(snapshot));
        if (retired.size() > 3) retired.pop_front();
      } else if (w.pick(4) == 0) {
        retired.clear();
      }
      snapshot = std::move(next);
    } else if (op < 12) {
      const std::string& device = w.pick(w.ids);
      slots[s] = Slot{w.pick(4) == 0 ? w.pick(w.ids) : device, device};
      clients.accept_device(client, slots[s].client_id, device);
    } else if (op < 15) {
      clients.disconnected(client, slots[s].client_id.c_str(), w.pick(2) == 0, w.pick(2) == 0);
      if (w.pick(3) == 0) clients.sweep();
    } else if (op < 16) {
      clients.forget(client);
    } else {
      result.check_client(w, clients, client, slots[s].client_id, slots[s].username, *snapshot,
                          swaps.changes);
    }
  }
  INFO(result.compared << " compared, " << result.allowed << " allowed, " << result.denied
                       << " denied, " << swapped << " swaps, " << reloads << " reloads, " << skipped
                       << " snapshots skipped");
  for (const auto& e : result.examples) UNSCOPED_INFO(e);
  CHECK(result.mismatches == 0);
  CHECK(result.allowed > 500);
  CHECK(result.denied > 500);
  CHECK(swapped > 1000);
  CHECK(reloads > 100);
  CHECK(skipped > 100);
}

TEST_CASE("the first check after a change is decided by the new snapshot") {
  auto rule = [](std::int64_t id, const char* pattern, acl::Effect effect) {
    return acl::Rule{id, pattern, acl::kReadWrite, effect, 0};
  };
  DeviceAccess dev{
      "dev1", DeviceStatus::active, "ta", {rule(1, "devices/%d/#", acl::Effect::allow)}, {}};
  auto first = Snapshot::build({dev}, {GroupAccess{"ta", {}}}, 1);
  ClientRules rules;
  const std::string client_id = "dev1";
  Swaps swaps;
  swaps.put(nullptr, *first);
  auto ask = [&](const Snapshot& snapshot, const char* topic) {
    return decide(rules, snapshot, swaps.changes, "dev1", client_id, acl::kPublish, topic).decision;
  };
  REQUIRE(ask(*first, "devices/dev1/t") == acl::Decision::allow);
  REQUIRE(ask(*first, "devices/dev1/t") == acl::Decision::allow);  // kept answer
  REQUIRE(ask(*first, "devices/dev2/t") == acl::Decision::no_match);

  SECTION("disabled") {
    DeviceAccess disabled = dev;
    disabled.status = DeviceStatus::disabled;
    auto next = first->with_changes({disabled}, {}, {}, 2);
    swaps.put(first.get(), *next);
    CHECK(ask(*next, "devices/dev1/t") == acl::Decision::deny);
    // Enabled again: allowed again (the deny was the snapshot's, not a stuck answer).
    auto again = next->with_changes({dev}, {}, {}, 3);
    swaps.put(next.get(), *again);
    CHECK(ask(*again, "devices/dev1/t") == acl::Decision::allow);
  }
  SECTION("removed from the registry") {
    const std::vector<std::string> removed{"dev1"};
    auto next = first->with_changes({}, removed, {}, 2);
    swaps.put(first.get(), *next);
    CHECK(ask(*next, "devices/dev1/t") == acl::Decision::deny);
  }
  SECTION("a group deny rule added") {
    auto next = first->with_changes(
        {}, {}, {GroupAccess{"ta", {rule(2, "devices/+/t", acl::Effect::deny)}}}, 2);
    swaps.put(first.get(), *next);
    CHECK(ask(*next, "devices/dev1/t") == acl::Decision::deny);
    CHECK(ask(*next, "devices/dev1/u") == acl::Decision::allow);
  }
  SECTION("its own rule removed, another granted") {
    DeviceAccess changed = dev;
    changed.rules = {rule(3, "devices/%d/u", acl::Effect::allow)};
    auto next = first->with_changes({changed}, {}, {}, 2);
    swaps.put(first.get(), *next);
    CHECK(ask(*next, "devices/dev1/t") == acl::Decision::no_match);
    CHECK(ask(*next, "devices/dev1/u") == acl::Decision::allow);
  }
  SECTION("moved to a type whose group denies") {
    DeviceAccess moved = dev;
    moved.type = "tb";
    auto next = first->with_changes(
        {moved}, {}, {GroupAccess{"tb", {rule(4, "devices/#", acl::Effect::deny)}}}, 2);
    swaps.put(first.get(), *next);
    CHECK(ask(*next, "devices/dev1/t") == acl::Decision::deny);
  }
  SECTION("a full reload with the device disabled") {
    DeviceAccess disabled = dev;
    disabled.status = DeviceStatus::disabled;
    auto reloaded = Snapshot::build({disabled}, {GroupAccess{"ta", {}}}, 2);
    swaps.put(first.get(), *reloaded);
    CHECK(ask(*reloaded, "devices/dev1/t") == acl::Decision::deny);
  }
}

TEST_CASE(
    "through the plugin's own swaps a binding stays current only while nothing of it changed") {
  auto rule = [](std::int64_t id, const char* pattern) {
    return acl::Rule{id, pattern, acl::kReadWrite, acl::Effect::allow, 0};
  };
  DeviceAccess dev1{"dev1", DeviceStatus::active, "ta", {rule(1, "devices/%d/#")}, {}};
  DeviceAccess dev2{"dev2", DeviceStatus::active, "ta", {rule(2, "devices/%d/#")}, {}};
  REQUIRE(Snapshot::device_shard("dev1") != Snapshot::device_shard("dev2"));
  onboard::plugin::Handover handover;
  BrokerSnapshot broker;
  ClientRules rules;
  const std::string client_id = "dev1";
  auto ask = [&] {
    return broker.decide(rules, "dev1", client_id, acl::kPublish, "devices/dev1/t").decision;
  };
  auto first = Snapshot::build({dev1, dev2}, {GroupAccess{"ta", {}}}, 1);
  broker.replace(first, handover);
  REQUIRE(ask() == acl::Decision::allow);
  REQUIRE(rules.current(broker.changes()));

  // Another device changed: still current, with nothing done.
  DeviceAccess other = dev2;
  other.status = DeviceStatus::disabled;
  broker.replace(first->with_changes({other}, {}, {}, 2), handover);
  CHECK(rules.current(broker.changes()));
  CHECK(ask() == acl::Decision::allow);

  // No snapshot in force: denied, and the binding is no longer current.
  broker.replace(nullptr, handover);
  CHECK(ask() == acl::Decision::deny);
  CHECK_FALSE(rules.current(broker.changes()));

  // A snapshot read anew with the device disabled: the binding made before is not taken for one
  // of it (the generations go on counting), and the new record decides.
  DeviceAccess disabled = dev1;
  disabled.status = DeviceStatus::disabled;
  auto reread = Snapshot::build({disabled, other}, {GroupAccess{"ta", {}}}, 3);
  broker.replace(reread, handover);
  CHECK(ask() == acl::Decision::deny);
  // Positive control: enabled again, allowed again.
  broker.replace(reread->with_changes({dev1}, {}, {}, 4), handover);
  CHECK(ask() == acl::Decision::allow);
  handover.release_retired();
}

TEST_CASE("a swap records which device shards and whether the groups changed") {
  auto rule = [](std::int64_t id, const char* pattern) {
    return acl::Rule{id, pattern, acl::kReadWrite, acl::Effect::allow, 0};
  };
  DeviceAccess dev1{"dev1", DeviceStatus::active, "ta", {rule(1, "devices/%d/#")}, {}};
  DeviceAccess dev2{"dev2", DeviceStatus::active, "ta", {rule(2, "devices/%d/#")}, {}};
  const std::size_t shard1 = Snapshot::device_shard("dev1"),
                    shard2 = Snapshot::device_shard("dev2");
  REQUIRE(shard1 != shard2);
  auto first = Snapshot::build({dev1, dev2}, {GroupAccess{"ta", {}}}, 1);

  SnapshotChanges changes;
  // Nothing recorded: 0, which no binding is current with.
  CHECK(changes.last_change(shard1) == 0);
  // The first snapshot changes everything.
  changes.record(nullptr, *first, 5);
  CHECK(changes.last_change(shard1) == 5);
  CHECK(changes.last_change(shard2) == 5);

  DeviceAccess disabled = dev2;
  disabled.status = DeviceStatus::disabled;
  auto second = first->with_changes({disabled}, {}, {}, 2);
  changes.record(first.get(), *second, 6);
  CHECK(changes.last_change(shard1) == 5);  // dev1's shard is the same one
  CHECK(changes.last_change(shard2) == 6);

  // A claims-only swap shares every shard and the groups.
  auto third = second->with_claims({});
  changes.record(second.get(), *third, 7);
  CHECK(changes.last_change(shard1) == 5);
  CHECK(changes.last_change(shard2) == 6);

  // A group changed: every shard counts as changed.
  auto fourth = third->with_changes({}, {}, {GroupAccess{"ta", {rule(3, "x/#")}}}, 3);
  changes.record(third.get(), *fourth, 8);
  CHECK(changes.last_change(shard1) == 8);
  CHECK(changes.last_change((shard1 + 1) % Snapshot::kShards) == 8);

  // A full reload: every shard new, even with the same data and the same groups' rules.
  auto reloaded = Snapshot::build({dev1, disabled}, {GroupAccess{"ta", {rule(3, "x/#")}}}, 4);
  changes.record(fourth.get(), *reloaded, 9);
  CHECK(changes.last_change(shard1) == 9);
  CHECK(changes.last_change(shard2) == 9);
}

TEST_CASE("a binding stays current through swaps that changed neither its shard nor the groups") {
  auto rule = [](std::int64_t id, const char* pattern, acl::Effect effect) {
    return acl::Rule{id, pattern, acl::kReadWrite, effect, 0};
  };
  DeviceAccess dev1{
      "dev1", DeviceStatus::active, "ta", {rule(1, "devices/%d/#", acl::Effect::allow)}, {}};
  DeviceAccess dev2{
      "dev2", DeviceStatus::active, "ta", {rule(2, "devices/%d/#", acl::Effect::allow)}, {}};
  auto first = Snapshot::build({dev1, dev2}, {GroupAccess{"ta", {}}}, 1);
  ClientRules rules;
  const std::string client_id = "dev1";
  Swaps swaps;
  swaps.put(nullptr, *first);
  auto ask = [&](const Snapshot& snapshot, const char* topic) {
    return decide(rules, snapshot, swaps.changes, "dev1", client_id, acl::kPublish, topic);
  };
  REQUIRE(ask(*first, "devices/dev1/t").decision == acl::Decision::allow);
  REQUIRE(rules.current(swaps.changes));
  REQUIRE(rules.kept(acl::kPublish, "devices/dev1/t") != nullptr);

  SECTION("another device changed, three times: still current, the kept answer still given") {
    const std::size_t shard1 = Snapshot::device_shard("dev1"),
                      shard2 = Snapshot::device_shard("dev2");
    REQUIRE(shard1 != shard2);
    std::shared_ptr<const Snapshot> snapshot = first;
    for (int i = 0; i < 3; ++i) {
      DeviceAccess changed = dev2;
      changed.status = i % 2 == 0 ? DeviceStatus::disabled : DeviceStatus::active;
      auto next = snapshot->with_changes({changed}, {}, {}, 2 + i);
      CHECK(next->shares_device_shard(*snapshot, shard1));
      CHECK_FALSE(next->shares_device_shard(*snapshot, shard2));
      swaps.put(snapshot.get(), *next);
      snapshot = std::move(next);
    }
    first.reset();  // the binding holds what it needs of the replaced snapshots
    CHECK(rules.current(swaps.changes));
    const acl::Evaluation* kept = rules.kept(acl::kPublish, "devices/dev1/t");
    REQUIRE(kept != nullptr);
    REQUIRE(kept->rule != nullptr);
    CHECK(kept->rule->id == 1);
    CHECK(ask(*snapshot, "devices/dev1/u").decision == acl::Decision::allow);
    CHECK(ask(*snapshot, "devices/dev2/t").decision == acl::Decision::no_match);
  }
  SECTION("another device of the same shard changed: bound again, same record, answers kept") {
    std::string neighbour;
    for (int i = 0; neighbour.empty(); ++i) {
      const std::string id = "n" + std::to_string(i);
      if (Snapshot::device_shard(id) == Snapshot::device_shard("dev1")) neighbour = id;
    }
    DeviceAccess added{
        neighbour, DeviceStatus::active, "ta", {rule(9, "devices/%d/#", acl::Effect::deny)}, {}};
    auto next = first->with_changes({added}, {}, {}, 2);
    CHECK_FALSE(next->shares_device_shard(*first, Snapshot::device_shard("dev1")));
    CHECK(next->find_device("dev1") == first->find_device("dev1"));
    swaps.put(first.get(), *next);
    first.reset();
    CHECK_FALSE(rules.current(swaps.changes));
    rules.bind(*next, swaps.changes, "dev1", client_id);
    CHECK(rules.current(swaps.changes));
    REQUIRE(rules.kept(acl::kPublish, "devices/dev1/t") != nullptr);
    CHECK(ask(*next, "devices/dev1/u").decision == acl::Decision::allow);
  }
  SECTION("a group changed: bound again, nothing kept, the new group rule applies") {
    auto next = first->with_changes(
        {}, {}, {GroupAccess{"ta", {rule(3, "devices/+/t", acl::Effect::deny)}}}, 2);
    CHECK(next->groups_serial() != first->groups_serial());
    swaps.put(first.get(), *next);
    first.reset();
    CHECK_FALSE(rules.current(swaps.changes));
    rules.bind(*next, swaps.changes, "dev1", client_id);
    CHECK(rules.kept(acl::kPublish, "devices/dev1/t") == nullptr);
    CHECK(ask(*next, "devices/dev1/t").decision == acl::Decision::deny);
  }
  SECTION("its own device changed, the old snapshot freed: bound again to the new record") {
    DeviceAccess changed = dev1;
    changed.rules = {rule(4, "devices/%d/u", acl::Effect::allow)};
    auto next = first->with_changes({changed}, {}, {}, 2);
    swaps.put(first.get(), *next);
    first.reset();
    // And changed once more, in a snapshot derived after the first one was freed.
    changed.rules = {rule(5, "devices/%d/v", acl::Effect::allow)};
    auto later = next->with_changes({changed}, {}, {}, 3);
    swaps.put(next.get(), *later);
    next.reset();
    CHECK_FALSE(rules.current(swaps.changes));
    CHECK(ask(*later, "devices/dev1/t").decision == acl::Decision::no_match);
    const auto v = ask(*later, "devices/dev1/v");
    CHECK(v.decision == acl::Decision::allow);
    REQUIRE(v.rule != nullptr);
    CHECK(v.rule->id == 5);
  }
  SECTION("a client id longer than MQTT allows: denied everything, then bound again") {
    const std::string long_id(70000, 'c');
    rules.bind(*first, swaps.changes, "dev1", long_id);
    CHECK(rules.check(acl::kPublish, "devices/dev1/t").decision == acl::Decision::deny);
    // Positive control: the same device with its own client id is allowed again.
    rules.bind(*first, swaps.changes, "dev1", client_id);
    CHECK(rules.check(acl::kPublish, "devices/dev1/t").decision == acl::Decision::allow);
  }
  SECTION("another client id: bound again") {
    const std::string other_client = "dev1-b";
    rules.bind(*first, swaps.changes, "dev1", other_client);
    CHECK(rules.kept(acl::kPublish, "devices/dev1/t") == nullptr);
  }
}

TEST_CASE("a record made where the bound one was freed is never taken for the bound one") {
  // The binding holds its device's record, so that no later record can be made at its address:
  // a rebind that finds the same address would keep the old rules and answers. Here every later
  // record is one of the same size (a like for the allocator to put where the bound one was),
  // and the snapshots it was in are freed; a disabled device must be denied.
  DeviceAccess dev{"dev1",
                   DeviceStatus::active,
                   "ta",
                   {acl::Rule{1, "devices/%d/#", acl::kReadWrite, acl::Effect::allow, 0}},
                   {}};
  auto snapshot = Snapshot::build({dev}, {GroupAccess{"ta", {}}}, 1);
  Swaps swaps;
  swaps.put(nullptr, *snapshot);
  ClientRules rules;
  const std::string client_id = "dev1";
  auto ask = [&] {
    return decide(rules, *snapshot, swaps.changes, "dev1", client_id, acl::kPublish,
                  "devices/dev1/t")
        .decision;
  };
  REQUIRE(ask() == acl::Decision::allow);  // positive control: bound, and allowed
  REQUIRE(snapshot->find_device("dev1") != nullptr);
  // Kept as a number: were the record freed, its pointer would be no value to compare.
  const auto bound = reinterpret_cast<std::uintptr_t>(snapshot->find_device("dev1"));

  DeviceAccess disabled = dev;
  disabled.status = DeviceStatus::disabled;  // the same record size; every later version denies
  int swapped = 0;
  bool reused = false;
  // Swapped again and again without asking in between, so that only the held record stands
  // between the binding and an address the allocator hands out again.
  while (swapped < 1000 && !reused) {
    auto next = snapshot->with_changes({disabled}, {}, {}, 2 + swapped);
    swaps.put(snapshot.get(), *next);
    snapshot = std::move(next);  // the older one freed
    ++swapped;
    reused = reinterpret_cast<std::uintptr_t>(snapshot->find_device("dev1")) == bound;
  }
  INFO(swapped << " swaps");
  CHECK_FALSE(reused);  // held: its address cannot come back while bound
  CHECK(snapshot->find_device("dev1")->status() == DeviceStatus::disabled);
  CHECK(ask() == acl::Decision::deny);
}

TEST_CASE("a kept answer is given only for the same access and topic of the same binding") {
  DeviceAccess dev{"dev1",
                   DeviceStatus::active,
                   "",
                   {acl::Rule{1, "devices/%d/#", acl::kReadWrite, acl::Effect::allow, 0}},
                   {}};
  auto first = Snapshot::build({dev}, {}, 1);
  Swaps swaps;
  swaps.put(nullptr, *first);
  ClientRules rules;
  const std::string client_id = "dev1";
  rules.bind(*first, swaps.changes, "dev1", client_id);
  CHECK(rules.kept(acl::kPublish, "devices/dev1/t") == nullptr);  // nothing asked yet
  REQUIRE(rules.check(acl::kPublish, "devices/dev1/t").decision == acl::Decision::allow);

  // Positive control: the same access and topic is answered from what was kept.
  const acl::Evaluation* kept = rules.kept(acl::kPublish, "devices/dev1/t");
  REQUIRE(kept != nullptr);
  CHECK(kept->decision == acl::Decision::allow);
  REQUIRE(kept->rule != nullptr);
  CHECK(kept->rule->id == 1);

  CHECK(rules.kept(acl::kRead, "devices/dev1/t") == nullptr);      // another access
  CHECK(rules.kept(acl::kPublish, "devices/dev1/tt") == nullptr);  // a longer topic
  CHECK(rules.kept(acl::kPublish, "devices/dev1/") == nullptr);    // a prefix of it
  CHECK(rules.kept(acl::kPublish, "devices/dev2/t") == nullptr);
  CHECK(rules.kept(static_cast<acl::Access>(0), "devices/dev1/t") == nullptr);
  CHECK(rules.kept(static_cast<acl::Access>(acl::kPublish | acl::kRead), "devices/dev1/t") ==
        nullptr);

  SECTION("another topic asked replaces the kept one") {
    CHECK(rules.check(acl::kPublish, "devices/dev2/t").decision == acl::Decision::no_match);
    CHECK(rules.kept(acl::kPublish, "devices/dev1/t") == nullptr);
    REQUIRE(rules.kept(acl::kPublish, "devices/dev2/t") != nullptr);
    CHECK(rules.kept(acl::kPublish, "devices/dev2/t")->decision == acl::Decision::no_match);
  }
  SECTION("a topic with a NUL in it is answered but not kept") {
    const std::string with_nul("devices/dev1/t\0x", 16);
    CHECK(rules.check(acl::kPublish, with_nul).decision ==
          first->check_access("dev1", client_id, acl::kPublish, with_nul).decision);
    // Not mistaken for the C string it starts with, and the earlier answer is still kept.
    REQUIRE(rules.kept(acl::kPublish, "devices/dev1/t") != nullptr);
    CHECK(rules.kept(acl::kPublish, "devices/dev1/t")->decision == acl::Decision::allow);
  }
  SECTION("bound again (a new snapshot): nothing kept until asked again") {
    DeviceAccess revoked = dev;
    revoked.status = DeviceStatus::revoked;
    auto next = first->with_changes({revoked}, {}, {}, 2);
    swaps.put(first.get(), *next);
    CHECK_FALSE(rules.current(swaps.changes));
    // Through decide(), as the plugin asks: bound again and denied at once.
    CHECK(decide(rules, *next, swaps.changes, "dev1", client_id, acl::kPublish, "devices/dev1/t")
              .decision == acl::Decision::deny);
    CHECK(rules.current(swaps.changes));
    CHECK(rules.kept(acl::kPublish, "devices/dev1/t") == nullptr);  // deny-all keeps nothing
  }
}

TEST_CASE("a bound client holds a few hundred bytes") {
  DeviceAccess dev{"bench-0001",
                   DeviceStatus::active,
                   "sensor",
                   {acl::Rule{1, "devices/%d/#", acl::kReadWrite, acl::Effect::allow, 0}},
                   {}};
  auto snapshot = Snapshot::build(
      {dev},
      {GroupAccess{"sensor", {acl::Rule{2, "fleet/+/status", acl::kRead, acl::Effect::allow, 0}}},
       GroupAccess{"default", {acl::Rule{3, "$SYS/#", acl::kReadWrite, acl::Effect::deny, 0}}}},
      1);
  Swaps swaps;
  swaps.put(nullptr, *snapshot);
  ClientRules rules;
  const std::string client_id = "bench-0001";
  REQUIRE(decide(rules, *snapshot, swaps.changes, "bench-0001", client_id, acl::kPublish,
                 "devices/bench-0001/load")
              .decision == acl::Decision::allow);
  // The object, its compiled pattern and the kept topic; AcceptedClients' entry adds its two ids.
  CHECK(sizeof(ClientRules) + rules.heap_bytes() < 400);
}
