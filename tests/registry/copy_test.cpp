// Copying a whole registry between locations (registry/copy.h): SQLite to SQLite (registry_tests),
// SQLite to PostgreSQL and back (registry_pg_tests, tagged [postgres]). A copy must hold every row
// of every table, go on where the source left off, refuse a target that is not empty, and leave
// the target as it was when anything fails.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "registry/copy.h"
#include "registry/open.h"
#include "registry/pg_database.h"
#include "registry/sqlite_internal.h"
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
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;

namespace {

const std::string kEncrypted =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";

Location sqlite_at(const TempDir& dir, const std::string& name) {
  return Location{Backend::sqlite, (dir / name).string()};
}

Location fresh_postgres(std::string_view label) {
  return Location{Backend::postgresql, onboard::test::fresh_test_database(label)};
}

std::unique_ptr<sql::Database> raw_database(const Location& location) {
  if (location.backend == Backend::sqlite) {
    return must(sqlite::open_registry_file(location.target, /*read_only=*/true));
  }
  pg::Options options;
  options.read_only = true;
  return must(pg::connect(location, options));
}

// Every row of every table, as text, in key order: what must be identical after a copy.
using Rows = std::vector<std::vector<std::optional<std::string>>>;
std::map<std::string, Rows> dump(const Location& location) {
  auto db = raw_database(location);
  std::map<std::string, Rows> tables;
  for (const auto& table : copied_tables()) {
    std::string columns;
    for (const auto column : table.columns) {
      columns += (columns.empty() ? "" : ", ") + std::string(column);
    }
    auto cursor =
        db->prepare("SELECT " + columns + " FROM " + std::string(table.name) + " ORDER BY 1, 2");
    cursor->bind({});
    Rows& rows = tables[std::string(table.name)];
    while (cursor->next()) {
      auto& row = rows.emplace_back();
      for (int i = 0; i < static_cast<int>(table.columns.size()); ++i) {
        if (cursor->is_null(i)) {
          row.emplace_back();
        } else {
          row.emplace_back(std::string(cursor->text(i)));
        }
      }
    }
  }
  return tables;
}

// The tables a PostgreSQL database holds, for "left empty".
std::int64_t postgres_tables(const Location& location) {
  auto db = must(pg::connect(location, {}));
  return sql::query_int64(*db,
                          "SELECT COUNT(*) FROM information_schema.tables "
                          "WHERE table_schema = 'public'");
}

struct Filled {
  std::int64_t highest_rule_id = 0;  // given, though its rule was removed since
  std::int64_t highest_token_id = 0;
};

// A registry with rows in every table, a removed rule (its id must never come back), revocations,
// CRL numbers, a batch, a bundle that was downloaded, a revoked token.
Filled fill(Store& store) {
  Filled filled;
  must(store.create_batch("batch-1", "devices.csv", kAlice));
  for (const char* id : {"dev-1", "dev-2", "dev-3"}) {
    must(store.register_device_in_batch(new_device(id, "sensor"),
                                        test_certificate(id, kTestIssuer, kEncrypted), "batch-1", 1,
                                        kAlice));
  }
  must(store.register_device(new_device("dev-4"), test_certificate("dev-4"), kAlice));
  // Its key is still held (the others' go with their bundle, supersession and revocation).
  must(store.register_device(new_device("dev-5"),
                             test_certificate("dev-5", kTestIssuer, kEncrypted), kAlice));
  must(store.create_group("spare", "no rules yet", kAlice));
  must(store.add_rule({SubjectKind::group, "sensor", "sensors/%d/#", 3, RuleEffect::allow, 5},
                      kAlice));
  must(store.add_rule({SubjectKind::device, "dev-4", "alarms/#", 2, RuleEffect::deny, 9}, kAlice));
  const auto removed = must(
      store.add_rule({SubjectKind::device, "dev-4", "tmp/#", 1, RuleEffect::allow, 0}, kAlice));
  must(store.remove_rule(removed.id, kAlice));
  filled.highest_rule_id = removed.id;
  must(store.add_certificate("dev-2", test_certificate("dev-2"), true, kAlice));
  must(store.record_certificate(CertificateKind::server, test_certificate("broker.example"),
                                kAlice));
  must(store.revoke_device("dev-3", RevocationReason::key_compromise, kAlice));
  must(store.next_crl_number(kAlice));
  must(store.next_root_crl_number(kAlice));
  must(store.create_claim(NewClaim{"factory-1", 10, "dev-[0-9]+", "sensor"},
                          test_certificate("factory-1"), kAlice));

  BundleRecord bundle;
  bundle.id = "bundle-1";
  bundle.batch_id = "batch-1";
  bundle.path = "/tmp/bundle-1.zip";
  bundle.sha256 = std::string(64, 'a');
  bundle.size = 1234;
  bundle.with_keys = true;
  for (const auto& c : must(store.certificates_of("dev-1"))) {
    bundle.devices.push_back({c.device_id, c.sha256_fingerprint});
  }
  must(store.record_bundle(bundle, kAlice));
  must(store.claim_bundle_download("bundle-1", "rest:ops", kAlice));

  must(store.create_api_token("ops", ApiRole::operator_role, std::string(64, '1'), kAlice));
  filled.highest_token_id =
      must(store.create_api_token("viewer", ApiRole::reader, std::string(64, '2'), kAlice)).id;
  must(store.revoke_api_token("viewer", kAlice));
  return filled;
}

std::unique_ptr<Store> open_location(const Location& location) {
  return must(open_store(location, OpenMode::read_write));
}

// A copy checks out as a registry and takes new writes where the source left off.
void check_goes_on(const Location& location, const Filled& filled) {
  auto store = open_location(location);
  const auto audit = must(store->verify_audit());
  INFO(audit.problem);
  CHECK(audit.ok());

  const auto rule = must(
      store->add_rule({SubjectKind::device, "dev-1", "new/#", 1, RuleEffect::allow, 0}, kAlice));
  CHECK(rule.id == filled.highest_rule_id + 1);
  const auto token =
      must(store->create_api_token("new", ApiRole::reader, std::string(64, '3'), kAlice));
  CHECK(token.id == filled.highest_token_id + 1);

  const auto before = must(store->certificates_of("dev-4"));
  const auto added = must(store->add_certificate("dev-4", test_certificate("dev-4"), true, kAlice));
  const auto after = must(store->certificates_of("dev-4"));
  REQUIRE(after.size() == before.size() + 1);
  CHECK(after.back().sha256_fingerprint == added.certificate.sha256_fingerprint);
  const auto all = must(store->list_certificates({}));
  REQUIRE_FALSE(all.empty());
  CHECK(all.back().sha256_fingerprint == added.certificate.sha256_fingerprint);
  CHECK(must(store->verify_audit()).ok());
}

// The broker's view of a device registered before the copy.
void check_broker_reads(const Location& location) {
  auto access = must(open_access(location));
  const auto data = must(access->read_access(AccessQuery::listed({"dev-1", "dev-3"}, {"sensor"})));
  REQUIRE(data.devices.size() == 2);
  CHECK(data.devices[0].id == "dev-1");
  CHECK(data.devices[0].status == DeviceStatus::active);
  CHECK(data.devices[0].type == "sensor");
  CHECK(data.devices[0].certificates.size() == 1);
  CHECK(data.devices[1].status == DeviceStatus::revoked);
  REQUIRE(data.groups.size() == 1);
  CHECK(data.groups[0].rules.size() == 1);
}

std::set<std::string> names_of(const std::vector<std::string_view>& columns) {
  return {columns.begin(), columns.end()};
}

}  // namespace

TEST_CASE("a copy holds every table and column of the SQLite schema", "[sqlite]") {
  // A table or column added to the schema but not to the copy would be lost in a move.
  TempDir dir;
  const auto location = sqlite_at(dir, "registry.db");
  open_location(location);
  SQLite::Database db(location.target, SQLite::OPEN_READONLY);
  SQLite::Statement tables(
      db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
  std::map<std::string, std::set<std::string>> schema;
  while (tables.executeStep()) {
    const std::string name = tables.getColumn(0).getString();
    SQLite::Statement columns(db, "SELECT name FROM pragma_table_info(?)");
    columns.bind(1, name);
    auto& set = schema[name];
    while (columns.executeStep()) set.insert(columns.getColumn(0).getString());
  }
  std::map<std::string, std::set<std::string>> copied;
  for (const auto& table : copied_tables()) {
    auto columns = names_of(table.columns);
    columns.erase("rowid");  // SQLite's implicit rowid: pragma_table_info does not list it
    copied[std::string(table.name)] = columns;
  }
  CHECK(copied == schema);
}

TEST_CASE("a copy holds every table and column of the PostgreSQL schema", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  const auto location = fresh_postgres("copy_schema");
  open_location(location);
  auto db = must(pg::connect(location, {}));
  auto columns = db->prepare(
      "SELECT table_name, column_name FROM information_schema.columns "
      "WHERE table_schema = 'public'");
  columns->bind({});
  std::map<std::string, std::set<std::string>> schema;
  while (columns->next()) {
    schema[std::string(columns->text(0))].insert(std::string(columns->text(1)));
  }
  std::map<std::string, std::set<std::string>> copied;
  for (const auto& table : copied_tables()) {
    copied[std::string(table.name)] = names_of(table.columns);
  }
  CHECK(copied == schema);
}

TEST_CASE("an SQLite registry copied to a new file keeps every row and goes on", "[sqlite]") {
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  const Filled filled = fill(*open_location(source));
  const auto target = sqlite_at(dir, "copy.db");

  const auto summary = must(copy_registry(source, target, kNow));
  CHECK(summary.devices == 5);
  CHECK(summary.certificates == 8);
  auto source_store = open_location(source);
  CHECK(summary.change_seq == must(source_store->change_seq()));
  CHECK(summary.audit_head == must(source_store->verify_audit()).head_hash);
  CHECK(summary.audit_rows == static_cast<std::int64_t>(must(source_store->audit_list(0)).size()));

  const auto copied = dump(target);
  CHECK(copied == dump(source));
  for (const auto& [table, rows] : copied) {
    INFO(table);
    CHECK_FALSE(rows.empty());  // the fill reaches every table, so the comparison means something
  }
  check_broker_reads(target);
  check_goes_on(target, filled);
}

TEST_CASE("a copy refuses an existing SQLite file and leaves it alone", "[sqlite]") {
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  fill(*open_location(source));
  const auto target = sqlite_at(dir, "other.db");
  onboard::test::register_test_device(*open_location(target), "other-device");
  const auto before = dump(target);

  require_error(copy_registry(source, target, kNow), Errc::conflict, "exists");
  CHECK(dump(target) == before);
  // Even an empty file: it may be a registry truncated by a crash.
  const auto empty = sqlite_at(dir, "empty.db");
  std::ofstream{empty.target};
  require_error(copy_registry(source, empty, kNow), Errc::conflict, "exists");
  CHECK(std::filesystem::file_size(empty.target) == 0);
  // The same source copies to a new path.
  must(copy_registry(source, sqlite_at(dir, "new.db"), kNow));
}

TEST_CASE("a source whose audit log was edited is not copied and leaves no file", "[sqlite]") {
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  fill(*open_location(source));
  must(copy_registry(source, sqlite_at(dir, "before.db"), kNow));  // copies while it is intact

  SQLite::Database(source.target, SQLite::OPEN_READWRITE)
      .exec("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3");
  const auto target = sqlite_at(dir, "copy.db");
  require_error(copy_registry(source, target, kNow), Errc::corrupt, "does not verify");
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    CHECK_FALSE(std::filesystem::exists(target.target + suffix));
  }
}

// A source damaged behind the Store's back: a rule for a device that does not exist, written with
// foreign keys off. The copy fails at that row, after the tables before it were filled.
void add_orphan_rule(const Location& source) {
  SQLite::Database(source.target, SQLite::OPEN_READWRITE)
      .exec(
          "PRAGMA foreign_keys = OFF; INSERT INTO acl_rules (device_id, access, pattern, effect, "
          "priority, created_at) VALUES ('ghost', 1, 'x/#', 'allow', 0, 0)");
}

TEST_CASE("a copy that fails at a row leaves no SQLite file", "[sqlite]") {
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  fill(*open_location(source));
  must(copy_registry(source, sqlite_at(dir, "before.db"), kNow));  // copies while it is intact

  add_orphan_rule(source);
  const auto target = sqlite_at(dir, "copy.db");
  CHECK_FALSE(copy_registry(source, target, kNow).ok());
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    CHECK_FALSE(std::filesystem::exists(target.target + suffix));
  }
}

TEST_CASE("a missing source is reported and no target is made", "[sqlite]") {
  TempDir dir;
  const auto target = sqlite_at(dir, "copy.db");
  require_error(copy_registry(sqlite_at(dir, "none.db"), target, kNow), Errc::not_found);
  CHECK_FALSE(std::filesystem::exists(target.target));
}

TEST_CASE("SQLite to PostgreSQL and back keeps every row and both go on", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  const Filled filled = fill(*open_location(source));
  const auto postgres = fresh_postgres("copy_to_pg");
  const auto back = sqlite_at(dir, "back.db");

  const auto to_postgres = must(copy_registry(source, postgres, kNow));
  const auto to_sqlite = must(copy_registry(postgres, back, kNow));
  CHECK(to_postgres.rows == to_sqlite.rows);
  CHECK(to_postgres.audit_head == to_sqlite.audit_head);
  CHECK(to_postgres.change_seq == to_sqlite.change_seq);

  const auto original = dump(source);
  CHECK(dump(postgres) == original);
  CHECK(dump(back) == original);

  check_broker_reads(postgres);
  check_broker_reads(back);
  check_goes_on(postgres, filled);
  check_goes_on(back, filled);
}

TEST_CASE("a PostgreSQL database that is not empty is refused and left unchanged", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  fill(*open_location(source));

  const auto registry = fresh_postgres("copy_full");
  onboard::test::register_test_device(*open_location(registry), "other-device");
  const auto before = dump(registry);
  require_error(copy_registry(source, registry, kNow), Errc::conflict, "already holds a registry");
  CHECK(dump(registry) == before);

  const auto foreign = fresh_postgres("copy_foreign");
  must(pg::connect(foreign, {}))->exec("CREATE TABLE payroll (id INTEGER)");
  require_error(copy_registry(source, foreign, kNow), Errc::corrupt);

  // The positive control: an empty database takes the copy.
  must(copy_registry(source, fresh_postgres("copy_empty"), kNow));
}

TEST_CASE("a copy that fails leaves the PostgreSQL target empty", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  fill(*open_location(source));
  const auto pristine = sqlite_at(dir, "pristine.db");
  must(copy_registry(source, pristine, kNow));

  // Every row is inserted before the chain is checked: the failure comes at the very end.
  SQLite::Database(source.target, SQLite::OPEN_READWRITE)
      .exec("UPDATE audit_events SET details = '{}' WHERE seq = 4");
  const auto target = fresh_postgres("copy_fails");
  require_error(copy_registry(source, target, kNow), Errc::corrupt, "does not verify");
  CHECK(postgres_tables(target) == 0);

  // The same database then takes a good copy: nothing of the failed one is in the way.
  must(copy_registry(pristine, target, kNow));
  CHECK(dump(target) == dump(pristine));
}

TEST_CASE("a copy that fails at a row midway leaves the PostgreSQL target empty", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir dir;
  const auto source = sqlite_at(dir, "registry.db");
  fill(*open_location(source));
  const auto pristine = sqlite_at(dir, "pristine.db");
  must(copy_registry(source, pristine, kNow));

  add_orphan_rule(source);
  const auto target = fresh_postgres("copy_fails_midway");
  CHECK_FALSE(copy_registry(source, target, kNow).ok());  // a foreign key the row breaks
  CHECK(postgres_tables(target) == 0);
  must(copy_registry(pristine, target, kNow));
  CHECK(dump(target) == dump(pristine));
}
