// The snapshot loader against a fake AccessStore that returns fixed rows, fails, then changes: the
// loader needs nothing of a store but read_access. Built into an executable of its own that links
// only onboard::registry_access, so that the broker's side of the registry is shown to build and
// work without the rest of the Store.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "registry/access_store.h"
#include "registry/snapshot_loader.h"
#include "tests/support/result.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::must;
using onboard::test::require_error;

namespace {

constexpr UnixTime kNow = 1'700'000'000;

CertificateAccess cert(const std::string& fingerprint,
                       CertificateStatus status = CertificateStatus::active) {
  return CertificateAccess{fingerprint, "01", status, kNow - 60, kNow + 86'400};
}

DeviceAccess device(std::string id, std::vector<CertificateAccess> certs,
                    DeviceStatus status = DeviceStatus::active, std::string type = "") {
  return DeviceAccess{std::move(id), status, std::move(type), {}, std::move(certs)};
}

GroupAccess group(std::string name, std::string pattern) {
  return GroupAccess{std::move(name),
                     {acl::Rule{1, std::move(pattern), acl::kPublish, acl::Effect::allow, 0}}};
}

// Answers read_access from `data` (or fails with `failure`), recording every query it was asked.
// AccessData is filtered to what the query asks for, as a real store would read it.
class FakeAccessStore final : public AccessStore {
 public:
  AccessData data;
  std::optional<Error> failure;
  std::vector<AccessQuery> queries;
  // For changed_since: which devices and groups the change feed names after a seq.
  std::vector<std::string> changed_devices, changed_groups;

  Result<AccessData> read_access(const AccessQuery& query) override {
    queries.push_back(query);
    if (failure) return *failure;
    switch (query.scope) {
      case AccessQuery::Scope::everything:
        return data;
      case AccessQuery::Scope::listed:
        return select(query.device_ids, query.group_names);
      case AccessQuery::Scope::changed_since:
        if (data.change_seq <= query.after_seq)
          return AccessData{data.change_seq, {}, {}, {}, std::nullopt};
        return select(changed_devices, changed_groups);
    }
    return make_error(Errc::internal, "unknown scope");
  }

 private:
  AccessData select(const std::vector<std::string>& ids, const std::vector<std::string>& names) {
    AccessData out{data.change_seq, {}, {}, {}, std::nullopt};
    for (const auto& id : ids) {
      bool found = false;
      for (const auto& d : data.devices) {
        if (d.id == id) {
          out.devices.push_back(d);
          found = true;
        }
      }
      if (!found) out.missing_devices.push_back(id);
    }
    for (const auto& name : names) {
      GroupAccess g{name, {}};
      for (const auto& existing : data.groups)
        if (existing.name == name) g = existing;
      out.groups.push_back(std::move(g));
    }
    return out;
  }
};

FakeAccessStore fleet() {
  FakeAccessStore store;
  store.data.change_seq = 7;
  store.data.devices = {device("a1", {cert("fp-a1")}, DeviceStatus::active, "sensor"),
                        device("a2", {cert("fp-a2")})};
  store.data.groups = {group("default", "devices/%d/#"), group("sensor", "telemetry/%d")};
  return store;
}

ConnectReason connect(const Snapshot& snapshot, const std::string& fp, const std::string& id) {
  return snapshot.connect_verdict({fp, id, id}, kNow, false).reason;
}

bool may_publish(const Snapshot& snapshot, const std::string& id, const std::string& topic) {
  return snapshot.check_access(id, id, acl::kPublish, topic).decision == acl::Decision::allow;
}

}  // namespace

TEST_CASE("load_snapshot builds the broker's picture from one read of everything") {
  auto store = fleet();
  auto snapshot = must(load_snapshot(store));
  REQUIRE(store.queries.size() == 1);
  CHECK(store.queries[0].scope == AccessQuery::Scope::everything);
  CHECK(snapshot->change_seq() == 7);
  CHECK(snapshot->device_count() == 2);
  CHECK(connect(*snapshot, "fp-a1", "a1") == ConnectReason::accepted);
  CHECK(connect(*snapshot, "fp-other", "a1") == ConnectReason::unknown_certificate);
  CHECK(may_publish(*snapshot, "a1", "telemetry/a1"));  // its type's group
  CHECK_FALSE(may_publish(*snapshot, "a2", "telemetry/a2"));
  CHECK(may_publish(*snapshot, "a2", "devices/a2/x"));  // the default group
}

TEST_CASE("a failing AccessStore fails the load and the refresh with its own error") {
  auto store = fleet();
  auto snapshot = must(load_snapshot(store));
  store.failure = make_error(Errc::io, "the registry stayed locked");
  require_error(load_snapshot(store), Errc::io, "the registry stayed locked");
  require_error(refresh_snapshot(store, *snapshot), Errc::io, "the registry stayed locked");
  require_error(load_device_access(store, "a1"), Errc::io);

  store.failure.reset();  // readable again: the next refresh works from the same snapshot
  CHECK_FALSE(must(refresh_snapshot(store, *snapshot)).has_value());
}

TEST_CASE("refresh_snapshot asks only for what changed after the snapshot and applies it") {
  auto store = fleet();
  auto snapshot = must(load_snapshot(store));

  // Nothing after seq 7: no refresh, and the question was "after 7".
  CHECK_FALSE(must(refresh_snapshot(store, *snapshot)).has_value());
  REQUIRE(store.queries.back().scope == AccessQuery::Scope::changed_since);
  CHECK(store.queries.back().after_seq == 7);

  // Seq 9: a1's certificate is revoked, a2 is gone, a3 is new and the sensor group changed.
  store.data.change_seq = 9;
  store.data.devices = {
      device("a1", {cert("fp-a1", CertificateStatus::revoked)}, DeviceStatus::active, "sensor"),
      device("a3", {cert("fp-a3")}, DeviceStatus::active, "sensor")};
  store.data.groups = {group("default", "devices/%d/#"), group("sensor", "metrics/%d")};
  store.changed_devices = {"a1", "a2", "a3"};
  store.changed_groups = {"sensor"};
  auto refresh = must(refresh_snapshot(store, *snapshot));
  REQUIRE(refresh.has_value());
  CHECK(store.queries.back().after_seq == 7);
  CHECK(refresh->kicks == std::vector<std::string>{"a1", "a2"});  // not the new a3
  CHECK(refresh->devices_reloaded == 3);
  CHECK(refresh->groups_reloaded == 1);
  const Snapshot& next = *refresh->snapshot;
  CHECK(next.change_seq() == 9);
  CHECK(connect(next, "fp-a1", "a1") == ConnectReason::certificate_revoked);
  CHECK(connect(next, "fp-a2", "a2") == ConnectReason::unknown_certificate);
  CHECK(connect(next, "fp-a3", "a3") == ConnectReason::accepted);
  CHECK(may_publish(next, "a3", "metrics/a3"));
  CHECK_FALSE(may_publish(next, "a3", "telemetry/a3"));
  // The snapshot refreshed from is untouched: the broker may still be reading it.
  CHECK(connect(*snapshot, "fp-a2", "a2") == ConnectReason::accepted);

  CHECK_FALSE(must(refresh_snapshot(store, next)).has_value());
}

TEST_CASE("a change counter that went back asks for a full read instead of a refresh") {
  auto store = fleet();
  auto snapshot = must(load_snapshot(store));  // seq 7
  // An older copy restored in place: seq 5, and a2 was not registered yet. The change feed after
  // 7 names nothing, so a refresh alone would keep a2 and whatever else differs.
  store.data.change_seq = 5;
  auto refresh = must(refresh_snapshot(store, *snapshot));
  REQUIRE(refresh.has_value());
  REQUIRE(refresh->read_in_full_because.has_value());
  CHECK(*refresh->read_in_full_because ==
        "its change counter went back from 7 to 5 (an older copy put in its place?)");
  CHECK_FALSE(refresh->snapshot);
  CHECK(refresh->kicks.empty());

  // Control: the same counter as the snapshot's is no change, a higher one a refresh.
  store.data.change_seq = 7;
  CHECK_FALSE(must(refresh_snapshot(store, *snapshot)).has_value());
  store.data.change_seq = 8;
  auto forward = must(refresh_snapshot(store, *snapshot));
  REQUIRE(forward.has_value());
  CHECK_FALSE(forward->read_in_full_because.has_value());
  CHECK(forward->snapshot);
}

TEST_CASE("load_device_access and load_group_access ask for the one device or group named") {
  auto store = fleet();
  auto a1 = must(load_device_access(store, "a1"));
  REQUIRE(a1.has_value());
  CHECK(a1->type == "sensor");
  REQUIRE(store.queries.back().scope == AccessQuery::Scope::listed);
  CHECK(store.queries.back().device_ids == std::vector<std::string>{"a1"});
  CHECK(store.queries.back().group_names.empty());
  CHECK_FALSE(must(load_device_access(store, "nobody")).has_value());

  CHECK(must(load_group_access(store, "sensor")).rules.size() == 1);
  CHECK(store.queries.back().group_names == std::vector<std::string>{"sensor"});
  CHECK(must(load_group_access(store, "no-such-group")).rules.empty());
}
