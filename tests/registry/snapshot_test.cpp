#include "registry/snapshot.h"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Transaction.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "registry/snapshot_loader.h"
#include "registry/sqlite_store.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::TempDir;

namespace {

constexpr UnixTime kNow = 1'700'000'000;
constexpr UnixTime kDay = 86'400;

std::string fingerprint(int n) {
  char buffer[65];
  std::snprintf(buffer, sizeof buffer, "%064x", n);
  return buffer;
}

CertificateAccess cert(int n, CertificateStatus status = CertificateStatus::active,
                       UnixTime not_before = kNow - kDay, UnixTime not_after = kNow + 365 * kDay) {
  return CertificateAccess{fingerprint(n), "SERIAL" + std::to_string(n), status, not_before,
                           not_after};
}

acl::Rule allow(std::int64_t id, std::string pattern, std::uint8_t access, int priority = 0) {
  return acl::Rule{id, std::move(pattern), access, acl::Effect::allow, priority};
}
acl::Rule deny(std::int64_t id, std::string pattern, std::uint8_t access, int priority = 0) {
  return acl::Rule{id, std::move(pattern), access, acl::Effect::deny, priority};
}

DeviceAccess device(std::string id, std::vector<CertificateAccess> certs,
                    DeviceStatus status = DeviceStatus::active, std::string type = "",
                    std::vector<acl::Rule> rules = {}) {
  return DeviceAccess{std::move(id), status, std::move(type), std::move(rules), std::move(certs)};
}

GroupAccess default_group() { return GroupAccess{"default", {allow(1, "devices/%d/#", 7)}}; }

// A small fleet, one device per row of the connect decision table.
std::shared_ptr<const Snapshot> fleet() {
  std::vector<DeviceAccess> devices;
  devices.push_back(device("dev1", {cert(1)}));
  devices.push_back(device("renewed", {cert(2, CertificateStatus::revoked), cert(3)}));
  devices.push_back(device("future", {cert(4, CertificateStatus::active, kNow + kDay)}));
  devices.push_back(device("old", {cert(5, CertificateStatus::active, kNow - 2 * kDay, kNow - 1)}));
  devices.push_back(device("off", {cert(6)}, DeviceStatus::disabled));
  // A revoked device's certificates are revoked too; cert 8 stays active to reach its own row.
  devices.push_back(
      device("gone", {cert(7, CertificateStatus::revoked), cert(8)}, DeviceStatus::revoked));
  return Snapshot::build(std::move(devices), {default_group()}, 42);
}

ConnectReason verdict(const Snapshot& snapshot, int cert_n, std::string_view cn,
                      std::string_view client_id, bool stale = false) {
  const std::string fp = cert_n == 0 ? std::string() : fingerprint(cert_n);
  return snapshot.connect_verdict({fp, cn, client_id}, kNow, stale).reason;
}

// allow or deny; no_match is deny (no rule matching is deny, as the plugin maps it).
acl::Decision decide(const Snapshot& snapshot, std::string_view username, acl::Access access,
                     std::string_view topic) {
  const auto decision = snapshot.check_access(username, username, access, topic).decision;
  return decision == acl::Decision::allow ? acl::Decision::allow : acl::Decision::deny;
}

constexpr auto kAllow = acl::Decision::allow;
constexpr auto kDeny = acl::Decision::deny;

}  // namespace

// --- connect verdict ---------------------------------------------------------------------------

TEST_CASE("connect: a stale registry refuses before anything else is looked at") {
  auto snapshot = fleet();
  CHECK(verdict(*snapshot, 1, "dev1", "dev1", true) == ConnectReason::registry_stale);
  CHECK(verdict(*snapshot, 0, "", "", true) == ConnectReason::registry_stale);
  CHECK(verdict(*snapshot, 99, "x", "y", true) == ConnectReason::registry_stale);
}

TEST_CASE("connect: no certificate is refused as such, whatever the names") {
  CHECK(verdict(*fleet(), 0, "dev1", "dev1") == ConnectReason::no_certificate);
}

TEST_CASE("connect: a certificate the registry does not know is refused, with no device named") {
  auto snapshot = fleet();
  auto v = snapshot->connect_verdict({fingerprint(99), "dev1", "dev1"}, kNow, false);
  CHECK(v.reason == ConnectReason::unknown_certificate);
  CHECK(v.device_id.empty());
}

TEST_CASE("connect: a revoked certificate is refused even though its device is active") {
  auto snapshot = fleet();
  auto v = snapshot->connect_verdict({fingerprint(2), "renewed", "renewed"}, kNow, false);
  CHECK(v.reason == ConnectReason::certificate_revoked);
  CHECK(v.device_id == "renewed");
}

TEST_CASE("connect: the same device's other, active certificate is accepted") {
  CHECK(verdict(*fleet(), 3, "renewed", "renewed") == ConnectReason::accepted);
}

TEST_CASE("connect: a revoked certificate beats its validity period, CN and client id") {
  auto snapshot = fleet();
  CHECK(snapshot->connect_verdict({fingerprint(2), "other", "other"}, kNow + 1000 * kDay, false)
            .reason == ConnectReason::certificate_revoked);
}

TEST_CASE("connect: a certificate before its not_before is refused as not yet valid") {
  auto snapshot = fleet();
  CHECK(verdict(*snapshot, 4, "future", "future") == ConnectReason::certificate_not_yet_valid);
  CHECK(
      snapshot->connect_verdict({fingerprint(4), "future", "future"}, kNow + kDay, false).reason ==
      ConnectReason::accepted);  // not_before itself is valid
}

TEST_CASE("connect: a certificate after its not_after is refused as expired") {
  auto snapshot = fleet();
  CHECK(verdict(*snapshot, 5, "old", "old") == ConnectReason::certificate_expired);
  CHECK(snapshot->connect_verdict({fingerprint(5), "old", "old"}, kNow - 1, false).reason ==
        ConnectReason::accepted);  // not_after itself is valid
}

TEST_CASE("connect: validity is checked before the CN") {
  CHECK(verdict(*fleet(), 5, "someone-else", "someone-else") == ConnectReason::certificate_expired);
}

TEST_CASE("connect: a CN that is not the certificate's registered device is refused") {
  auto snapshot = fleet();
  auto v = snapshot->connect_verdict({fingerprint(1), "dev2", "dev1"}, kNow, false);
  CHECK(v.reason == ConnectReason::common_name_mismatch);
  CHECK(v.device_id == "dev1");
}

TEST_CASE("connect: the CN is checked before the device's status") {
  CHECK(verdict(*fleet(), 6, "dev1", "off") == ConnectReason::common_name_mismatch);
}

TEST_CASE("connect: a disabled device is refused with a valid certificate") {
  CHECK(verdict(*fleet(), 6, "off", "off") == ConnectReason::device_disabled);
}

TEST_CASE("connect: a revoked device is refused even with a certificate still marked active") {
  CHECK(verdict(*fleet(), 8, "gone", "gone") == ConnectReason::device_revoked);
  CHECK(verdict(*fleet(), 7, "gone", "gone") == ConnectReason::certificate_revoked);
}

TEST_CASE("connect: the device's status is checked before the client id") {
  CHECK(verdict(*fleet(), 6, "off", "not-off") == ConnectReason::device_disabled);
}

TEST_CASE("connect: a client id that is not the device id is refused") {
  CHECK(verdict(*fleet(), 1, "dev1", "dev1-x") == ConnectReason::client_id_mismatch);
  CHECK(verdict(*fleet(), 1, "dev1", "") == ConnectReason::client_id_mismatch);
}

TEST_CASE("connect: everything in order is accepted and names the device") {
  auto snapshot = fleet();
  auto v = snapshot->connect_verdict({fingerprint(1), "dev1", "dev1"}, kNow, false);
  CHECK(v.accepted());
  CHECK(v.device_id == "dev1");
}

TEST_CASE("connect: every reason has its own text") {
  std::vector<std::string_view> texts;
  for (auto reason :
       {ConnectReason::accepted, ConnectReason::registry_stale, ConnectReason::no_certificate,
        ConnectReason::unknown_certificate, ConnectReason::certificate_revoked,
        ConnectReason::certificate_not_yet_valid, ConnectReason::certificate_expired,
        ConnectReason::common_name_mismatch, ConnectReason::device_disabled,
        ConnectReason::device_revoked, ConnectReason::client_id_mismatch}) {
    texts.push_back(to_string(reason));
  }
  std::sort(texts.begin(), texts.end());
  CHECK(std::adjacent_find(texts.begin(), texts.end()) == texts.end());
}

// --- topic decisions ---------------------------------------------------------------------------

namespace {

std::shared_ptr<const Snapshot> acl_fleet() {
  std::vector<DeviceAccess> devices;
  devices.push_back(device("s1", {cert(1)}, DeviceStatus::active, "sensor",
                           {allow(10, "fleet/config/s1", acl::kRead | acl::kSubscribe),
                            deny(11, "devices/s1/secret/#", acl::kReadWrite)}));
  devices.push_back(device("s2", {cert(2)}, DeviceStatus::active, "sensor"));
  devices.push_back(device("plain", {cert(3)}));
  devices.push_back(device("typed-no-group", {cert(4)}, DeviceStatus::active, "nogroup"));
  devices.push_back(device("off", {cert(5)}, DeviceStatus::disabled, "sensor",
                           {allow(12, "#", acl::kReadWrite)}));
  devices.push_back(device("gone", {cert(6, CertificateStatus::revoked)}, DeviceStatus::revoked,
                           "sensor", {allow(13, "#", acl::kReadWrite)}));
  std::vector<GroupAccess> groups;
  groups.push_back(default_group());
  groups.push_back(GroupAccess{"sensor",
                               {allow(20, "telemetry/%d", acl::kPublish),
                                allow(21, "fleet/broadcast", acl::kRead | acl::kSubscribe)}});
  return Snapshot::build(std::move(devices), std::move(groups), 7);
}

}  // namespace

TEST_CASE("access: a device's own rules allow and deny") {
  auto snapshot = acl_fleet();
  CHECK(decide(*snapshot, "s1", acl::kSubscribe, "fleet/config/s1") == kAllow);
  CHECK(decide(*snapshot, "s1", acl::kPublish, "fleet/config/s1") == kDeny);  // read only
  CHECK(decide(*snapshot, "s2", acl::kSubscribe, "fleet/config/s1") == kDeny);
  // Its own deny beats the default group's allow on its subtree.
  CHECK(decide(*snapshot, "s1", acl::kPublish, "devices/s1/secret/key") == kDeny);
  auto e = snapshot->check_access("s1", "s1", acl::kPublish, "devices/s1/secret/key");
  REQUIRE(e.rule != nullptr);
  CHECK(e.rule->id == 11);
}

TEST_CASE("access: the type group's rules apply to every device of that type") {
  auto snapshot = acl_fleet();
  CHECK(decide(*snapshot, "s1", acl::kPublish, "telemetry/s1") == kAllow);
  CHECK(decide(*snapshot, "s2", acl::kPublish, "telemetry/s2") == kAllow);
  CHECK(decide(*snapshot, "s2", acl::kRead, "fleet/broadcast") == kAllow);
  CHECK(decide(*snapshot, "plain", acl::kPublish, "telemetry/plain") == kDeny);  // no type
  CHECK(decide(*snapshot, "typed-no-group", acl::kPublish, "telemetry/typed-no-group") == kDeny);
}

TEST_CASE("access: the default group's rules apply to every device, with own and type rules") {
  auto snapshot = acl_fleet();
  for (const char* id : {"s1", "s2", "plain", "typed-no-group"}) {
    INFO(id);
    CHECK(decide(*snapshot, id, acl::kPublish, std::string("devices/") + id + "/up") == kAllow);
    CHECK(decide(*snapshot, id, acl::kSubscribe, std::string("devices/") + id + "/up/+") == kAllow);
  }
  // A filter that would also deliver s1's own denied subtree is refused as a whole.
  CHECK(decide(*snapshot, "s1", acl::kSubscribe, "devices/s1/#") == kDeny);
  CHECK(decide(*snapshot, "s2", acl::kSubscribe, "devices/s2/#") == kAllow);
  // All three sets at once for s1: own (fleet/config), type (telemetry), default (devices/s1).
  CHECK(decide(*snapshot, "s1", acl::kRead, "fleet/config/s1") == kAllow);
  CHECK(decide(*snapshot, "s1", acl::kPublish, "telemetry/s1") == kAllow);
  CHECK(decide(*snapshot, "s1", acl::kRead, "devices/s1/cmd") == kAllow);
  CHECK(decide(*snapshot, "s1", acl::kPublish, "elsewhere") == kDeny);
}

TEST_CASE("access: %d is the username's device, never another device's subtree") {
  auto snapshot = acl_fleet();
  CHECK(decide(*snapshot, "s2", acl::kPublish, "devices/s2/x") == kAllow);
  CHECK(decide(*snapshot, "s2", acl::kPublish, "devices/s1/x") == kDeny);
  CHECK(decide(*snapshot, "s2", acl::kPublish, "telemetry/s1") == kDeny);
  CHECK(decide(*snapshot, "s2", acl::kSubscribe, "devices/+/x") == kDeny);
}

TEST_CASE("access: a disabled, revoked or unknown device is denied everything") {
  auto snapshot = acl_fleet();
  for (const char* id : {"off", "gone", "nobody", ""}) {
    INFO(id);
    for (auto access : {acl::kPublish, acl::kSubscribe, acl::kRead}) {
      auto e = snapshot->check_access(id, id, access, std::string("devices/") + id + "/x");
      CHECK(e.decision == kDeny);
      CHECK(e.rule == nullptr);
    }
    CHECK(decide(*snapshot, id, acl::kPublish, "anything") == kDeny);
  }
}

TEST_CASE("access: a snapshot without a default group decides from the other rules alone") {
  auto snapshot = Snapshot::build(
      {device("d", {cert(1)}, DeviceStatus::active, "", {allow(1, "d/in", acl::kRead)})}, {}, 1);
  CHECK(decide(*snapshot, "d", acl::kRead, "d/in") == kAllow);
  CHECK(decide(*snapshot, "d", acl::kRead, "devices/d/x") == kDeny);
}

// --- building and changing -----------------------------------------------------------------------

TEST_CASE("build: counts each device once, finds devices, certificates and groups") {
  auto snapshot = fleet();
  CHECK(snapshot->device_count() == 6);
  CHECK(snapshot->change_seq() == 42);
  REQUIRE(snapshot->find_device("dev1") != nullptr);
  CHECK(snapshot->find_device("dev1")->certificates().size() == 1);
  CHECK(snapshot->find_device("nobody") == nullptr);
  auto owner = snapshot->find_certificate(fingerprint(3));
  REQUIRE(owner);
  CHECK(owner->device->id() == "renewed");
  CHECK(owner->certificate->serial_hex() == "SERIAL3");
  CHECK_FALSE(snapshot->find_certificate(fingerprint(99)));
  REQUIRE(snapshot->find_group("default") != nullptr);
  CHECK(snapshot->find_group("sensor") == nullptr);
  std::size_t visited = 0;
  snapshot->for_each_device([&](const SnapshotDevice&) { ++visited; });
  CHECK(visited == 6);
}

TEST_CASE("build: a device listed twice is counted once, the last one wins") {
  auto snapshot = Snapshot::build(
      {device("d", {cert(1)}), device("d", {cert(2)}, DeviceStatus::disabled)}, {}, 1);
  CHECK(snapshot->device_count() == 1);
  CHECK(snapshot->find_device("d")->status() == DeviceStatus::disabled);
  // Only the kept device's certificates are found: none names a device the snapshot dropped.
  auto kept = snapshot->find_certificate(fingerprint(2));
  REQUIRE(kept);
  CHECK(kept->device == snapshot->find_device("d"));
  CHECK_FALSE(snapshot->find_certificate(fingerprint(1)));
}

TEST_CASE("build: every device and certificate of a large fleet is found, and nothing else") {
  // Twenty thousand devices put about five in each shard: lookups probe past other keys.
  constexpr int kDevices = 20'000;
  std::vector<DeviceAccess> devices;
  for (int i = 0; i < kDevices; ++i)
    devices.push_back(device("d" + std::to_string(i), {cert(i + 1)}));
  auto snapshot = Snapshot::build(std::move(devices), {default_group()}, 1);
  CHECK(snapshot->device_count() == kDevices);
  std::size_t missing = 0, wrong_owner = 0, found_absent = 0;
  for (int i = 0; i < kDevices; ++i) {
    const std::string id = "d" + std::to_string(i);
    const SnapshotDevice* found = snapshot->find_device(id);
    if (found == nullptr || found->id() != id) ++missing;
    auto owner = snapshot->find_certificate(fingerprint(i + 1));
    if (!owner || owner->device != found ||
        owner->certificate->sha256_fingerprint() != fingerprint(i + 1))
      ++wrong_owner;
    if (snapshot->find_device("x" + std::to_string(i)) != nullptr) ++found_absent;
    if (snapshot->find_certificate(fingerprint(kDevices + i + 1))) ++found_absent;
  }
  CHECK(missing == 0);
  CHECK(wrong_owner == 0);
  CHECK(found_absent == 0);
  std::size_t visited = 0;
  snapshot->for_each_device([&](const SnapshotDevice&) { ++visited; });
  CHECK(visited == kDevices);
}

TEST_CASE("with_changes: a changed device is replaced, the old snapshot is untouched") {
  auto before = fleet();
  auto after = before->with_changes({device("dev1", {cert(1, CertificateStatus::revoked), cert(50)},
                                            DeviceStatus::active, "sensor")},
                                    {}, {}, 43);
  CHECK(after->change_seq() == 43);
  CHECK(after->device_count() == 6);
  REQUIRE(after->find_device("dev1") != nullptr);
  CHECK(after->find_device("dev1")->type() == "sensor");
  CHECK(verdict(*after, 1, "dev1", "dev1") == ConnectReason::certificate_revoked);
  CHECK(verdict(*after, 50, "dev1", "dev1") == ConnectReason::accepted);
  // The old snapshot still says what it said.
  CHECK(before->change_seq() == 42);
  CHECK(before->device_count() == 6);
  CHECK(before->find_device("dev1")->type().empty());
  CHECK(verdict(*before, 1, "dev1", "dev1") == ConnectReason::accepted);
  CHECK(verdict(*before, 50, "dev1", "dev1") == ConnectReason::unknown_certificate);
}

TEST_CASE("with_changes: a certificate dropped from a changed device is no longer found") {
  auto before = fleet();
  auto after = before->with_changes({device("renewed", {cert(3)})}, {}, {}, 43);
  CHECK_FALSE(after->find_certificate(fingerprint(2)));
  CHECK(verdict(*after, 3, "renewed", "renewed") == ConnectReason::accepted);
  CHECK(before->find_certificate(fingerprint(2)));
}

TEST_CASE("with_changes: a removed device is gone, and its certificates with it") {
  auto before = fleet();
  const std::vector<std::string> removed{"renewed", "never-existed"};
  auto after = before->with_changes({}, removed, {}, 43);
  CHECK(after->find_device("renewed") == nullptr);
  CHECK_FALSE(after->find_certificate(fingerprint(2)));
  CHECK_FALSE(after->find_certificate(fingerprint(3)));
  CHECK(verdict(*after, 3, "renewed", "renewed") == ConnectReason::unknown_certificate);
  CHECK(decide(*after, "renewed", acl::kPublish, "devices/renewed/x") == kDeny);
  CHECK(after->device_count() == 5);  // the unknown id changes nothing
  CHECK(before->find_device("renewed") != nullptr);
  CHECK(before->device_count() == 6);
}

TEST_CASE("with_changes: an added device is found and counted") {
  auto before = fleet();
  auto after = before->with_changes({device("new", {cert(60)})}, {}, {}, 43);
  CHECK(after->device_count() == 7);
  CHECK(verdict(*after, 60, "new", "new") == ConnectReason::accepted);
  CHECK(before->find_device("new") == nullptr);
}

TEST_CASE("with_changes: untouched devices are still found, across many shards") {
  std::vector<DeviceAccess> devices;
  for (int i = 0; i < 2000; ++i) devices.push_back(device("d" + std::to_string(i), {cert(i + 1)}));
  auto before = Snapshot::build(std::move(devices), {default_group()}, 1);
  auto after = before->with_changes({device("d7", {cert(8)}, DeviceStatus::disabled)},
                                    std::vector<std::string>{"d8"}, {}, 2);
  CHECK(after->device_count() == 1999);
  for (int i = 0; i < 2000; ++i) {
    if (i == 7 || i == 8) continue;
    const std::string id = "d" + std::to_string(i);
    INFO(id);
    REQUIRE(after->find_device(id) != nullptr);
    CHECK(verdict(*after, i + 1, id, id) == ConnectReason::accepted);
  }
  CHECK(verdict(*after, 8, "d7", "d7") == ConnectReason::device_disabled);
  CHECK(verdict(*after, 9, "d8", "d8") == ConnectReason::unknown_certificate);
  CHECK(verdict(*before, 8, "d7", "d7") == ConnectReason::accepted);
  CHECK(verdict(*before, 9, "d8", "d8") == ConnectReason::accepted);
}

TEST_CASE("with_changes: an unchanged device keeps its address, a changed one gets a new one") {
  // Twenty thousand devices: every changed device shares its shard with about four unchanged ones.
  std::vector<DeviceAccess> devices;
  for (int i = 0; i < 20'000; ++i)
    devices.push_back(device("d" + std::to_string(i), {cert(i + 1)}));
  auto before = Snapshot::build(std::move(devices), {default_group()}, 1);
  std::vector<DeviceAccess> changed;
  for (int i = 0; i < 20'000; i += 97)
    changed.push_back(device("d" + std::to_string(i), {cert(i + 1)}));
  const std::size_t changes = changed.size();
  auto after = before->with_changes(std::move(changed), std::vector<std::string>{"d1"}, {}, 2);
  std::size_t moved = 0, kept = 0;
  for (int i = 2; i < 20'000; ++i) {
    const std::string id = "d" + std::to_string(i);
    const SnapshotDevice* was = before->find_device(id);
    const SnapshotDevice* is = after->find_device(id);
    REQUIRE(is != nullptr);
    if (i % 97 == 0) {
      if (is != was) ++moved;
    } else if (is == was) {
      ++kept;
    }
    // The certificate index names the device the snapshot holds.
    auto owner = after->find_certificate(fingerprint(i + 1));
    if (!owner || owner->device != is) FAIL("the certificate of " << id);
  }
  CHECK(kept == 20'000 - 2 - (changes - 1));
  CHECK(moved == changes - 1);  // d0 is changed too but not counted above
  CHECK(after->find_device("d0") != before->find_device("d0"));
  CHECK(after->find_device("d1") == nullptr);
  CHECK(after->device_count() == 19'999);
}

TEST_CASE("with_changes: rounds of changes agree with a build from scratch") {
  // A model of the registry (id -> certificate numbers, status) changed at random, each round
  // applied with with_changes and compared with Snapshot::build of the model.
  std::mt19937 random(15);
  std::map<std::string, std::pair<std::vector<int>, DeviceStatus>> model;
  int next_cert = 1;
  auto make = [](const std::string& id, const std::pair<std::vector<int>, DeviceStatus>& value) {
    std::vector<CertificateAccess> certs;
    for (int n : value.first) certs.push_back(cert(n));
    return device(id, std::move(certs), value.second);
  };
  for (int i = 0; i < 3000; ++i)
    model["d" + std::to_string(i)] = {{next_cert++}, DeviceStatus::active};
  std::vector<DeviceAccess> initial;
  for (const auto& [id, value] : model) initial.push_back(make(id, value));
  auto snapshot = Snapshot::build(std::move(initial), {default_group()}, 1);

  for (int round = 0; round < 10; ++round) {
    std::vector<DeviceAccess> changed;
    std::vector<std::string> removed;
    std::set<std::string> touched;
    for (int k = 0; k < 150; ++k) {
      const std::string id = "d" + std::to_string(random() % 4000);  // some are new
      if (!touched.insert(id).second) continue;
      switch (random() % 4) {
        case 0:  // removed (or never there)
          model.erase(id);
          removed.push_back(id);
          break;
        case 1:  // a new certificate beside the old ones
          model[id].first.push_back(next_cert++);
          break;
        case 2:  // renewed: the old certificates gone
          model[id].first = {next_cert++};
          break;
        default:  // disabled or enabled
          model[id].second = random() % 2 ? DeviceStatus::disabled : DeviceStatus::active;
          break;
      }
      if (model.contains(id)) changed.push_back(make(id, model[id]));
    }
    snapshot = snapshot->with_changes(std::move(changed), removed, {}, round + 2);
    std::vector<DeviceAccess> all;
    for (const auto& [id, value] : model) all.push_back(make(id, value));
    auto fresh = Snapshot::build(std::move(all), {default_group()}, round + 2);

    INFO("round " << round);
    REQUIRE(snapshot->device_count() == fresh->device_count());
    std::size_t visited = 0;
    snapshot->for_each_device([&](const SnapshotDevice&) { ++visited; });
    CHECK(visited == model.size());
    std::size_t differences = 0;
    for (int i = 0; i < 4000; ++i) {
      const std::string id = "d" + std::to_string(i);
      const SnapshotDevice* a = snapshot->find_device(id);
      const SnapshotDevice* b = fresh->find_device(id);
      if ((a == nullptr) != (b == nullptr)) ++differences;
      if (a != nullptr && b != nullptr &&
          (a->status() != b->status() || a->certificates().size() != b->certificates().size()))
        ++differences;
    }
    for (int n = 1; n < next_cert; ++n) {
      auto a = snapshot->find_certificate(fingerprint(n));
      auto b = fresh->find_certificate(fingerprint(n));
      if (a.has_value() != b.has_value()) ++differences;
      if (a && b &&
          (a->device->id() != b->device->id() ||
           a->device != snapshot->find_device(a->device->id())))
        ++differences;
    }
    CHECK(differences == 0);
  }
}

// --- the compact device records ----------------------------------------------------------------

TEST_CASE("records: a device with no rules and no certificates keeps its id, type and status") {
  auto snapshot = Snapshot::build(
      {device("bare", {}, DeviceStatus::disabled, "sensor"), device("x", {cert(1)})}, {}, 1);
  const SnapshotDevice* bare = snapshot->find_device("bare");
  REQUIRE(bare != nullptr);
  CHECK(bare->id() == "bare");
  CHECK(bare->type() == "sensor");
  CHECK(bare->status() == DeviceStatus::disabled);
  CHECK(bare->rules().empty());
  CHECK(bare->certificates().empty());
  // Its neighbour with a certificate is found by it; the bare one by none.
  REQUIRE(snapshot->find_certificate(fingerprint(1)));
  CHECK(snapshot->find_certificate(fingerprint(1))->device == snapshot->find_device("x"));
  CHECK(decide(*snapshot, "bare", acl::kRead, "devices/bare/x") == kDeny);
}

TEST_CASE("records: many rules and certificates, and texts past one length byte, round-trip") {
  // 300 certificates and 1000 rules: counts and offsets past one byte; an id of 64 characters
  // (the longest valid) and a type of 200 (a two-byte length).
  const std::string id(64, 'a');
  const std::string type(200, 't');
  std::vector<CertificateAccess> certs;
  for (int n = 1; n <= 300; ++n)
    certs.push_back(cert(n, n % 3 == 0 ? CertificateStatus::revoked : CertificateStatus::active,
                         kNow - n, kNow + n));
  std::vector<acl::Rule> rules;
  for (int i = 0; i < 1000; ++i)
    rules.push_back(allow(i + 1, "r/" + std::to_string(i) + "/%d", acl::kPublish, 1000 - i));
  DeviceAccess input = device(id, certs, DeviceStatus::active, type, rules);
  auto snapshot = Snapshot::build({input, device("other", {cert(301)})}, {}, 1);
  const SnapshotDevice* got = snapshot->find_device(id);
  REQUIRE(got != nullptr);
  const DeviceAccess back = got->to_access();
  CHECK(back.id == id);
  CHECK(back.type == type);
  REQUIRE(back.rules.size() == 1000);
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (back.rules[i].id != rules[i].id ||
        back.rules[i].pattern.text() != rules[i].pattern.text() ||
        back.rules[i].priority != rules[i].priority)
      FAIL("rule " << i);
  }
  REQUIRE(back.certificates.size() == 300);
  for (int n = 1; n <= 300; ++n) {
    const CertificateAccess& c = back.certificates[static_cast<std::size_t>(n - 1)];
    if (c.sha256_fingerprint != fingerprint(n) || c.serial_hex != "SERIAL" + std::to_string(n) ||
        c.status != certs[static_cast<std::size_t>(n - 1)].status || c.not_before != kNow - n ||
        c.not_after != kNow + n)
      FAIL("certificate " << n);
    // Each is found by its fingerprint, as the device's own record.
    auto owner = snapshot->find_certificate(fingerprint(n));
    if (!owner || owner->device != got ||
        owner->certificate != &got->certificates()[static_cast<std::size_t>(n - 1)])
      FAIL("finding certificate " << n);
  }
  CHECK(decide(*snapshot, id, acl::kPublish, "r/999/" + id) == kAllow);
  CHECK(decide(*snapshot, id, acl::kPublish, "r/1000/" + id) == kDeny);
}

TEST_CASE("records: serials come back exactly as given, packed or not") {
  const std::vector<std::string> serials{"",
                                         "0",
                                         "A",
                                         "0A1B",
                                         "ABC",
                                         "00F",
                                         "abc",
                                         "0a1B",
                                         "xyz-1",
                                         "SERIAL",
                                         std::string(40, 'F'),
                                         std::string(41, '7')};
  std::vector<CertificateAccess> certs;
  for (std::size_t i = 0; i < serials.size(); ++i) {
    certs.push_back(cert(static_cast<int>(i) + 1));
    certs.back().serial_hex = serials[i];
  }
  auto snapshot = Snapshot::build({device("d", certs)}, {}, 1);
  const auto got = snapshot->find_device("d")->certificates();
  REQUIRE(got.size() == serials.size());
  for (std::size_t i = 0; i < serials.size(); ++i) {
    INFO("serial '" << serials[i] << "'");
    CHECK(got[i].serial_hex() == serials[i]);
    CHECK(got[i].sha256_fingerprint() == fingerprint(static_cast<int>(i) + 1));
  }
}

TEST_CASE("records: a fingerprint is found only by exactly its text") {
  // Registered: a canonical fingerprint (kept as 32 bytes) and texts that are none (kept as text).
  const std::string canonical = fingerprint(0xabcdef);
  std::string upper = fingerprint(77);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  });
  upper[63] = 'D';  // at least one letter, so that it differs from its lower-case form
  const std::string short_one = "abc123";
  const std::string not_hex = std::string(63, 'a') + "g";
  auto with = [](std::string text) {
    CertificateAccess c = cert(1);
    c.sha256_fingerprint = std::move(text);
    return c;
  };
  auto snapshot =
      Snapshot::build({device("canon", {with(canonical)}), device("upper", {with(upper)}),
                       device("short", {with(short_one)}), device("nothex", {with(not_hex)})},
                      {}, 1);
  auto owner_of = [&](std::string_view text) -> std::string {
    auto owner = snapshot->find_certificate(text);
    return owner ? std::string(owner->device->id()) : std::string("-");
  };
  // Positive controls: each is found by its own text.
  CHECK(owner_of(canonical) == "canon");
  CHECK(owner_of(upper) == "upper");
  CHECK(owner_of(short_one) == "short");
  CHECK(owner_of(not_hex) == "nothex");
  CHECK(snapshot->find_device("upper")->certificates()[0].sha256_fingerprint() == upper);
  CHECK(snapshot->find_device("canon")->certificates()[0].sha256_fingerprint() == canonical);
  // Any other text is no certificate: another case, a length off by one, a non-hex digit, empty.
  std::string canonical_upper = canonical;
  std::transform(
      canonical_upper.begin(), canonical_upper.end(), canonical_upper.begin(),
      [](char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); });
  std::string upper_lower = upper;
  std::transform(upper_lower.begin(), upper_lower.end(), upper_lower.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  CHECK(owner_of(canonical_upper) == "-");
  CHECK(owner_of(upper_lower) == "-");
  CHECK(owner_of(canonical.substr(0, 63)) == "-");
  CHECK(owner_of(canonical + "0") == "-");
  CHECK(owner_of(std::string(canonical).replace(10, 1, "z")) == "-");
  CHECK(owner_of("") == "-");
  CHECK(owner_of(std::string_view(canonical.data(), 32)) == "-");
  CHECK(owner_of(std::string("ab\0c123", 7)) == "-");
  // Every byte value in every position: found only when it is the registered digit.
  std::size_t found = 0, wrong = 0;
  for (std::size_t i = 0; i < canonical.size(); ++i) {
    for (int byte = 0; byte < 256; ++byte) {
      std::string text = canonical;
      text[i] = static_cast<char>(byte);
      const bool is_it = text == canonical;
      const bool hit = snapshot->find_certificate(text).has_value();
      found += hit ? 1 : 0;
      wrong += hit != is_it ? 1 : 0;
    }
  }
  CHECK(found == canonical.size());
  CHECK(wrong == 0);
  // The connect check refuses those as unknown and accepts the registered one.
  CHECK(snapshot->connect_verdict({canonical_upper, "canon", "canon"}, kNow, false).reason ==
        ConnectReason::unknown_certificate);
  CHECK(snapshot->connect_verdict({canonical, "canon", "canon"}, kNow, false).reason ==
        ConnectReason::accepted);
}

TEST_CASE("records: a fingerprint moved to another device names that device alone") {
  auto before = Snapshot::build({device("a", {cert(1), cert(2)}), device("b", {cert(3)})}, {}, 1);
  // b now holds a's certificate 2 (as a table would: the later registration names it).
  auto after = before->with_changes({device("b", {cert(3), cert(2)})}, {}, {}, 2);
  REQUIRE(after->find_certificate(fingerprint(2)));
  CHECK(after->find_certificate(fingerprint(2))->device->id() == "b");
  CHECK(before->find_certificate(fingerprint(2))->device->id() == "a");
  // a is dropped: its other certificate goes, b's stay.
  auto dropped = after->with_changes({}, std::vector<std::string>{"a"}, {}, 3);
  CHECK_FALSE(dropped->find_certificate(fingerprint(1)));
  REQUIRE(dropped->find_certificate(fingerprint(2)));
  CHECK(dropped->find_certificate(fingerprint(2))->device->id() == "b");
  CHECK(dropped->find_certificate(fingerprint(3))->device->id() == "b");
  // The older snapshots are unchanged, and still read their own records.
  CHECK(before->find_certificate(fingerprint(1))->device->id() == "a");
  CHECK(after->find_device("a") == before->find_device("a"));
  CHECK(after->find_device("b") != before->find_device("b"));
}

TEST_CASE("with_changes: groups given are replaced, others kept, and the old snapshot keeps its") {
  auto before = acl_fleet();
  auto after = before->with_changes(
      {}, {}, {GroupAccess{"sensor", {allow(30, "telemetry/%d/v2", acl::kPublish)}}}, 8);
  CHECK(decide(*after, "s1", acl::kPublish, "telemetry/s1") == kDeny);
  CHECK(decide(*after, "s1", acl::kPublish, "telemetry/s1/v2") == kAllow);
  CHECK(decide(*after, "s1", acl::kRead, "fleet/broadcast") == kDeny);
  CHECK(decide(*after, "s1", acl::kRead, "devices/s1/x") == kAllow);  // default untouched
  CHECK(decide(*before, "s1", acl::kPublish, "telemetry/s1") == kAllow);
  CHECK(decide(*before, "s1", acl::kPublish, "telemetry/s1/v2") == kDeny);
}

TEST_CASE("with_changes: a new group takes effect for devices of that type") {
  auto before = acl_fleet();
  auto after =
      before->with_changes({}, {}, {GroupAccess{"nogroup", {allow(31, "x/%d", acl::kPublish)}}}, 8);
  CHECK(decide(*after, "typed-no-group", acl::kPublish, "x/typed-no-group") == kAllow);
  CHECK(decide(*before, "typed-no-group", acl::kPublish, "x/typed-no-group") == kDeny);
}

// --- must_disconnect -----------------------------------------------------------------------------

TEST_CASE("must_disconnect: a device that is gone, disabled or revoked must go") {
  const auto before = device("d", {cert(1)});
  CHECK(must_disconnect(before, nullptr));
  const auto disabled = device("d", {cert(1)}, DeviceStatus::disabled);
  CHECK(must_disconnect(before, &disabled));
  const auto revoked = device("d", {cert(1, CertificateStatus::revoked)}, DeviceStatus::revoked);
  CHECK(must_disconnect(before, &revoked));
}

TEST_CASE("must_disconnect: a certificate that was active and is revoked or gone must go") {
  const auto before = device("d", {cert(1), cert(2)});
  const auto one_revoked = device("d", {cert(1, CertificateStatus::revoked), cert(2)});
  CHECK(must_disconnect(before, &one_revoked));
  const auto one_gone = device("d", {cert(2)});
  CHECK(must_disconnect(before, &one_gone));
}

TEST_CASE("must_disconnect: rule, type and new certificate changes keep the device connected") {
  const auto before = device("d", {cert(1, CertificateStatus::revoked), cert(2)});
  const auto rules = device("d", {cert(1, CertificateStatus::revoked), cert(2)},
                            DeviceStatus::active, "sensor", {deny(1, "#", acl::kReadWrite)});
  CHECK_FALSE(must_disconnect(before, &rules));
  const auto added = device("d", {cert(2), cert(3)});  // an already revoked one dropping out
  CHECK_FALSE(must_disconnect(before, &added));
  CHECK_FALSE(must_disconnect(before, &before));
}

// --- loading from a real registry ----------------------------------------------------------------

namespace {

template <class T>
T must(Result<T> result) {
  if (!result.ok()) FAIL(errc_name(result.error().code) << ": " << result.error().message);
  return std::move(result).value();
}

const Actor kAlice{"alice", kNow};

std::string hex(unsigned long long value, int width, bool upper) {
  char buffer[80];
  std::snprintf(buffer, sizeof buffer, upper ? "%0*llX" : "%0*llx", width, value);
  return buffer;
}

// A certificate record whose serial and fingerprint no other call returns.
NewCertificate new_cert(std::string_view device_id) {
  static std::atomic<unsigned long long> counter{1};
  const auto n = counter++;
  return NewCertificate{hex(n, 32, true),
                        "CN=Onboard Test CA",
                        hex(n, 64, false),
                        "CN=" + std::string(device_id),
                        kNow - kDay,
                        kNow + 365 * kDay,
                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                        {}};
}

struct Registry {
  TempDir dir;
  std::unique_ptr<Store> writer =
      must(open_sqlite_store(dir / "registry.db", OpenMode::read_write));
  std::unique_ptr<Store> reader = must(open_sqlite_store(dir / "registry.db", OpenMode::read_only));

  // Returns the certificate's fingerprint.
  std::string add(const std::string& id, const std::string& type = "") {
    NewDevice d;
    d.id = id;
    d.type = type;
    auto c = new_cert(id);
    must(writer->register_device(d, c, kAlice));
    return c.sha256_fingerprint;
  }
  Refresh refresh(const Snapshot& current) {
    auto r = must(refresh_snapshot(*reader, current));
    REQUIRE(r.has_value());
    return std::move(*r);
  }
};

ConnectReason connect(const Snapshot& snapshot, const std::string& fp, const std::string& id) {
  return snapshot.connect_verdict({fp, id, id}, kNow, false).reason;
}

}  // namespace

TEST_CASE("load_snapshot: every device with its certificates and rules, every group, the seq") {
  Registry r;
  const auto fp1 = r.add("a1", "sensor");
  const auto fp2 = r.add("a2");
  must(r.writer->add_rule({SubjectKind::device, "a1", "cfg/a1", acl::kRead, RuleEffect::allow, 5},
                          kAlice));
  must(r.writer->add_rule({SubjectKind::device, "a1", "cfg/#", acl::kRead, RuleEffect::deny, 1},
                          kAlice));
  must(r.writer->add_rule(
      {SubjectKind::group, "sensor", "telemetry/%d", acl::kPublish, RuleEffect::allow, 0}, kAlice));
  auto snapshot = must(load_snapshot(*r.reader));
  CHECK(snapshot->device_count() == 2);
  CHECK(snapshot->change_seq() == must(r.reader->change_seq()));
  CHECK(connect(*snapshot, fp1, "a1") == ConnectReason::accepted);
  CHECK(connect(*snapshot, fp2, "a2") == ConnectReason::accepted);
  const SnapshotDevice* a1 = snapshot->find_device("a1");
  REQUIRE(a1 != nullptr);
  CHECK(a1->type() == "sensor");
  REQUIRE(a1->rules().size() == 2);
  CHECK(a1->rules()[0].priority == 5);  // highest priority first
  CHECK(a1->rules()[1].effect == acl::Effect::deny);
  CHECK(a1->certificates().size() == 1);
  CHECK(snapshot->find_device("a2")->rules().empty());
  REQUIRE(snapshot->find_group("sensor") != nullptr);
  CHECK(snapshot->find_group("sensor")->rules.size() == 1);
  REQUIRE(snapshot->find_group("default") != nullptr);
  CHECK(decide(*snapshot, "a1", acl::kRead, "cfg/a1") == kAllow);
  CHECK(decide(*snapshot, "a1", acl::kRead, "cfg/other") == kDeny);
  CHECK(decide(*snapshot, "a1", acl::kPublish, "telemetry/a1") == kAllow);
  CHECK(decide(*snapshot, "a2", acl::kPublish, "telemetry/a2") == kDeny);
  CHECK(decide(*snapshot, "a2", acl::kPublish, "devices/a2/x") == kAllow);
}

TEST_CASE("load_snapshot: an empty registry loads with the default group only") {
  Registry r;
  auto snapshot = must(load_snapshot(*r.reader));
  CHECK(snapshot->device_count() == 0);
  CHECK(snapshot->find_group("default") != nullptr);
}

TEST_CASE("refresh_snapshot: nothing changed is nullopt") {
  Registry r;
  r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  CHECK_FALSE(must(refresh_snapshot(*r.reader, *snapshot)).has_value());
}

TEST_CASE("refresh_snapshot: a registered device is added without kicking anyone") {
  Registry r;
  const auto fp1 = r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  const auto fp2 = r.add("a2");
  auto refresh = r.refresh(*snapshot);
  CHECK(refresh.kicks.empty());
  CHECK(refresh.devices_reloaded == 1);
  CHECK(refresh.snapshot->device_count() == 2);
  CHECK(refresh.snapshot->change_seq() == must(r.reader->change_seq()));
  CHECK(connect(*refresh.snapshot, fp2, "a2") == ConnectReason::accepted);
  CHECK(connect(*refresh.snapshot, fp1, "a1") == ConnectReason::accepted);
  CHECK(connect(*snapshot, fp2, "a2") == ConnectReason::unknown_certificate);
  CHECK_FALSE(must(refresh_snapshot(*r.reader, *refresh.snapshot)).has_value());
}

TEST_CASE("refresh_snapshot: a revoked device is kicked and refused") {
  Registry r;
  const auto fp = r.add("a1");
  r.add("a2");
  auto snapshot = must(load_snapshot(*r.reader));
  must(r.writer->revoke_device("a1", RevocationReason::key_compromise, kAlice));
  auto refresh = r.refresh(*snapshot);
  CHECK(refresh.kicks == std::vector<std::string>{"a1"});
  CHECK(connect(*refresh.snapshot, fp, "a1") == ConnectReason::certificate_revoked);
  CHECK(decide(*refresh.snapshot, "a1", acl::kPublish, "devices/a1/x") == kDeny);
}

TEST_CASE("refresh_snapshot: a disabled device is kicked, an enabled one is let back") {
  Registry r;
  const auto fp = r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  must(r.writer->set_device_enabled("a1", false, kAlice));
  auto disabled = r.refresh(*snapshot);
  CHECK(disabled.kicks == std::vector<std::string>{"a1"});
  CHECK(connect(*disabled.snapshot, fp, "a1") == ConnectReason::device_disabled);
  must(r.writer->set_device_enabled("a1", true, kAlice));
  auto enabled = r.refresh(*disabled.snapshot);
  CHECK(enabled.kicks.empty());
  CHECK(connect(*enabled.snapshot, fp, "a1") == ConnectReason::accepted);
}

TEST_CASE("refresh_snapshot: a renewal kicks the old certificate and admits the new one") {
  Registry r;
  const auto old_fp = r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  auto renewed = new_cert("a1");
  must(r.writer->add_certificate("a1", renewed, true, kAlice));
  auto refresh = r.refresh(*snapshot);
  CHECK(refresh.kicks == std::vector<std::string>{"a1"});
  CHECK(connect(*refresh.snapshot, old_fp, "a1") == ConnectReason::certificate_revoked);
  CHECK(connect(*refresh.snapshot, renewed.sha256_fingerprint, "a1") == ConnectReason::accepted);
}

TEST_CASE("refresh_snapshot: an added certificate without supersede kicks no one") {
  Registry r;
  const auto old_fp = r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  auto second = new_cert("a1");
  must(r.writer->add_certificate("a1", second, false, kAlice));
  auto refresh = r.refresh(*snapshot);
  CHECK(refresh.kicks.empty());
  CHECK(connect(*refresh.snapshot, old_fp, "a1") == ConnectReason::accepted);
  CHECK(connect(*refresh.snapshot, second.sha256_fingerprint, "a1") == ConnectReason::accepted);
}

TEST_CASE("refresh_snapshot: a device rule change takes effect without a kick") {
  Registry r;
  r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  auto rule = must(r.writer->add_rule(
      {SubjectKind::device, "a1", "devices/a1/locked", acl::kReadWrite, RuleEffect::deny, 0},
      kAlice));
  auto added = r.refresh(*snapshot);
  CHECK(added.kicks.empty());
  CHECK(added.devices_reloaded == 1);
  CHECK(decide(*added.snapshot, "a1", acl::kPublish, "devices/a1/locked") == kDeny);
  CHECK(decide(*snapshot, "a1", acl::kPublish, "devices/a1/locked") == kAllow);
  must(r.writer->remove_rule(rule.id, kAlice));
  auto removed = r.refresh(*added.snapshot);
  CHECK(removed.kicks.empty());
  CHECK(decide(*removed.snapshot, "a1", acl::kPublish, "devices/a1/locked") == kAllow);
}

TEST_CASE("refresh_snapshot: a group rule change reloads the group only, without a kick") {
  Registry r;
  r.add("a1", "sensor");
  r.add("a2", "sensor");
  auto snapshot = must(load_snapshot(*r.reader));
  must(r.writer->add_rule(
      {SubjectKind::group, "sensor", "telemetry/%d", acl::kPublish, RuleEffect::allow, 0}, kAlice));
  must(r.writer->add_rule(
      {SubjectKind::group, "default", "devices/%d/#", acl::kPublish, RuleEffect::deny, 1}, kAlice));
  auto refresh = r.refresh(*snapshot);
  CHECK(refresh.kicks.empty());
  CHECK(refresh.devices_reloaded == 0);
  CHECK(refresh.groups_reloaded == 2);
  CHECK(decide(*refresh.snapshot, "a2", acl::kPublish, "telemetry/a2") == kAllow);
  CHECK(decide(*refresh.snapshot, "a2", acl::kPublish, "devices/a2/x") == kDeny);
  CHECK(decide(*refresh.snapshot, "a2", acl::kRead, "devices/a2/x") == kAllow);
  CHECK(decide(*snapshot, "a2", acl::kPublish, "telemetry/a2") == kDeny);
}

TEST_CASE(
    "refresh_snapshot: a device whose type changes gets the new group's rules, without a kick") {
  Registry r;
  const auto fp = r.add("a1", "sensor");
  r.add("b1", "actuator");
  must(r.writer->add_rule(
      {SubjectKind::group, "sensor", "telemetry/%d", acl::kPublish, RuleEffect::allow, 0}, kAlice));
  must(r.writer->add_rule(
      {SubjectKind::group, "actuator", "cmd/%d", acl::kPublish, RuleEffect::allow, 0}, kAlice));
  auto snapshot = must(load_snapshot(*r.reader));
  CHECK(decide(*snapshot, "a1", acl::kPublish, "telemetry/a1") == kAllow);
  CHECK(decide(*snapshot, "a1", acl::kPublish, "cmd/a1") == kDeny);

  DeviceUpdate to_actuator;
  to_actuator.type = "actuator";
  must(r.writer->update_device("a1", to_actuator, kAlice));
  auto moved = r.refresh(*snapshot);
  CHECK(moved.kicks.empty());
  CHECK(moved.devices_reloaded == 1);
  CHECK(connect(*moved.snapshot, fp, "a1") == ConnectReason::accepted);
  CHECK(decide(*moved.snapshot, "a1", acl::kPublish, "cmd/a1") == kAllow);
  CHECK(decide(*moved.snapshot, "a1", acl::kPublish, "telemetry/a1") == kDeny);
  CHECK(decide(*moved.snapshot, "b1", acl::kPublish, "cmd/b1") == kAllow);  // b1 unchanged

  // A type no group has yet: its group is created, and a rule added to it later applies.
  DeviceUpdate to_lamp;
  to_lamp.type = "lamp";
  must(r.writer->update_device("a1", to_lamp, kAlice));
  must(r.writer->add_rule(
      {SubjectKind::group, "lamp", "light/%d", acl::kPublish, RuleEffect::allow, 0}, kAlice));
  auto lamp = r.refresh(*moved.snapshot);
  CHECK(lamp.kicks.empty());
  CHECK(decide(*lamp.snapshot, "a1", acl::kPublish, "light/a1") == kAllow);
  CHECK(decide(*lamp.snapshot, "a1", acl::kPublish, "cmd/a1") == kDeny);

  // Fields the broker does not decide by change nothing it holds: no reload at all.
  DeviceUpdate where;
  where.location = "attic";
  where.firmware = "2.0";
  must(r.writer->update_device("a1", where, kAlice));
  CHECK_FALSE(must(refresh_snapshot(*r.reader, *lamp.snapshot)).has_value());
}

TEST_CASE("refresh_snapshot: a change the snapshot does not hold (a new CRL) moves the seq only") {
  Registry r;
  r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  must(r.writer->next_crl_number(kAlice));
  auto refresh = r.refresh(*snapshot);
  CHECK(refresh.kicks.empty());
  CHECK(refresh.devices_reloaded == 0);
  CHECK(refresh.groups_reloaded == 0);
  CHECK(refresh.snapshot->change_seq() == snapshot->change_seq() + 1);
  CHECK_FALSE(must(refresh_snapshot(*r.reader, *refresh.snapshot)).has_value());
}

TEST_CASE("refresh_snapshot: many changes at once land in one step, as a full load sees them") {
  Registry r;
  const auto fp1 = r.add("a1");
  auto snapshot = must(load_snapshot(*r.reader));
  r.add("a2", "sensor");
  must(r.writer->set_device_enabled("a1", false, kAlice));
  must(r.writer->set_device_enabled("a1", true, kAlice));
  must(r.writer->revoke_device("a2", RevocationReason::unspecified, kAlice));
  auto refresh = r.refresh(*snapshot);
  // a1 was disabled and enabled again in between: its certificate never changed, so no kick.
  CHECK(refresh.kicks.empty());
  auto full = must(load_snapshot(*r.reader));
  CHECK(refresh.snapshot->change_seq() == full->change_seq());
  CHECK(refresh.snapshot->device_count() == full->device_count());
  full->for_each_device([&](const SnapshotDevice& expected) {
    const SnapshotDevice* got = refresh.snapshot->find_device(expected.id());
    REQUIRE(got != nullptr);
    CHECK(got->status() == expected.status());
    CHECK(got->certificates().size() == expected.certificates().size());
  });
  CHECK(connect(*refresh.snapshot, fp1, "a1") == ConnectReason::accepted);
}

TEST_CASE("refresh_snapshot: a device that is gone from the registry is dropped and kicked") {
  // The Store has no delete. Stand in for one: the snapshot holds a device the registry lacks, and
  // a change row names it, as a future delete would write.
  Registry r;
  r.add("a1");
  auto loaded = must(load_snapshot(*r.reader));
  auto with_ghost =
      loaded->with_changes({device("ghost", {cert(1)})}, {}, {}, loaded->change_seq());
  {
    SQLite::Database raw((r.dir / "registry.db").string(), SQLite::OPEN_READWRITE);
    SQLite::Transaction transaction(raw);
    raw.exec("UPDATE meta SET change_seq = change_seq + 1 WHERE id = 1");
    raw.exec(
        "INSERT INTO changes (seq, at, kind, subject) "
        "SELECT change_seq, 0, 'device', 'ghost' FROM meta WHERE id = 1");
    transaction.commit();
  }
  auto refresh = r.refresh(*with_ghost);
  CHECK(refresh.kicks == std::vector<std::string>{"ghost"});
  CHECK(refresh.devices_reloaded == 1);
  CHECK(refresh.snapshot->find_device("ghost") == nullptr);
  CHECK_FALSE(refresh.snapshot->find_certificate(fingerprint(1)));
  CHECK(refresh.snapshot->device_count() == 1);
  CHECK(refresh.snapshot->find_device("a1") != nullptr);
}

// --- AccessStore::read_access
// --------------------------------------------------------------------------

TEST_CASE("read_access: everything matches what the per-device Store calls return") {
  Registry r;
  for (int i = 0; i < 30; ++i) {
    const std::string id = "d" + std::to_string(i);
    r.add(id, i % 3 == 0 ? "sensor" : "");
    if (i % 2 == 0) {
      must(r.writer->add_rule(
          {SubjectKind::device, id, "x/" + id, acl::kRead, RuleEffect::allow, i % 4}, kAlice));
      must(r.writer->add_rule(
          {SubjectKind::device, id, "y/" + id, acl::kPublish, RuleEffect::deny, i % 5}, kAlice));
    }
    if (i % 5 == 0) must(r.writer->add_certificate(id, new_cert(id), true, kAlice));
  }
  must(r.writer->set_device_enabled("d4", false, kAlice));
  auto data = must(r.reader->read_access(AccessQuery::everything()));
  CHECK(data.change_seq == must(r.reader->change_seq()));
  CHECK(data.missing_devices.empty());
  REQUIRE(data.devices.size() == 30);
  CHECK(std::is_sorted(data.devices.begin(), data.devices.end(),
                       [](const auto& a, const auto& b) { return a.id < b.id; }));
  for (const auto& d : data.devices) {
    INFO(d.id);
    auto stored = must(r.reader->get_device(d.id));
    CHECK(d.status == stored.status);
    CHECK(d.type == stored.type);
    auto rules = must(r.reader->rules_for_subject(SubjectKind::device, d.id));
    REQUIRE(d.rules.size() == rules.size());
    for (std::size_t i = 0; i < rules.size(); ++i) {
      CHECK(d.rules[i].id == rules[i].id);
      CHECK(d.rules[i].pattern == rules[i].pattern);
      CHECK(d.rules[i].access == rules[i].access);
      CHECK(d.rules[i].priority == rules[i].priority);
    }
    auto certs = must(r.reader->certificates_of(d.id));
    REQUIRE(d.certificates.size() == certs.size());
    for (std::size_t i = 0; i < certs.size(); ++i) {
      CHECK(d.certificates[i].sha256_fingerprint == certs[i].sha256_fingerprint);
      CHECK(d.certificates[i].serial_hex == certs[i].serial_hex);
      CHECK(d.certificates[i].status == certs[i].status);
      CHECK(d.certificates[i].not_before == certs[i].not_before);
      CHECK(d.certificates[i].not_after == certs[i].not_after);
    }
  }
  std::vector<std::string> names;
  for (const auto& g : data.groups) names.push_back(g.name);
  CHECK(names == std::vector<std::string>{"default", "sensor"});
}

TEST_CASE("read_access: listed devices and groups, missing ones said so") {
  Registry r;
  r.add("a1", "sensor");
  auto data = must(r.reader->read_access(
      AccessQuery::listed({"zz", "a1", "not a valid id"}, {"sensor", "nogroup"})));
  REQUIRE(data.devices.size() == 1);
  CHECK(data.devices[0].id == "a1");
  CHECK(data.missing_devices == std::vector<std::string>{"not a valid id", "zz"});
  REQUIRE(data.groups.size() == 2);
  CHECK(data.groups[0].name == "nogroup");
  CHECK(data.groups[0].rules.empty());
  CHECK(data.groups[1].name == "sensor");
}

TEST_CASE("read_access: changed_since names only what the feed names, with the seq it read") {
  Registry r;
  r.add("a1");
  const auto seq = must(r.reader->change_seq());
  CHECK(must(r.reader->read_access(AccessQuery::changed_since(seq))).change_seq == seq);
  r.add("a2", "sensor");
  auto data = must(r.reader->read_access(AccessQuery::changed_since(seq)));
  CHECK(data.change_seq == must(r.reader->change_seq()));
  REQUIRE(data.devices.size() == 1);
  CHECK(data.devices[0].id == "a2");
  REQUIRE(data.groups.size() == 1);  // the type's group was created with it
  CHECK(data.groups[0].name == "sensor");
}

TEST_CASE("load helpers: one device and one group, as the CLI's acl check reads them") {
  Registry r;
  r.add("a1");
  auto a1 = must(load_device_access(*r.reader, "a1"));
  REQUIRE(a1.has_value());
  CHECK(a1->id == "a1");
  CHECK_FALSE(must(load_device_access(*r.reader, "nobody")).has_value());
  auto group = must(load_group_access(*r.reader, "default"));
  CHECK(group.rules.size() == 1);
}
