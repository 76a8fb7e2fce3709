#include "registry/sqlite_store.h"

#include <SQLiteCpp/Database.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/registry/fixtures.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::kAlice;
using onboard::test::kNow;
using onboard::test::must;
using onboard::test::new_device;
using onboard::test::open_test_store;
using onboard::test::raw_exec;
using onboard::test::raw_int64;
using onboard::test::registry_path;
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;
using onboard::test::test_location;

namespace {

Device register_one(Store& store, const std::string& id, const std::string& type = "") {
  return must(store.register_device(new_device(id, type), test_certificate(id), kAlice));
}

// Everything a change leaves behind, counted through a raw connection so that nothing the
// Store API might hide is missed.
struct Footprint {
  std::int64_t devices, certificates, groups, rules, audit_rows, changes, change_seq;
  bool operator==(const Footprint&) const = default;
};

Footprint footprint(const TempDir& dir) {
  auto count = [&](const char* sql) { return raw_int64(dir, sql); };
  return Footprint{
      count("SELECT count(*) FROM devices"),      count("SELECT count(*) FROM certificates"),
      count("SELECT count(*) FROM groups"),       count("SELECT count(*) FROM acl_rules"),
      count("SELECT count(*) FROM audit_events"), count("SELECT count(*) FROM changes"),
      count("SELECT change_seq FROM meta")};
}

}  // namespace

// --- opening ---------------------------------------------------------------------------------

TEST_CASE(
    "a fresh registry has the default group whose one rule allows readwrite on devices/%d/#") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto groups = must(store->list_groups());
  REQUIRE(groups.size() == 1);
  CHECK(groups[0].name == "default");
  const auto rules = must(store->rules_for_subject(SubjectKind::group, "default"));
  REQUIRE(rules.size() == 1);
  CHECK(rules[0].pattern == "devices/%d/#");
  CHECK(rules[0].access == kAccessReadWrite);
  CHECK(rules[0].effect == RuleEffect::allow);
  CHECK(rules[0].priority == 0);
  const auto audit = must(store->audit_list(0));
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].action == "registry.create");
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a reopened registry keeps its data and is not migrated again") {
  TempDir dir;
  register_one(*open_test_store(dir), "dev-1");
  const auto before = footprint(dir);
  auto store = open_test_store(dir);
  CHECK(must(store->get_device("dev-1")).id == "dev-1");
  CHECK(footprint(dir) == before);
}

TEST_CASE("a registry file is in WAL mode and carries the registry's application id", "[sqlite]") {
  TempDir dir;
  open_test_store(dir);
  SQLite::Database raw(registry_path(dir), SQLite::OPEN_READONLY);
  CHECK(raw.execAndGet("PRAGMA journal_mode").getString() == "wal");
  CHECK(raw.execAndGet("PRAGMA application_id").getInt() == 0x4F4E4244);
}

TEST_CASE("a registry with a newer schema version is refused with a clear message") {
  TempDir dir;
  open_test_store(dir);
  raw_exec(dir, "UPDATE meta SET schema_version = 99");
  for (auto mode : {OpenMode::read_write, OpenMode::read_only}) {
    auto opened = open_store(test_location(dir), mode);
    require_error(opened, Errc::corrupt, "schema version 99, newer than this build understands");
  }
}

TEST_CASE("a registry with an unknown schema version below 1 is refused") {
  TempDir dir;
  open_test_store(dir);
  raw_exec(dir, "UPDATE meta SET schema_version = 0");
  require_error(open_store(test_location(dir), OpenMode::read_write), Errc::corrupt,
                "unknown schema version 0");
}

TEST_CASE("a file that is not an SQLite database is refused and left untouched", "[sqlite]") {
  TempDir dir;
  const std::string text = "this is a CA key, not a database\n";
  std::ofstream(registry_path(dir)) << text;
  for (auto mode : {OpenMode::read_write, OpenMode::read_only}) {
    require_error(open_sqlite_store(registry_path(dir), mode), Errc::corrupt,
                  "not an SQLite database");
  }
  std::ifstream in(registry_path(dir));
  std::stringstream content;
  content << in.rdbuf();
  CHECK(content.str() == text);
}

TEST_CASE("an SQLite database that is not a registry is refused and left untouched", "[sqlite]") {
  TempDir dir;
  raw_exec(dir, "CREATE TABLE photos (id INTEGER PRIMARY KEY)");
  require_error(open_store(test_location(dir), OpenMode::read_write), Errc::corrupt,
                "not a mosquitto-onboard registry");
  SQLite::Database raw(registry_path(dir), SQLite::OPEN_READONLY);
  CHECK(raw.execAndGet("SELECT count(*) FROM sqlite_schema").getInt() == 1);
  CHECK(raw.execAndGet("PRAGMA journal_mode").getString() == "delete");
}

TEST_CASE("opening a missing or empty registry read-only is not found and creates nothing",
          "[sqlite]") {
  TempDir dir;
  require_error(open_sqlite_store(registry_path(dir), OpenMode::read_only), Errc::not_found,
                "no registry at");
  CHECK_FALSE(std::filesystem::exists(registry_path(dir)));
  std::ofstream{registry_path(dir)};  // zero bytes: an empty SQLite database
  require_error(open_sqlite_store(registry_path(dir), OpenMode::read_only), Errc::not_found,
                "not an initialised registry");
}

TEST_CASE("a read-only store reads everything but every write is refused and nothing changes") {
  TempDir dir;
  register_one(*open_test_store(dir), "dev-1");
  const auto before = footprint(dir);
  auto reader = open_test_store(dir, OpenMode::read_only);
  CHECK(must(reader->get_device("dev-1")).id == "dev-1");
  CHECK(must(reader->verify_audit()).ok());

  require_error(reader->register_device(new_device("dev-2"), test_certificate("dev-2"), kAlice),
                Errc::io, "read-only");
  require_error(reader->set_device_enabled("dev-1", false, kAlice), Errc::io);
  require_error(reader->revoke_device("dev-1", RevocationReason::unspecified, kAlice), Errc::io);
  require_error(reader->create_group("g", "", kAlice), Errc::io);
  require_error(reader->next_crl_number(kAlice), Errc::io);
  CHECK(footprint(dir) == before);
}

// --- devices ---------------------------------------------------------------------------------

TEST_CASE("a registered device reads back with its fields, its certificate and its defaults") {
  TempDir dir;
  auto store = open_test_store(dir);
  NewDevice input = new_device("sensor-01", "thermo");
  input.location = "hall 3";
  input.firmware = "1.2.3";
  input.metadata = R"({ "rack": 7,  "tags": ["a"] })";
  const auto cert = test_certificate("sensor-01");
  const auto registered = must(store->register_device(input, cert, kAlice));

  const auto read = must(store->get_device("sensor-01"));
  CHECK(read.id == "sensor-01");
  CHECK(read.name == "sensor-01");  // an empty name defaults to the id
  CHECK(read.type == "thermo");
  CHECK(read.location == "hall 3");
  CHECK(read.firmware == "1.2.3");
  CHECK(read.status == DeviceStatus::active);
  CHECK(read.created_at == kNow);
  CHECK(read.updated_at == kNow);
  CHECK(read.metadata == R"({"rack":7,"tags":["a"]})");
  CHECK(registered.metadata == read.metadata);

  const auto certs = must(store->certificates_of("sensor-01"));
  REQUIRE(certs.size() == 1);
  CHECK(certs[0].serial_hex == cert.serial_hex);
  CHECK(certs[0].sha256_fingerprint == cert.sha256_fingerprint);
  CHECK(certs[0].issuer == cert.issuer);
  CHECK(certs[0].subject == cert.subject);
  CHECK(certs[0].not_after == cert.not_after);
  CHECK(certs[0].pem == cert.pem);
  CHECK(certs[0].status == CertificateStatus::active);
  CHECK_FALSE(certs[0].revoked_at);

  const auto audit = must(store->audit_list(0, 1));
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].action == "device.register");
  CHECK(audit[0].actor == "alice");
  CHECK(audit[0].subject == "sensor-01");
}

TEST_CASE("a device of a new type creates the type's group, whose rules then apply to it") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "t-1", "thermo");
  const auto groups = must(store->list_groups());
  REQUIRE(groups.size() == 2);
  CHECK(groups[1].name == "thermo");
  register_one(*store, "t-2", "thermo");  // the group exists now: not created twice
  CHECK(must(store->list_groups()).size() == 2);

  must(store->add_rule(
      {SubjectKind::group, "thermo", "thermo/+/cmd", kAccessSubscribe, RuleEffect::allow, 5},
      kAlice));
  must(store->add_rule({SubjectKind::device, "t-1", "debug/#", kAccessPublish, RuleEffect::deny, 9},
                       kAlice));
  const auto rules = must(store->rules_for_device("t-1"));
  REQUIRE(rules.size() == 3);  // sorted by priority, highest first
  CHECK(rules[0].subject_kind == SubjectKind::device);
  CHECK(rules[0].subject == "t-1");
  CHECK(rules[0].effect == RuleEffect::deny);
  CHECK(rules[1].subject == "thermo");
  CHECK(rules[2].subject == "default");
  CHECK(must(store->rules_for_device("t-2")).size() == 2);  // not t-1's own rule
}

TEST_CASE("an untyped device gets only the default group's rules") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "plain");
  const auto rules = must(store->rules_for_device("plain"));
  REQUIRE(rules.size() == 1);
  CHECK(rules[0].subject == "default");
}

TEST_CASE("devices list in id order, page by the last id seen and filter by status and type") {
  TempDir dir;
  auto store = open_test_store(dir);
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "dev-%02d", i);
    register_one(*store, id, i % 2 == 0 ? "even" : "odd");
  }
  must(store->set_device_enabled("dev-03", false, kAlice));
  must(store->revoke_device("dev-04", RevocationReason::unspecified, kAlice));

  std::vector<std::string> seen;
  DeviceFilter page;
  page.limit = 10;
  for (;;) {
    const auto devices = must(store->list_devices(page));
    if (devices.empty()) break;
    CHECK(devices.size() <= 10);
    for (const auto& d : devices) seen.push_back(d.id);
    page.after_id = devices.back().id;
  }
  REQUIRE(seen.size() == 25);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(seen.front() == "dev-00");

  DeviceFilter odd;
  odd.type = "odd";
  odd.limit = 0;
  CHECK(must(store->list_devices(odd)).size() == 12);
  CHECK(must(store->count_devices(odd)) == 12);

  DeviceFilter disabled;
  disabled.status = DeviceStatus::disabled;
  const auto off = must(store->list_devices(disabled));
  REQUIRE(off.size() == 1);
  CHECK(off[0].id == "dev-03");

  DeviceFilter active_even;
  active_even.status = DeviceStatus::active;
  active_even.type = "even";
  CHECK(must(store->count_devices(active_even)) == 12);  // 13 even, dev-04 revoked
  CHECK(must(store->count_devices({})) == 25);

  // Each listed device carries its current certificate's expiry (none for the revoked one), and
  // expiring_by keeps those that expire by then: every unrevoked one, or none.
  DeviceFilter all;
  all.limit = 0;
  for (const auto& d : must(store->list_devices(all))) {
    INFO(d.id);
    if (d.id == "dev-04") {
      CHECK_FALSE(d.certificate_not_after.has_value());
    } else {
      CHECK(d.certificate_not_after == kNow + 365 * 86400);
    }
  }
  DeviceFilter expiring = all;
  expiring.expiring_by = kNow + 365 * 86400;
  CHECK(must(store->list_devices(expiring)).size() == 24);
  CHECK(must(store->count_devices(expiring)) == 24);
  expiring.expiring_by = kNow + 365 * 86400 - 1;
  CHECK(must(store->list_devices(expiring)).empty());
  CHECK(must(store->count_devices(expiring)) == 0);
}

TEST_CASE("registering a duplicate device id is a conflict and writes nothing") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dup");
  const auto before = footprint(dir);
  require_error(
      store->register_device(new_device("dup", "newtype"), test_certificate("dup"), kAlice),
      Errc::conflict, "device dup already exists");
  CHECK(footprint(dir) == before);
}

TEST_CASE("a duplicate certificate fingerprint rolls back the device row written before it") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto first = test_certificate("one");
  must(store->register_device(new_device("one"), first, kAlice));
  const auto before = footprint(dir);

  auto clash = test_certificate("two");
  clash.sha256_fingerprint = first.sha256_fingerprint;
  // A new type too: its group row is written before the certificate fails, and must go as well.
  require_error(store->register_device(new_device("two", "brandnew"), clash, kAlice),
                Errc::conflict, "fingerprint");
  CHECK(footprint(dir) == before);
  require_error(store->get_device("two"), Errc::not_found);

  auto same_serial = test_certificate("two");
  same_serial.serial_hex = first.serial_hex;
  require_error(store->register_device(new_device("two"), same_serial, kAlice), Errc::conflict,
                "serial");
  CHECK(footprint(dir) == before);
}

TEST_CASE("a failure at the very end of a registration leaves nothing behind") {
  TempDir dir;
  auto store = open_test_store(dir);
  // Simulates a failure on the last write of the transaction (the audit row), after the device,
  // group and certificate rows were written.
  if (onboard::test::kTestBackend == Backend::sqlite) {
    raw_exec(dir,
             "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events "
             "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END");
  } else {
    raw_exec(dir,
             "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN RAISE EXCEPTION 'simulated failure'; END $$; "
             "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events "
             "FOR EACH ROW EXECUTE FUNCTION fail()");
  }
  const auto before = footprint(dir);
  auto result =
      store->register_device(new_device("late", "latetype"), test_certificate("late"), kAlice);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().message.find("register device") == 0);
  CHECK(footprint(dir) == before);

  raw_exec(dir, onboard::test::kTestBackend == Backend::sqlite
                    ? "DROP TRIGGER fail_audit"
                    : "DROP TRIGGER fail_audit ON audit_events");
  register_one(*store, "late", "latetype");  // the store is still usable afterwards
}

TEST_CASE("invalid input is refused before anything is written") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto before = footprint(dir);
  require_error(store->register_device(new_device("bad/id"), test_certificate("x"), kAlice),
                Errc::invalid_input, "device id contains '/'");
  require_error(store->register_device(new_device("ok", "bad type"), test_certificate("x"), kAlice),
                Errc::invalid_input, "group name");
  NewDevice not_object = new_device("ok");
  not_object.metadata = "[1, 2]";
  require_error(store->register_device(not_object, test_certificate("x"), kAlice),
                Errc::invalid_input, "metadata must be a JSON object");
  NewDevice not_json = new_device("ok");
  not_json.metadata = "{";
  require_error(store->register_device(not_json, test_certificate("x"), kAlice),
                Errc::invalid_input, "not valid JSON");
  NewDevice deep = new_device("ok");
  deep.metadata = R"({"a":)" + std::string(100, '[') + std::string(100, ']') + "}";
  require_error(store->register_device(deep, test_certificate("x"), kAlice), Errc::invalid_input,
                "nested");
  NewDevice huge = new_device("ok");
  huge.metadata = R"({"a":")" + std::string(70 * 1024, 'x') + R"("})";
  require_error(store->register_device(huge, test_certificate("x"), kAlice), Errc::invalid_input,
                "64 KiB");
  auto bad_fingerprint = test_certificate("ok");
  bad_fingerprint.sha256_fingerprint = "abc";
  require_error(store->register_device(new_device("ok"), bad_fingerprint, kAlice),
                Errc::invalid_input, "fingerprint");
  auto lower_serial = test_certificate("ok");
  lower_serial.serial_hex = "0a";
  require_error(store->register_device(new_device("ok"), lower_serial, kAlice), Errc::invalid_input,
                "serial");
  auto backwards = test_certificate("ok");
  backwards.not_after = backwards.not_before - 1;
  require_error(store->register_device(new_device("ok"), backwards, kAlice), Errc::invalid_input);
  require_error(store->register_device(new_device("ok"), test_certificate("ok"), Actor{"", kNow}),
                Errc::invalid_input, "actor");
  CHECK(footprint(dir) == before);
}

TEST_CASE("an unknown device is not found by every call that names one") {
  TempDir dir;
  auto store = open_test_store(dir);
  require_error(store->get_device("ghost"), Errc::not_found, "device ghost does not exist");
  require_error(store->certificates_of("ghost"), Errc::not_found);
  require_error(store->rules_for_device("ghost"), Errc::not_found);
  require_error(store->set_device_enabled("ghost", false, kAlice), Errc::not_found);
  require_error(store->revoke_device("ghost", RevocationReason::unspecified, kAlice),
                Errc::not_found);
  require_error(store->add_certificate("ghost", test_certificate("ghost"), true, kAlice),
                Errc::not_found);
}

TEST_CASE("disabling and enabling change the status once each, and a revoked device refuses both") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  CHECK(must(store->set_device_enabled("dev", false, Actor{"bob", kNow + 10})));
  const auto disabled = must(store->get_device("dev"));
  CHECK(disabled.status == DeviceStatus::disabled);
  CHECK(disabled.updated_at == kNow + 10);

  const auto before = footprint(dir);
  CHECK_FALSE(must(store->set_device_enabled("dev", false, kAlice)));  // already disabled
  CHECK(footprint(dir) == before);

  CHECK(must(store->set_device_enabled("dev", true, kAlice)));
  CHECK(must(store->get_device("dev")).status == DeviceStatus::active);

  must(store->revoke_device("dev", RevocationReason::key_compromise, kAlice));
  require_error(store->set_device_enabled("dev", true, kAlice), Errc::conflict, "revoked");
  require_error(store->set_device_enabled("dev", false, kAlice), Errc::conflict, "revoked");
}

TEST_CASE("a device update changes only the given fields and audits each old and new value") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev", "sensor");
  DeviceUpdate update;
  update.name = "Boiler room sensor";
  update.location = "basement";
  update.firmware = "2.1.0";
  update.metadata = R"({ "rack": 4,  "floor": "B" })";
  const auto updated = must(store->update_device("dev", update, Actor{"bob", kNow + 20}));
  CHECK(updated.name == "Boiler room sensor");
  CHECK(updated.type == "sensor");  // not given: unchanged
  CHECK(updated.location == "basement");
  CHECK(updated.firmware == "2.1.0");
  CHECK(updated.metadata == R"({"floor":"B","rack":4})");  // stored compact, like registration
  CHECK(updated.updated_at == kNow + 20);
  CHECK(updated.created_at == kNow);
  const auto stored = must(store->get_device("dev"));
  CHECK(stored.name == updated.name);
  CHECK(stored.location == "basement");
  CHECK(stored.metadata == updated.metadata);

  const auto events = must(store->audit_list(0));
  const auto& last = events.back();
  CHECK(last.action == "device.update");
  CHECK(last.actor == "bob");
  CHECK(last.subject == "dev");
  const auto details = nlohmann::json::parse(last.details);
  CHECK(details["changed"]["location"]["from"] == "");
  CHECK(details["changed"]["location"]["to"] == "basement");
  CHECK(details["changed"]["name"]["from"] == "dev");
  CHECK_FALSE(details["changed"].contains("type"));
  CHECK(must(store->verify_audit()).ok());

  // The same values again: nothing differs, nothing is written, not even an audit row.
  const auto before = footprint(dir);
  must(store->update_device("dev", update, kAlice));
  CHECK(footprint(dir) == before);

  // A name of "" is the id again, as at registration.
  DeviceUpdate unnamed;
  unnamed.name = "";
  CHECK(must(store->update_device("dev", unnamed, kAlice)).name == "dev");
}

TEST_CASE("a device update to a new type creates its group and is a change row, others are not") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev", "sensor");
  const auto seq = must(store->change_seq());
  DeviceUpdate where;
  where.location = "roof";
  must(store->update_device("dev", where, kAlice));
  CHECK(must(store->change_seq()) == seq);  // the broker holds no location: nothing to reload

  DeviceUpdate retype;
  retype.type = "valve";
  must(store->update_device("dev", retype, kAlice));
  const auto changes = must(store->changes_since(seq));
  REQUIRE(changes.size() == 2);
  CHECK(changes[0].kind == ChangeKind::group);
  CHECK(changes[0].subject == "valve");
  CHECK(changes[1].kind == ChangeKind::device);
  CHECK(changes[1].subject == "dev");
  const auto groups = must(store->list_groups());
  CHECK(
      std::any_of(groups.begin(), groups.end(), [](const Group& g) { return g.name == "valve"; }));
  CHECK(must(store->get_device("dev")).type == "valve");
  auto last = must(store->audit_list(0)).back();
  CHECK(nlohmann::json::parse(last.details)["created_group"] == true);

  DeviceUpdate untyped;
  untyped.type = "";
  CHECK(must(store->update_device("dev", untyped, kAlice)).type.empty());
  CHECK(must(store->changes_since(seq)).size() == 3);
}

TEST_CASE("a revoked or unknown device is not updated, and invalid values are refused first") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  register_one(*store, "gone");
  must(store->revoke_device("gone", RevocationReason::unspecified, kAlice));
  const auto before = footprint(dir);
  DeviceUpdate update;
  update.location = "lab";
  require_error(store->update_device("gone", update, kAlice), Errc::conflict, "revoked");
  require_error(store->update_device("ghost", update, kAlice), Errc::not_found, "ghost");
  require_error(store->update_device("a/b", update, kAlice), Errc::invalid_input);
  require_error(store->update_device("dev", DeviceUpdate{}, kAlice), Errc::invalid_input,
                "nothing to update");
  DeviceUpdate bad_type;
  bad_type.type = "a b";
  require_error(store->update_device("dev", bad_type, kAlice), Errc::invalid_input);
  DeviceUpdate bad_metadata;
  bad_metadata.metadata = "[1]";
  require_error(store->update_device("dev", bad_metadata, kAlice), Errc::invalid_input);
  CHECK(footprint(dir) == before);
  CHECK(must(store->get_device("dev")).location.empty());
}

TEST_CASE("revoking a device revokes all its active certificates and lists them for the CRL") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  const auto second = test_certificate("dev");
  must(store->add_certificate("dev", second, false, kAlice));
  register_one(*store, "bystander");

  const Actor revoker{"carol", kNow + 100};
  const auto outcome = must(store->revoke_device("dev", RevocationReason::key_compromise, revoker));
  CHECK_FALSE(outcome.already_revoked);
  CHECK(outcome.revoked_serials.size() == 2);

  CHECK(must(store->get_device("dev")).status == DeviceStatus::revoked);
  for (const auto& cert : must(store->certificates_of("dev"))) {
    CHECK(cert.status == CertificateStatus::revoked);
    CHECK(cert.revoked_at == kNow + 100);
    CHECK(cert.revocation_reason == RevocationReason::key_compromise);
  }
  const auto crl = must(store->revoked_certificates("CN=Onboard Test CA"));
  REQUIRE(crl.size() == 2);
  for (const auto& entry : crl) {
    CHECK(entry.revoked_at == kNow + 100);
    CHECK(entry.reason == RevocationReason::key_compromise);
  }
  CHECK(must(store->certificates_of("bystander"))[0].status == CertificateStatus::active);
  CHECK(must(store->audit_list(1, 4))[0].action == "device.revoke");
}

TEST_CASE("revoking a device twice says already revoked and writes nothing") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  must(store->revoke_device("dev", RevocationReason::unspecified, kAlice));
  const auto before = footprint(dir);
  const auto again =
      must(store->revoke_device("dev", RevocationReason::key_compromise, Actor{"bob", kNow + 5}));
  CHECK(again.already_revoked);
  CHECK(again.revoked_serials.empty());
  CHECK(footprint(dir) == before);
  CHECK(must(store->certificates_of("dev"))[0].revocation_reason == RevocationReason::unspecified);
}

TEST_CASE("renewal with supersede revokes the old certificate as superseded, without keeps both") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  const auto kept = must(store->add_certificate("dev", test_certificate("dev"), false, kAlice));
  CHECK(kept.superseded_serials.empty());
  CHECK(must(store->certificates_of("dev")).size() == 2);

  const Actor later{"alice", kNow + 50};
  const auto renewal = test_certificate("dev");
  const auto added = must(store->add_certificate("dev", renewal, true, later));
  CHECK(added.superseded_serials.size() == 2);
  CHECK(added.certificate.serial_hex == renewal.serial_hex);
  CHECK(added.certificate.device_id == "dev");

  const auto certs = must(store->certificates_of("dev"));
  REQUIRE(certs.size() == 3);
  CHECK(certs[0].revocation_reason == RevocationReason::superseded);
  CHECK(certs[1].revocation_reason == RevocationReason::superseded);
  CHECK(certs[0].revoked_at == kNow + 50);
  CHECK(certs[2].status == CertificateStatus::active);
  CHECK(certs[2].serial_hex == renewal.serial_hex);
  CHECK(must(store->get_device("dev")).status == DeviceStatus::active);
}

TEST_CASE("a renewal that clashes rolls back the superseding of the old certificate") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto original = test_certificate("dev");
  must(store->register_device(new_device("dev"), original, kAlice));
  const auto before = footprint(dir);
  require_error(store->add_certificate("dev", original, true, kAlice), Errc::conflict);
  CHECK(footprint(dir) == before);
  CHECK(must(store->certificates_of("dev"))[0].status == CertificateStatus::active);
}

TEST_CASE("a revoked device cannot receive a new certificate") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  must(store->revoke_device("dev", RevocationReason::unspecified, kAlice));
  require_error(store->add_certificate("dev", test_certificate("dev"), true, kAlice),
                Errc::conflict, "revoked");
}

TEST_CASE("a certificate is found by its fingerprint in any common spelling") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto cert = test_certificate("dev");
  must(store->register_device(new_device("dev"), cert, kAlice));
  CHECK(must(store->find_certificate_by_fingerprint(cert.sha256_fingerprint)).device_id == "dev");

  std::string colons;
  for (std::size_t i = 0; i < cert.sha256_fingerprint.size(); i += 2) {
    if (i > 0) colons += ':';
    colons += cert.sha256_fingerprint.substr(i, 2);
  }
  for (auto& c : colons) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(must(store->find_certificate_by_fingerprint(colons)).serial_hex == cert.serial_hex);

  require_error(store->find_certificate_by_fingerprint(std::string(64, 'e')), Errc::not_found);
  require_error(store->find_certificate_by_fingerprint("zz"), Errc::invalid_input);
}

// --- rules and groups --------------------------------------------------------------------------

TEST_CASE("rules attach to a device or a group, come back with their ids and can be removed") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "dev");
  const auto rule = must(store->add_rule(
      {SubjectKind::device, "dev", "telemetry/%d", kAccessPublish, RuleEffect::allow, 3},
      Actor{"alice", kNow + 1}));
  CHECK(rule.id > 0);
  CHECK(rule.subject_kind == SubjectKind::device);
  CHECK(rule.created_at == kNow + 1);
  const auto listed = must(store->rules_for_subject(SubjectKind::device, "dev"));
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == rule.id);
  CHECK(listed[0].pattern == "telemetry/%d");
  CHECK(listed[0].access == kAccessPublish);
  CHECK(listed[0].priority == 3);

  const auto audit = must(store->audit_list(0));
  CHECK(audit.back().action == "acl.grant");
  CHECK(audit.back().subject == std::to_string(rule.id));

  must(store->remove_rule(rule.id, kAlice));
  CHECK(must(store->rules_for_subject(SubjectKind::device, "dev")).empty());
  CHECK(must(store->audit_list(0)).back().action == "acl.remove");
  require_error(store->remove_rule(rule.id, kAlice), Errc::not_found,
                "rule " + std::to_string(rule.id) + " does not exist");

  // Ids are never reused: the audit log names rules by id.
  const auto next = must(store->add_rule(
      {SubjectKind::device, "dev", "a/b", kAccessRead, RuleEffect::deny, 0}, kAlice));
  CHECK(next.id > rule.id);
  CHECK(must(store->audit_list(0)).back().action == "acl.deny");
}

TEST_CASE("a rule for an unknown device or group, or with a bad access mask, is refused") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto before = footprint(dir);
  require_error(
      store->add_rule({SubjectKind::device, "ghost", "a/#", kAccessRead, RuleEffect::allow, 0},
                      kAlice),
      Errc::not_found, "device ghost does not exist");
  require_error(
      store->add_rule({SubjectKind::group, "nobody", "a/#", kAccessRead, RuleEffect::allow, 0},
                      kAlice),
      Errc::not_found, "group nobody does not exist");
  require_error(
      store->add_rule({SubjectKind::group, "default", "a/#", 0, RuleEffect::allow, 0}, kAlice),
      Errc::invalid_input);
  require_error(
      store->add_rule({SubjectKind::group, "default", "a/#", 8, RuleEffect::allow, 0}, kAlice),
      Errc::invalid_input);
  require_error(store->add_rule(
                    {SubjectKind::group, "default", "", kAccessRead, RuleEffect::allow, 0}, kAlice),
                Errc::invalid_input);
  require_error(store->rules_for_subject(SubjectKind::group, "nobody"), Errc::not_found);
  CHECK(footprint(dir) == before);
}

TEST_CASE("groups are created once and listed by name") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto group = must(store->create_group("cameras", "all cameras", kAlice));
  CHECK(group.name == "cameras");
  require_error(store->create_group("cameras", "again", kAlice), Errc::conflict,
                "group cameras already exists");
  require_error(store->create_group("bad#name", "", kAlice), Errc::invalid_input, "group name");
  const auto groups = must(store->list_groups());
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].name == "cameras");
  CHECK(groups[0].description == "all cameras");
  CHECK(groups[1].name == "default");
  // A device whose type names the existing group joins it rather than creating it.
  register_one(*store, "cam-1", "cameras");
  CHECK(must(store->list_groups()).size() == 2);
}

// --- CRL, change feed, audit -----------------------------------------------------------------

TEST_CASE("CRL numbers strictly increase and record when the last one was issued") {
  TempDir dir;
  auto store = open_test_store(dir);
  CHECK(must(store->crl_state()).number == 0);
  CHECK_FALSE(must(store->crl_state()).last_issued_at);
  std::uint64_t previous = 0;
  for (int i = 1; i <= 5; ++i) {
    const auto number = must(store->next_crl_number(Actor{"alice", kNow + i}));
    CHECK(number > previous);
    previous = number;
  }
  CHECK(previous == 5);
  const auto state = must(store->crl_state());
  CHECK(state.number == 5);
  CHECK(state.last_issued_at == kNow + 5);
  // The number survives reopening: it must never go back.
  CHECK(must(open_test_store(dir)->next_crl_number(kAlice)) == 6);
}

TEST_CASE("the change sequence grows with every change and changes_since returns the rows after") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto start = must(store->change_seq());
  CHECK(must(store->changes_since(start)).empty());

  register_one(*store, "dev", "thermo");  // a new group and a device: two change rows
  const auto after_register = must(store->change_seq());
  CHECK(after_register == start + 2);
  const auto registered = must(store->changes_since(start));
  REQUIRE(registered.size() == 2);
  CHECK(registered[0].kind == ChangeKind::group);
  CHECK(registered[0].subject == "thermo");
  CHECK(registered[1].kind == ChangeKind::device);
  CHECK(registered[1].subject == "dev");
  CHECK(registered[1].seq == after_register);

  must(store->set_device_enabled("dev", false, kAlice));
  must(store->add_rule({SubjectKind::group, "thermo", "t/#", kAccessRead, RuleEffect::allow, 0},
                       kAlice));
  must(store->next_crl_number(kAlice));
  const auto later = must(store->changes_since(after_register));
  REQUIRE(later.size() == 3);
  CHECK(later[0].kind == ChangeKind::device);
  CHECK(later[1].kind == ChangeKind::group);
  CHECK(later[1].subject == "thermo");
  CHECK(later[2].kind == ChangeKind::crl);
  CHECK(later[0].seq < later[1].seq);
  CHECK(later[1].seq < later[2].seq);
  CHECK(must(store->change_seq()) == later[2].seq);

  // A call that changes nothing does not bump the sequence.
  must(store->set_device_enabled("dev", false, kAlice));
  CHECK(must(store->change_seq()) == later[2].seq);
}

TEST_CASE("verify_audit passes on an untouched log and names an edited row") {
  TempDir dir;
  auto store = open_test_store(dir);
  for (int i = 0; i < 5; ++i) register_one(*store, "dev-" + std::to_string(i));
  const auto clean = must(store->verify_audit());
  CHECK(clean.ok());
  CHECK(clean.rows_checked == 6);

  raw_exec(dir, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3");
  const auto check = must(store->verify_audit());
  CHECK(check.bad_seq == 3);
  CHECK(check.problem == "row 3 was edited");
}

TEST_CASE("verify_audit names a deleted middle row") {
  TempDir dir;
  auto store = open_test_store(dir);
  for (int i = 0; i < 5; ++i) register_one(*store, "dev-" + std::to_string(i));
  raw_exec(dir, "DELETE FROM audit_events WHERE seq = 4");
  const auto check = must(store->verify_audit());
  CHECK(check.bad_seq == 4);
  CHECK(check.problem == "row 4 is missing");
}

TEST_CASE("verify_audit names a deleted newest row") {
  TempDir dir;
  auto store = open_test_store(dir);
  for (int i = 0; i < 5; ++i) register_one(*store, "dev-" + std::to_string(i));
  raw_exec(dir, "DELETE FROM audit_events WHERE seq = 6");
  const auto check = must(store->verify_audit());
  CHECK(check.bad_seq == 6);
  CHECK(check.problem.find("row 6 is missing") == 0);
}

// --- errors and concurrency ------------------------------------------------------------------

TEST_CASE("SQLite result codes become typed errors with safe messages", "[sqlite]") {
  using detail::sqlite_error;
  CHECK(sqlite_error(SQLITE_FULL, "register device").code == Errc::io);
  CHECK(sqlite_error(SQLITE_FULL, "register device").message ==
        "register device: the disk is full");
  CHECK(sqlite_error(SQLITE_IOERR_WRITE, "x").code == Errc::io);
  // On a full disk, opening fails growing the -shm file: the message must say why.
  CHECK(sqlite_error(SQLITE_IOERR_SHMSIZE, "open registry").message ==
        "open registry: the disk is full (the registry's shared-memory file -shm cannot grow)");
  CHECK(sqlite_error(SQLITE_IOERR_WRITE, "x").message ==
        "x: an I/O error occurred on the registry file");  // other I/O errors say no more
  CHECK(sqlite_error(SQLITE_READONLY, "x").code == Errc::io);
  CHECK(sqlite_error(SQLITE_BUSY, "x").code == Errc::io);
  CHECK(sqlite_error(SQLITE_CANTOPEN, "x").code == Errc::io);
  CHECK(sqlite_error(SQLITE_NOTADB, "x").code == Errc::corrupt);
  CHECK(sqlite_error(SQLITE_CORRUPT, "x").code == Errc::corrupt);
  CHECK(sqlite_error(SQLITE_CONSTRAINT_UNIQUE, "x").code == Errc::conflict);
  CHECK(sqlite_error(SQLITE_CONSTRAINT_FOREIGNKEY, "x").code == Errc::not_found);
  CHECK(sqlite_error(SQLITE_CONSTRAINT_CHECK, "x").code == Errc::internal);
  CHECK(sqlite_error(SQLITE_MISUSE, "x").code == Errc::internal);
  CHECK(sqlite_error(-1, "x").code == Errc::internal);
}

TEST_CASE("a disk that fills up mid-write is an io error and leaves nothing behind", "[sqlite]") {
  TempDir dir;
  auto store = open_test_store(dir);
  register_one(*store, "before");
  const auto before = footprint(dir);

  // A file size limit stands in for a full disk: writes past it fail as they would with ENOSPC.
  // Process-wide, so it is lifted again before any assertion can throw.
  std::uintmax_t largest = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    largest = std::max(largest, entry.file_size());
  }
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  const auto saved_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(largest + 16 * 1024);
  REQUIRE(setrlimit(RLIMIT_FSIZE, &tight) == 0);
  auto big = test_certificate("big");
  big.pem += std::string(2 * 1024 * 1024, 'x');  // more than the limit leaves room for
  auto result = store->register_device(new_device("big"), big, kAlice);
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, saved_handler);

  require_error(result, Errc::io, "register device");
  CHECK(footprint(dir) == before);
  register_one(*store, "after");  // the store recovers once there is room again
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("two processes creating the same registry at once both succeed and create it once") {
  TempDir dir;
  std::vector<std::string> errors_a, errors_b;
  auto opener = [&](std::vector<std::string>& errors) {
    auto opened = open_store(test_location(dir), OpenMode::read_write);
    if (!opened.ok()) errors.push_back(opened.error().message);
  };
  std::thread a(opener, std::ref(errors_a));
  std::thread b(opener, std::ref(errors_b));
  a.join();
  b.join();
  CHECK(errors_a == std::vector<std::string>{});
  CHECK(errors_b == std::vector<std::string>{});
  const auto f = footprint(dir);
  CHECK(f.audit_rows == 1);
  CHECK(f.groups == 1);
  CHECK(f.rules == 1);
}

TEST_CASE("two writers on separate connections register 200 devices each without an error") {
  TempDir dir;
  open_test_store(dir);
  auto writer = [&](std::string prefix, std::vector<std::string>& errors) {
    auto opened = open_store(test_location(dir), OpenMode::read_write);
    if (!opened.ok()) {
      errors.push_back(opened.error().message);
      return;
    }
    auto& store = *opened.value();
    for (int i = 0; i < 200; ++i) {
      const std::string id = prefix + std::to_string(i);
      auto result = store.register_device(new_device(id, prefix), test_certificate(id), kAlice);
      if (!result.ok()) errors.push_back(result.error().message);
    }
  };
  std::vector<std::string> errors_a, errors_b;
  std::thread a(writer, "a-", std::ref(errors_a));
  std::thread b(writer, "b-", std::ref(errors_b));
  a.join();
  b.join();
  CHECK(errors_a.empty());
  CHECK(errors_b.empty());
  if (!errors_a.empty()) WARN(errors_a.front());
  if (!errors_b.empty()) WARN(errors_b.front());

  auto store = open_test_store(dir);
  CHECK(must(store->count_devices({})) == 400);
  const auto f = footprint(dir);
  CHECK(f.certificates == 400);
  CHECK(f.audit_rows == 401);
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a reader in another thread never sees a device without its certificate") {
  TempDir dir;
  open_test_store(dir);
  std::atomic<bool> done{false};
  std::vector<std::string> errors;
  std::thread writer([&] {
    auto opened = open_store(test_location(dir), OpenMode::read_write);
    if (!opened.ok()) {
      errors.push_back(opened.error().message);
    } else {
      for (int i = 0; i < 150 && errors.empty(); ++i) {
        char id[16];
        std::snprintf(id, sizeof id, "r-%03d", i);
        auto result = opened.value()->register_device(new_device(id), test_certificate(id), kAlice);
        if (!result.ok()) errors.push_back(result.error().message);
      }
    }
    done = true;
  });

  auto reader = open_test_store(dir, OpenMode::read_only);
  std::int64_t last_count = 0;
  int reads = 0;
  bool consistent = true;
  while (!done || reads == 0) {
    DeviceFilter all;
    all.limit = 0;
    const auto devices = must(reader->list_devices(all));
    CHECK(static_cast<std::int64_t>(devices.size()) >= last_count);  // never goes back
    last_count = static_cast<std::int64_t>(devices.size());
    // The newest devices are the ones a half-applied registration would show.
    for (std::size_t i = devices.size() >= 3 ? devices.size() - 3 : 0; i < devices.size(); ++i) {
      if (must(reader->certificates_of(devices[i].id)).empty()) consistent = false;
    }
    ++reads;
  }
  writer.join();
  CHECK(errors.empty());
  CHECK(consistent);
  CHECK(must(reader->count_devices({})) == 150);
}

TEST_CASE("eight writers at once lose nothing and keep one audit chain and one CRL sequence") {
  TempDir dir;
  open_test_store(dir);
  constexpr int kWriters = 8;
  constexpr int kDevicesEach = 25;
  std::vector<std::vector<std::uint64_t>> crl_numbers(kWriters);
  std::vector<std::vector<std::string>> errors(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto opened = open_store(test_location(dir), OpenMode::read_write);
      if (!opened.ok()) {
        errors[w].push_back(opened.error().message);
        return;
      }
      auto& store = *opened.value();
      auto note = [&](const auto& result) {
        if (!result.ok()) errors[w].push_back(result.error().message);
      };
      for (int i = 0; i < kDevicesEach; ++i) {
        const std::string id = "w" + std::to_string(w) + "-" + std::to_string(i);
        note(store.register_device(new_device(id, "fleet"), test_certificate(id), kAlice));
        if (i % 5 == 0) {
          note(store.revoke_device(id, RevocationReason::key_compromise, kAlice));
          auto number = store.next_crl_number(kAlice);
          note(number);
          if (number.ok()) crl_numbers[w].push_back(number.value());
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  for (const auto& e : errors) {
    CHECK(e.empty());
    if (!e.empty()) WARN(e.front());
  }

  auto store = open_test_store(dir);
  CHECK(must(store->count_devices({})) == kWriters * kDevicesEach);
  DeviceFilter revoked;
  revoked.status = DeviceStatus::revoked;
  CHECK(must(store->count_devices(revoked)) == kWriters * (kDevicesEach / 5));
  CHECK(must(store->revoked_certificates(onboard::test::kTestIssuer)).size() ==
        static_cast<std::size_t>(kWriters * (kDevicesEach / 5)));
  // Every CRL number handed out once, each writer's strictly increasing, none missing.
  std::vector<std::uint64_t> all;
  for (const auto& mine : crl_numbers) {
    CHECK(std::is_sorted(mine.begin(), mine.end()));
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == static_cast<std::size_t>(kWriters * (kDevicesEach / 5)));
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  CHECK(all.front() == 1);
  CHECK(all.back() == all.size());
  CHECK(must(store->crl_state()).number == all.back());
  // One chain: the creation, then one row per registration, revocation and CRL.
  const auto check = must(store->verify_audit());
  CHECK(check.ok());
  CHECK(must(store->audit_list(0)).size() ==
        1 + static_cast<std::size_t>(kWriters * kDevicesEach + 2 * kWriters * (kDevicesEach / 5)));
  // The change feed has no gap: the broker reads every seq after its own.
  const auto changes = must(store->changes_since(0));
  REQUIRE_FALSE(changes.empty());
  CHECK(changes.back().seq == must(store->change_seq()));
  CHECK(changes.back().seq == static_cast<std::int64_t>(changes.size()));
}
