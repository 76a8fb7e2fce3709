// The SQLite registry in the broker's role (open_sqlite_access): what the plugin opens. It must
// read exactly what the full store reads, open only what the full store opens read-only, and see
// what a writer commits after it was opened.
#include "registry/sqlite_access.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Transaction.h>

#include "registry/schema.h"
#include "registry/sqlite_store.h"
#include "tests/registry/fixtures.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::kAlice;
using onboard::test::kNow;
using onboard::test::must;
using onboard::test::register_test_device;
using onboard::test::registry_path;
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;

namespace {

// Everything in AccessData, one line per value, to compare two reads field by field.
std::string describe(const AccessData& data) {
  std::ostringstream out;
  out << "seq " << data.change_seq << "\n";
  for (const auto& d : data.devices) {
    out << "device " << d.id << " " << to_string(d.status) << " " << d.type << "\n";
    for (const auto& r : d.rules)
      out << "  rule " << r.id << " " << r.pattern.text() << " " << int{r.access} << " "
          << (r.effect == acl::Effect::allow ? "allow" : "deny") << " " << r.priority << "\n";
    for (const auto& c : d.certificates)
      out << "  cert " << c.sha256_fingerprint << " " << c.serial_hex << " " << to_string(c.status)
          << " " << c.not_before << " " << c.not_after << "\n";
  }
  for (const auto& g : data.groups) {
    out << "group " << g.name << "\n";
    for (const auto& r : g.rules) out << "  rule " << r.id << " " << r.pattern.text() << "\n";
  }
  for (const auto& id : data.missing_devices) out << "missing " << id << "\n";
  return out.str();
}

}  // namespace

TEST_CASE("the broker's access store reads what the full store reads, for every scope") {
  TempDir dir;
  auto writer = must(open_sqlite_store(registry_path(dir), OpenMode::read_write));
  register_test_device(*writer, "a1", "sensor");
  register_test_device(*writer, "a2", "");
  register_test_device(*writer, "a3", "sensor");
  must(writer->add_rule({SubjectKind::device, "a1", "cfg/a1", acl::kRead, RuleEffect::allow, 5},
                        kAlice));
  must(writer->add_rule(
      {SubjectKind::group, "sensor", "telemetry/%d", acl::kPublish, RuleEffect::deny, 1}, kAlice));
  must(writer->add_certificate("a2", test_certificate("a2"), /*supersede_active=*/true, kAlice));
  must(writer->set_device_enabled("a3", false, kAlice));

  auto access = must(open_sqlite_access(registry_path(dir)));
  auto full = must(open_sqlite_store(registry_path(dir), OpenMode::read_only));
  const std::vector<AccessQuery> queries = {
      AccessQuery::everything(), AccessQuery::listed({"a1", "a2", "nobody"}, {"sensor", "none"}),
      AccessQuery::changed_since(0), AccessQuery::changed_since(3)};
  for (const auto& query : queries) {
    const std::string seen = describe(must(access->read_access(query)));
    INFO(seen);
    CHECK(seen == describe(must(full->read_access(query))));
  }
  // A positive control: the reads above hold the rows written, not two empty answers.
  const auto everything = must(access->read_access(AccessQuery::everything()));
  CHECK(everything.devices.size() == 3);
  CHECK(everything.devices[1].certificates.size() == 2);
  CHECK(everything.devices[2].status == DeviceStatus::disabled);
}

TEST_CASE("the broker's access store sees what a writer commits after it was opened") {
  TempDir dir;
  auto writer = must(open_sqlite_store(registry_path(dir), OpenMode::read_write));
  register_test_device(*writer, "a1", "");
  auto access = must(open_sqlite_access(registry_path(dir)));
  const auto first = must(access->read_access(AccessQuery::everything()));
  CHECK(first.devices.size() == 1);

  const auto unchanged = must(access->read_access(AccessQuery::changed_since(first.change_seq)));
  CHECK(unchanged.change_seq == first.change_seq);
  CHECK(unchanged.devices.empty());

  register_test_device(*writer, "a2", "");
  const auto changed = must(access->read_access(AccessQuery::changed_since(first.change_seq)));
  CHECK(changed.change_seq > first.change_seq);
  REQUIRE(changed.devices.size() == 1);
  CHECK(changed.devices[0].id == "a2");
}

TEST_CASE("the broker's access store opens only a current registry and never writes") {
  TempDir dir;
  require_error(open_sqlite_access(registry_path(dir)), Errc::not_found, "no registry at");
  CHECK_FALSE(std::filesystem::exists(registry_path(dir)));  // nothing created

  std::ofstream{registry_path(dir)};  // zero bytes: an empty SQLite database
  require_error(open_sqlite_access(registry_path(dir)), Errc::not_found,
                "not an initialised registry");
  CHECK(std::filesystem::file_size(registry_path(dir)) == 0);  // still untouched

  std::filesystem::remove(registry_path(dir));
  {
    // A registry of schema version 2, which only onboardctl upgrades.
    SQLite::Database old(registry_path(dir), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    SQLite::Transaction transaction(old);
    schema::migrate(old, 0, kNow, 2);
    transaction.commit();
  }
  require_error(open_sqlite_access(registry_path(dir)), Errc::corrupt,
                "open it once with onboardctl to upgrade it");

  std::filesystem::remove(registry_path(dir));
  std::ofstream(registry_path(dir)) << "this is a CA key, not a database\n";
  require_error(open_sqlite_access(registry_path(dir)), Errc::corrupt, "not an SQLite database");

  // The positive control: a current registry opens, and opening it changed nothing.
  std::filesystem::remove(registry_path(dir));
  must(open_sqlite_store(registry_path(dir), OpenMode::read_write));
  SQLite::Database raw(registry_path(dir), SQLite::OPEN_READONLY);
  const auto audit_rows = raw.execAndGet("SELECT count(*) FROM audit_events").getInt64();
  auto access = must(open_sqlite_access(registry_path(dir)));
  CHECK(must(access->read_access(AccessQuery::everything())).groups.size() == 1);
  CHECK(raw.execAndGet("SELECT count(*) FROM audit_events").getInt64() == audit_rows);
}
