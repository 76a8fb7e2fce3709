// verify_audit proves the authorization state, not only the chain (registry/entity_state.h): a
// device, certificate, rule, group or token changed with plain SQL, behind the Store, is named
// with the audit row it differs from. Conformance suite: runs on SQLite and PostgreSQL.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "registry/copy.h"
#include "registry/open.h"
#include "tests/registry/fixtures.h"
#include "tests/support/postgres.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::kAlice;
using onboard::test::kNow;
using onboard::test::kTestIssuer;
using onboard::test::must;
using onboard::test::new_device;
using onboard::test::open_test_store;
using onboard::test::raw_exec;
using onboard::test::raw_int64;
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;
using onboard::test::test_location;

namespace {

const std::string kEncrypted =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";

// The seq of the newest audit row with this action and subject.
std::int64_t seq_of(Store& store, const std::string& action, const std::string& subject) {
  std::optional<std::int64_t> seq;
  for (const auto& row : must(store.audit_list(0))) {
    if (row.action == action && row.subject == subject) seq = row.seq;
  }
  REQUIRE(seq.has_value());
  return *seq;
}

std::int64_t entities(const TempDir& dir) {
  return raw_int64(dir,
                   "SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM certificates) + "
                   "(SELECT count(*) FROM acl_rules) + (SELECT count(*) FROM groups) + "
                   "(SELECT count(*) FROM api_tokens)");
}

void require_intact(Store& store, const TempDir& dir) {
  const auto check = must(store.verify_audit());
  INFO(check.problem);
  REQUIRE(check.ok());
  CHECK(check.entity.empty());
  CHECK(check.entities_checked == entities(dir));
}

// What verify_audit says once the registry was changed behind the Store.
AuditCheck tampered(Store& store) {
  const auto check = must(store.verify_audit());
  INFO(check.problem);
  CHECK_FALSE(check.ok());
  return check;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Every kind of write the Store has, so that each records the state it leaves: registrations
// (one in a batch, creating a group), renewals, revocations, disable and enable, a type change,
// rules added and removed, groups, a bundle, CRL numbers, tokens, an event.
void long_history(Store& store) {
  must(store.create_batch("batch-1", "devices.csv", kAlice));
  for (const char* id : {"dev-1", "dev-2", "dev-3"}) {
    must(store.register_device_in_batch(new_device(id, "sensor"),
                                        test_certificate(id, kTestIssuer, kEncrypted), "batch-1", 1,
                                        kAlice));
  }
  must(store.register_device(new_device("dev-4"), test_certificate("dev-4"), kAlice));
  must(store.register_device(new_device("dev-off", "sensor"), test_certificate("dev-off"), kAlice));
  must(store.create_group("admins", "operators' devices", kAlice));
  must(store.add_rule({SubjectKind::group, "sensor", "sensors/%d/#", 3, RuleEffect::allow, 5},
                      kAlice));
  must(store.add_rule({SubjectKind::device, "dev-4", "alarms/#", 2, RuleEffect::deny, 9}, kAlice));
  const auto removed = must(
      store.add_rule({SubjectKind::device, "dev-4", "tmp/#", 1, RuleEffect::allow, 0}, kAlice));
  must(store.remove_rule(removed.id, kAlice));
  must(store.add_certificate("dev-2", test_certificate("dev-2"), true, kAlice));   // renewal
  must(store.add_certificate("dev-4", test_certificate("dev-4"), false, kAlice));  // a second one
  must(store.record_certificate(CertificateKind::server, test_certificate("broker.example"),
                                kAlice));
  must(store.revoke_device("dev-3", RevocationReason::key_compromise, kAlice));
  const auto spare = must(store.certificates_of("dev-4")).front();
  must(store.revoke_certificate(spare.sha256_fingerprint, RevocationReason::superseded, kAlice));
  must(store.set_device_enabled("dev-off", false, kAlice));
  must(store.set_device_enabled("dev-4", false, kAlice));
  must(store.set_device_enabled("dev-4", true, kAlice));
  DeviceUpdate moved;
  moved.type = "gateway";  // a new group, and the device leaves "sensor" for it
  moved.location = "roof";
  must(store.update_device("dev-1", moved, kAlice));
  must(store.next_crl_number(kAlice));
  must(store.next_root_crl_number(kAlice));

  BundleRecord bundle;
  bundle.id = "bundle-1";
  bundle.batch_id = "batch-1";
  bundle.path = "/tmp/bundle-1.zip";
  bundle.sha256 = std::string(64, 'a');
  bundle.size = 1234;
  bundle.with_keys = true;
  for (const auto& c : must(store.certificates_of("dev-2"))) {
    if (c.status == CertificateStatus::active)
      bundle.devices.push_back({"dev-2", c.sha256_fingerprint});
  }
  must(store.record_bundle(bundle, kAlice));
  must(store.claim_bundle_download("bundle-1", "rest:ops", kAlice));
  must(store.create_api_token("ops", ApiRole::operator_role, std::string(64, '1'), kAlice));
  must(store.create_api_token("viewer", ApiRole::reader, std::string(64, '2'), kAlice));
  must(store.revoke_api_token("viewer", kAlice));
  must(store.record_event("bundle.link", "bundle-1", R"({"expires":1})", kAlice));
}

}  // namespace

TEST_CASE("verify_audit passes after a long history of every kind of write") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  require_intact(*store, dir);
  // Each write that changed an entity recorded its state; one that did not records none.
  const auto rows = must(store->audit_list(0));
  for (const auto& row : rows) {
    const auto details = nlohmann::json::parse(row.details);
    INFO(row.action << " " << row.details);
    const bool changes_state = row.action.starts_with("device.") ||
                               row.action.starts_with("certificate.") ||
                               row.action.starts_with("acl.") || row.action == "group.create" ||
                               row.action.starts_with("token.");
    CHECK(details.contains("state") == changes_state);
  }
  // A reader of the same registry agrees.
  auto reader = open_test_store(dir, OpenMode::read_only);
  require_intact(*reader, dir);
}

TEST_CASE("a disabled device enabled behind the store is named with its disable row") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  const auto disabled = seq_of(*store, "device.disable", "dev-off");
  raw_exec(dir, "UPDATE devices SET status = 'active' WHERE id = 'dev-off'");
  const auto check = tampered(*store);
  CHECK(check.entity == "device dev-off");
  CHECK(check.bad_seq == disabled);
  CHECK(check.problem == "device dev-off differs from row " + std::to_string(disabled) +
                             ", the newest row that changed it (changed outside the registry)");
  CHECK(check.rows_checked == static_cast<std::int64_t>(must(store->audit_list(0)).size()));

  // Put back as it was, the state verifies again: the check compares contents, not times.
  raw_exec(dir, "UPDATE devices SET status = 'disabled' WHERE id = 'dev-off'");
  require_intact(*store, dir);
}

TEST_CASE("a rule granting everything inserted behind the store has no audit row behind it") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  require_intact(*store, dir);
  raw_exec(dir,
           "INSERT INTO acl_rules (group_name, access, pattern, effect, priority, created_at) "
           "VALUES ('default', 7, '#', 'allow', 100, 1)");
  const auto id = raw_int64(dir, "SELECT max(id) FROM acl_rules");
  const auto check = tampered(*store);
  CHECK(check.entity == "rule " + std::to_string(id));
  CHECK_FALSE(check.bad_seq.has_value());
  CHECK(check.problem ==
        "rule " + std::to_string(id) + " has no audit row behind it (added outside the registry)");
}

TEST_CASE("a certificate un-revoked behind the store is named with its revocation row") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  const auto revoked = must(store->certificates_of("dev-3")).front();
  REQUIRE(revoked.status == CertificateStatus::revoked);
  const auto revocation = seq_of(*store, "device.revoke", "dev-3");
  raw_exec(dir,
           "UPDATE certificates SET status = 'active', revoked_at = NULL, "
           "revocation_reason = NULL WHERE sha256_fingerprint = '" +
               revoked.sha256_fingerprint + "'");
  const auto check = tampered(*store);
  CHECK(check.entity == "certificate " + revoked.sha256_fingerprint);
  CHECK(check.bad_seq == revocation);
  CHECK(contains(check.problem, "differs from row " + std::to_string(revocation)));
}

TEST_CASE("a rule deleted behind the store is named as missing with the row that granted it") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  const auto rules = must(store->rules_for_subject(SubjectKind::device, "dev-4"));
  REQUIRE(rules.size() == 1);
  const auto id = std::to_string(rules[0].id);
  const auto granted = seq_of(*store, "acl.deny", id);
  raw_exec(dir, "DELETE FROM acl_rules WHERE id = " + id);
  const auto check = tampered(*store);
  CHECK(check.entity == "rule " + id);
  CHECK(check.bad_seq == granted);
  CHECK(check.problem == "rule " + id + " is missing, but row " + std::to_string(granted) +
                             " recorded it (deleted outside the registry)");
}

TEST_CASE("a removed rule put back behind the store is named with the row that removed it") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto rule = must(
      store->add_rule({SubjectKind::group, "default", "tmp/#", 1, RuleEffect::allow, 0}, kAlice));
  must(store->remove_rule(rule.id, kAlice));
  const auto id = std::to_string(rule.id);
  const auto removal = seq_of(*store, "acl.remove", id);
  require_intact(*store, dir);
  raw_exec(dir,
           "INSERT INTO acl_rules (id, group_name, access, pattern, effect, priority, created_at) "
           "VALUES (" +
               id + ", 'default', 1, 'tmp/#', 'allow', 0, " + std::to_string(kNow) + ")");
  const auto check = tampered(*store);
  CHECK(check.entity == "rule " + id);
  CHECK(check.bad_seq == removal);
  CHECK(contains(check.problem, "exists, but row " + std::to_string(removal) + " removed it"));
}

TEST_CASE("a device inserted behind the store has no audit row behind it") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  raw_exec(dir,
           "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
           "updated_at, metadata) VALUES ('ghost', 'ghost', '', '', '', 'active', 1, 1, '{}')");
  const auto check = tampered(*store);
  CHECK(check.entity == "device ghost");
  CHECK_FALSE(check.bad_seq.has_value());
  CHECK(check.problem == "device ghost has no audit row behind it (added outside the registry)");
}

TEST_CASE("a device moved to another group behind the store is named with its newest row") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  // A device's groups are the default group and its type's: changing the type moves it.
  const auto registered = seq_of(*store, "device.register", "dev-2");
  raw_exec(dir, "UPDATE devices SET type = 'admins' WHERE id = 'dev-2'");
  const auto check = tampered(*store);
  CHECK(check.entity == "device dev-2");
  CHECK(check.bad_seq == registered);
  CHECK(contains(check.problem, "differs from row " + std::to_string(registered)));
}

TEST_CASE("a group and a token inserted behind the store have no audit row behind them") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  SECTION("a group") {
    raw_exec(dir, "INSERT INTO groups (name, description, created_at) VALUES ('backdoor', '', 1)");
    const auto check = tampered(*store);
    CHECK(check.entity == "group backdoor");
    CHECK(contains(check.problem, "has no audit row behind it"));
  }
  SECTION("an operator token") {
    raw_exec(dir,
             "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ('mallory', "
             "'operator', '" +
                 std::string(64, 'e') + "', 1)");
    const auto check = tampered(*store);
    CHECK(check.entity == "token mallory");
    CHECK(contains(check.problem, "has no audit row behind it"));
  }
  SECTION("a revoked token brought back") {
    const auto revoked = seq_of(*store, "token.revoke", "viewer");
    raw_exec(dir, "UPDATE api_tokens SET revoked_at = NULL WHERE name = 'viewer'");
    const auto check = tampered(*store);
    CHECK(check.entity == "token viewer");
    CHECK(check.bad_seq == revoked);
  }
}

TEST_CASE("a change behind the store that a later write carried along is still named") {
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  const auto disabled = seq_of(*store, "device.disable", "dev-off");
  raw_exec(dir, "UPDATE devices SET status = 'active' WHERE id = 'dev-off'");
  // The operator changes the device's location: the new row records the state it found, the
  // status enabled behind its back included. The row's "before" betrays it.
  DeviceUpdate update;
  update.location = "basement";
  must(store->update_device("dev-off", update, kAlice));
  const auto updated = seq_of(*store, "device.update", "dev-off");
  const auto check = tampered(*store);
  CHECK(check.entity == "device dev-off");
  CHECK(check.bad_seq == updated);
  CHECK(check.problem == "row " + std::to_string(updated) + " found device dev-off not as row " +
                             std::to_string(disabled) +
                             " left it (changed outside the registry in between)");
}

TEST_CASE("an entity's key written behind the store is shown escaped") {
  TempDir dir;
  auto store = open_test_store(dir);
  raw_exec(dir,
           "INSERT INTO groups (name, description, created_at) VALUES ('evil\n\x1b[2Jrow', '', 1)");
  const auto check = tampered(*store);
  CHECK(check.entity == "group evil\\x0a\\x1b[2Jrow");
  CHECK(check.problem.find('\n') == std::string::npos);
  CHECK(check.problem.find('\x1b') == std::string::npos);
}

TEST_CASE("record_event refuses the keys the store records state under") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto rows = must(store->audit_list(0)).size();
  // A row that claimed a state would let a caller vouch for a change it never made.
  require_error(store->record_event("note", "x", R"({"state":{"device:x":[null,null]}})", kAlice),
                Errc::invalid_input, "state");
  require_error(store->record_event("note", "x", R"({"attest":{}})", kAlice), Errc::invalid_input,
                "state");
  require_error(store->record_event("state.attest", "x", "{}", kAlice), Errc::invalid_input,
                "state");
  CHECK(must(store->audit_list(0)).size() == rows);
  CHECK(store->record_event("note", "x", R"({"statement":1})", kAlice).ok());
}

TEST_CASE("a registry from version 3 is attested at its upgrade and then verified") {
  TempDir dir;
  {
    auto store = open_test_store(dir);
    long_history(*store);
  }
  // As version 3 left a registry: the same tables, and a device its rows record nothing of.
  // (Claims came with version 5: their table goes, the migration makes it again.)
  raw_exec(dir, "DROP TABLE claims; UPDATE meta SET schema_version = 3");
  raw_exec(dir,
           "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
           "updated_at, metadata) VALUES ('old-1', 'old-1', '', '', '', 'active', 1, 1, '{}')");
  // A reader (the broker) waits for the upgrade: it reads only what the log vouches for.
  require_error(open_store(test_location(dir), OpenMode::read_only), Errc::corrupt,
                "open it once with onboardctl");

  auto store = open_test_store(dir);
  CHECK(raw_int64(dir, "SELECT schema_version FROM meta") == sql::kSchemaVersion);
  const auto rows = must(store->audit_list(0));
  REQUIRE(rows.back().action == "registry.migrate");
  const auto details = nlohmann::json::parse(rows.back().details);
  CHECK(details["from_version"] == 3);
  CHECK(details["attest"]["part"] == 1);
  CHECK(details["attest"]["entities"].size() == static_cast<std::size_t>(entities(dir)));
  CHECK(details["attest"]["entities"].contains("device:old-1"));
  require_intact(*store, dir);
  require_intact(*must(open_store(test_location(dir), OpenMode::read_only)), dir);

  // From there on, a change behind the store shows against the migration's row.
  raw_exec(dir, "UPDATE devices SET status = 'disabled' WHERE id = 'old-1'");
  const auto check = tampered(*store);
  CHECK(check.entity == "device old-1");
  CHECK(check.bad_seq == rows.back().seq);
}

TEST_CASE("a large registry is attested in parts and each part counts") {
  TempDir dir;
  {
    auto store = open_test_store(dir);
    must(store->register_device(new_device("first"), test_certificate("first"), kAlice));
  }
  raw_exec(dir, "DROP TABLE claims; UPDATE meta SET schema_version = 3");
  // More entities than one row holds, written as version 3 might have: straight into the tables.
  std::string insert;
  for (int i = 0; i < 1200; ++i) {
    insert +=
        "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
        "updated_at, metadata) VALUES ('bulk-" +
        std::to_string(i) + "', 'b', '', '', '', 'active', 1, 1, '{}');";
  }
  raw_exec(dir, insert);
  auto store = open_test_store(dir);
  const auto rows = must(store->audit_list(0));
  REQUIRE(rows.size() >= 3);
  const auto& migrate = rows[rows.size() - 2];
  const auto& second = rows.back();
  CHECK(migrate.action == "registry.migrate");
  CHECK(second.action == "state.attest");
  CHECK(nlohmann::json::parse(migrate.details)["attest"]["entities"].size() == 1000);
  const auto part2 = nlohmann::json::parse(second.details)["attest"];
  CHECK(part2["part"] == 2);
  CHECK(part2["entities"].size() == static_cast<std::size_t>(entities(dir) - 1000));
  require_intact(*store, dir);

  // Devices are attested in id order: bulk-999 falls in the second part.
  REQUIRE(part2["entities"].contains("device:bulk-999"));
  raw_exec(dir, "DELETE FROM devices WHERE id = 'bulk-999'");
  const auto check = tampered(*store);
  CHECK(check.entity == "device bulk-999");
  CHECK(check.bad_seq == second.seq);
  CHECK(contains(check.problem, "is missing, but row " + std::to_string(second.seq)));
}

TEST_CASE("a state record edited with its row's hash recomputed breaks the chain") {
  // The digests are covered by the row's hash: the attacker's way round them is to rewrite the
  // row, which the next row's link (or the head) still shows.
  TempDir dir;
  auto store = open_test_store(dir);
  long_history(*store);
  const auto disabled = seq_of(*store, "device.disable", "dev-off");
  raw_exec(dir, "UPDATE devices SET status = 'active' WHERE id = 'dev-off'");
  raw_exec(dir, "UPDATE audit_events SET details = '{}' WHERE seq = " + std::to_string(disabled));
  const auto check = tampered(*store);
  CHECK(check.entity.empty());
  CHECK(check.bad_seq == disabled);
  CHECK(check.problem == "row " + std::to_string(disabled) + " was edited");
}

TEST_CASE("a registry copied to the other backend verifies, and a tampered one is not copied",
          "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir dir;
  const Location source{Backend::sqlite, (dir / "source.db").string()};
  long_history(*must(open_store(source, OpenMode::read_write)));
  const Location target{Backend::postgresql, onboard::test::fresh_test_database("audit_state")};
  must(copy_registry(source, target, kNow));
  auto copied = must(open_store(target, OpenMode::read_write));
  const auto check = must(copied->verify_audit());
  INFO(check.problem);
  CHECK(check.ok());
  CHECK(check.entities_checked ==
        must(must(open_store(source, OpenMode::read_only))->verify_audit()).entities_checked);
  // The copy goes on: a new write verifies, and a change behind it shows on PostgreSQL too.
  must(copied->set_device_enabled("dev-off", true, kAlice));
  CHECK(must(copied->verify_audit()).ok());
  must(registry::pg::connect(target, {}))
      ->exec("UPDATE devices SET status = 'disabled' WHERE id = 'dev-off'");
  CHECK(must(copied->verify_audit()).entity == "device dev-off");

  SQLite::Database(source.target, SQLite::OPEN_READWRITE)
      .exec("UPDATE devices SET status = 'active' WHERE id = 'dev-3'");
  const Location refused{Backend::postgresql, onboard::test::fresh_test_database("audit_state2")};
  require_error(copy_registry(source, refused, kNow), Errc::corrupt, "device dev-3 differs");
}
