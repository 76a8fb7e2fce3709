#include "ops/grants.h"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include <catch2/catch.hpp>
#include <set>
#include <string>

#include "registry/open.h"
#include "tests/support/temp_dir.h"

namespace {

using onboard::Errc;
using onboard::ops::kBrokerTables;
using onboard::ops::kRegistryTables;
using onboard::ops::postgresql_grants;
using onboard::ops::role_problem;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The SQL statement that starts with `head`, up to its ';'.
std::string statement(const std::string& sql, const std::string& head) {
  const auto at = sql.find(head);
  REQUIRE(at != std::string::npos);
  return sql.substr(at, sql.find(';', at) - at);
}

}  // namespace

TEST_CASE("the grants name every table of the registry schema") {
  // The tables of a registry as onboardctl creates it: a table added to the schema must be added
  // to the grants, or the writer could not write it and PUBLIC's rights would not be revoked.
  onboard::test::TempDir dir;
  const auto path = dir / "registry.db";
  auto store = onboard::registry::open_store({onboard::registry::Backend::sqlite, path.string()},
                                             onboard::registry::OpenMode::read_write);
  REQUIRE(store.ok());
  SQLite::Database db(path.string(), SQLite::OPEN_READONLY);
  SQLite::Statement query(db,
                          "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                          "'sqlite_%'");
  std::set<std::string> schema;
  while (query.executeStep()) schema.insert(query.getColumn(0).getString());
  const std::set<std::string> granted(kRegistryTables.begin(), kRegistryTables.end());
  CHECK(schema == granted);
}

TEST_CASE("the broker reads only what it decides from and the writer writes rows of every table") {
  auto sql = postgresql_grants("onboard_broker", "onboard_writer");
  REQUIRE(sql.ok());

  const auto broker = statement(*sql, "GRANT SELECT ON TABLE");
  CHECK(broker ==
        "GRANT SELECT ON TABLE public.meta, public.groups, public.devices, public.certificates, "
        "public.acl_rules, public.changes, public.claims TO \"onboard_broker\"");
  for (const char* secret_table : {"held_keys", "api_tokens", "audit_events", "bundles", "batches"})
    CHECK_FALSE(contains(broker, secret_table));
  // The broker appears in no other grant on a table.
  CHECK_FALSE(contains(statement(*sql, "GRANT SELECT, INSERT, UPDATE, DELETE"), "onboard_broker"));

  const auto writer = statement(*sql, "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE");
  for (auto table : kRegistryTables) CHECK(contains(writer, "public." + std::string(table)));
  CHECK(contains(writer, "TO \"onboard_writer\""));
  CHECK(contains(*sql, "GRANT USAGE, SELECT ON SEQUENCE %s TO \"onboard_writer\""));
  for (const char* seq :
       {"'public.acl_rules', 'id'", "'public.api_tokens', 'id'", "'public.certificates', 'rowid'"})
    CHECK(contains(*sql, seq));

  // PUBLIC loses everything on the tables before anything is granted; no DDL for anyone.
  const auto revoke = statement(*sql, "REVOKE ALL ON TABLE");
  for (auto table : kRegistryTables) CHECK(contains(revoke, "public." + std::string(table)));
  CHECK(contains(revoke, "FROM PUBLIC"));
  CHECK(sql->find("REVOKE ALL ON TABLE") < sql->find("GRANT "));
  CHECK(contains(*sql, "REVOKE CREATE ON SCHEMA public FROM PUBLIC"));
  for (const char* never : {"GRANT CREATE", "GRANT ALL", "TRUNCATE", "REFERENCES", "TRIGGER"})
    CHECK_FALSE(contains(*sql, never));
  CHECK(contains(*sql,
                 "GRANT CONNECT ON DATABASE %I TO \"onboard_broker\", \"onboard_writer\"', "
                 "current_database()"));
  CHECK(contains(*sql, "GRANT USAGE ON SCHEMA public TO \"onboard_broker\", \"onboard_writer\""));
  CHECK(sql->starts_with("--"));
  CHECK(contains(*sql, "BEGIN;"));
  CHECK(sql->ends_with("COMMIT;\n"));
}

TEST_CASE("role names must be plain lower-case identifiers and differ") {
  CHECK(role_problem("onboard_broker").empty());
  CHECK(role_problem("_w2").empty());
  CHECK(role_problem(std::string(63, 'a')).empty());
  CHECK(contains(role_problem(std::string(64, 'a')), "longer than 63"));
  CHECK(contains(role_problem(""), "empty"));
  for (const char* odd :
       {"Broker", "2broker", "broker-1", "bro ker", "broker\"", "b;DROP TABLE x", "brøker"})
    CHECK(contains(role_problem(odd), "plain lower-case identifier"));
  CHECK(contains(role_problem("public"), "public"));
  CHECK(contains(role_problem("pg_monitor"), "pg_"));

  auto bad_broker = postgresql_grants("Broker", "writer");
  REQUIRE_FALSE(bad_broker.ok());
  CHECK(bad_broker.error().code == Errc::invalid_input);
  CHECK(contains(bad_broker.error().message, "the broker role"));
  auto bad_writer = postgresql_grants("broker", "writer\"; DROP TABLE devices; --");
  REQUIRE_FALSE(bad_writer.ok());
  CHECK(contains(bad_writer.error().message, "the writer role"));
  auto same = postgresql_grants("onboard", "onboard");
  REQUIRE_FALSE(same.ok());
  CHECK(contains(same.error().message, "must differ"));
}
