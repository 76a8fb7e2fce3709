// Where the registry is: `onboardctl --registry LOCATION` and $ONBOARD_REGISTRY, run as an operator
// runs them, checked by exit code, by stderr and by where the registry ends up on disk.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tests/support/postgres.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

// onboardctl on `data_dir`, with `global` options before the command (e.g. --registry).
RunResult onboardctl(const std::filesystem::path& data_dir, const Args& global, const Args& command,
                     const Env& env = {}) {
  Args args{ONBOARDCTL_PATH, "--data-dir", data_dir.string()};
  args.insert(args.end(), global.begin(), global.end());
  args.insert(args.end(), command.begin(), command.end());
  return onboard::test::run(args, {}, env);
}

const Args kInit{"init", "--key-alg", "p256", "--no-group"};

Args register_device(const TempDir& base, const std::string& id) {
  return {
      "device", "register", id, "--key-alg", "p256", "--key-out", (base / (id + ".key")).string()};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("the registry option keeps the registry at an absolute path outside the data directory") {
  TempDir base;
  const auto data = base / "data";
  std::filesystem::create_directories(base / "elsewhere");
  const auto registry = base / "elsewhere" / "fleet.db";
  const Args at{"--registry", registry.string()};

  auto init = onboardctl(data, at, kInit);
  REQUIRE(init.exit_code == 0);
  CHECK(contains(init.out, "registry  " + registry.string()));
  CHECK(std::filesystem::is_regular_file(registry));
  CHECK_FALSE(std::filesystem::exists(data / "registry.db"));
  CHECK(std::filesystem::exists(data / "ca"));

  REQUIRE(onboardctl(data, at, register_device(base, "dev-1")).exit_code == 0);
  auto list = onboardctl(data, at, {"device", "list"});
  CHECK(list.exit_code == 0);
  CHECK(contains(list.out, "dev-1"));

  // The same data directory without --registry looks in it, where there is none.
  auto missing = onboardctl(data, {}, {"device", "list"});
  CHECK(missing.exit_code == 4);
  CHECK(contains(missing.err, "run 'onboardctl init' first"));

  // sqlite:/// names the same file.
  auto url = onboardctl(data, {"--registry", "sqlite://" + registry.string()}, {"device", "list"});
  CHECK(url.exit_code == 0);
  CHECK(contains(url.out, "dev-1"));

  // A registry whose directory does not exist is refused before anything is made.
  const auto other = base / "other";
  auto typo = onboardctl(other, {"--registry", (base / "nowhere" / "fleet.db").string()}, kInit);
  CHECK(typo.exit_code == 4);
  CHECK(contains(typo.err,
                 "the registry's directory " + (base / "nowhere").string() + " does not exist"));
  CHECK_FALSE(std::filesystem::exists(other));

  // A second init at the same location refuses to touch it.
  auto again = onboardctl(data, at, kInit);
  CHECK(again.exit_code == 5);
  CHECK(contains(again.err, "a registry already exists at " + registry.string()));
}

TEST_CASE("ONBOARD_REGISTRY names the registry and the registry option beats it") {
  TempDir base;
  const auto data = base / "data";
  const auto first = base / "first.db";
  const auto second = base / "second.db";
  const Env env{{"ONBOARD_REGISTRY", first.string()}};

  REQUIRE(onboardctl(data, {}, kInit, env).exit_code == 0);
  CHECK(std::filesystem::is_regular_file(first));
  CHECK_FALSE(std::filesystem::exists(data / "registry.db"));
  REQUIRE(onboardctl(data, {}, register_device(base, "dev-1"), env).exit_code == 0);

  REQUIRE(onboardctl(data, {"--registry", second.string()}, kInit, env).exit_code == 0);
  CHECK(std::filesystem::is_regular_file(second));
  REQUIRE(onboardctl(data, {"--registry", second.string()}, register_device(base, "dev-2"), env)
              .exit_code == 0);

  auto from_env = onboardctl(data, {}, {"device", "list"}, env);
  CHECK(from_env.exit_code == 0);
  CHECK(contains(from_env.out, "dev-1"));
  CHECK_FALSE(contains(from_env.out, "dev-2"));

  auto from_option = onboardctl(data, {"--registry", second.string()}, {"device", "list"}, env);
  CHECK(from_option.exit_code == 0);
  CHECK(contains(from_option.out, "dev-2"));
  CHECK_FALSE(contains(from_option.out, "dev-1"));
}

TEST_CASE("an invalid registry location is a usage error that never shows a password") {
  TempDir base;
  const auto data = base / "data";
  const auto good = base / "registry.db";
  REQUIRE(onboardctl(data, {"--registry", good.string()}, kInit).exit_code == 0);

  struct Case {
    std::string location, message;
  };
  for (const auto& c : std::vector<Case>{
           {"registry.db", "relative path"},
           {"sqlite://host/srv/registry.db", "no host"},
           {"postgresql://onboard:secret@127.0.0.1/registry", "must not contain a password"},
           {"host=127.0.0.1 dbname=registry password=secret", "must not contain a password"},
           {"postgresql://onboard:secret@[::1/registry", "must not contain a password"},
           {"postgresql://127.0.0.1/registry?pass%77ord=secret", "must not contain a password"},
           {"host=127.0.0.1 secret", "libpq cannot parse"},
       }) {
    INFO("location: " << c.location);
    for (bool by_env : {false, true}) {
      auto r = by_env ? onboardctl(data, {}, {"device", "list"}, {{"ONBOARD_REGISTRY", c.location}})
                      : onboardctl(data, {"--registry", c.location}, {"device", "list"});
      CHECK(r.exit_code == 2);
      CHECK(r.err.starts_with("onboardctl: "));
      CHECK(contains(r.err, c.message));
      CHECK_FALSE(contains(r.err, "secret"));
      CHECK_FALSE(contains(r.out, "secret"));
    }
  }
  // The option wins: the variable is not even read then, so a bad one does not get in the way.
  auto valid = onboardctl(data, {"--registry", good.string()}, {"device", "list"},
                          {{"ONBOARD_REGISTRY", "postgresql://onboard:secret@127.0.0.1/registry"}});
  CHECK(valid.exit_code == 0);
}

TEST_CASE("a PostgreSQL registry that cannot be reached fails cleanly without writing") {
  TempDir base;
  const auto data = base / "data";
  // Nothing listens on port 1 of loopback; whatever the store reports, it is one error, no crash.
  auto r = onboardctl(data, {"--registry", "postgresql://onboard@127.0.0.1:1/registry"},
                      {"device", "list"});
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code != 2);
  CHECK(r.exit_code < 128);
  CHECK(r.err.starts_with("onboardctl: "));
  CHECK_FALSE(std::filesystem::exists(data / "registry.db"));
}

TEST_CASE(
    "registry backup and restore refuse a PostgreSQL registry naming pg_dump and pg_restore") {
  TempDir base;
  const auto data = base / "data";
  const auto registry = base / "registry.db";
  REQUIRE(onboardctl(data, {"--registry", registry.string()}, kInit).exit_code == 0);
  const auto copy = base / "copy.db";

  const Args postgresql{"--registry", "host=127.0.0.1 port=1 dbname=registry user=onboard"};
  auto backup = onboardctl(data, postgresql, {"registry", "backup", copy.string()});
  CHECK(backup.exit_code == 3);
  CHECK(contains(backup.err, "SQLite registry only"));
  CHECK(contains(backup.err, "pg_dump"));
  CHECK_FALSE(std::filesystem::exists(copy));

  // The positive control: the SQLite registry named the same way backs up, and restores.
  auto sqlite_backup =
      onboardctl(data, {"--registry", registry.string()}, {"registry", "backup", copy.string()});
  CHECK(sqlite_backup.exit_code == 0);
  CHECK(std::filesystem::is_regular_file(copy));

  auto restore = onboardctl(data, postgresql, {"registry", "restore", copy.string(), "--yes"});
  CHECK(restore.exit_code == 3);
  CHECK(contains(restore.err, "pg_restore"));
  auto sqlite_restore = onboardctl(data, {"--registry", registry.string()},
                                   {"registry", "restore", copy.string(), "--yes"});
  CHECK(sqlite_restore.exit_code == 0);
}

TEST_CASE("serve opens the registry where the registry option names it") {
  TempDir base;
  const auto data = base / "data";
  const auto registry = base / "registry.db";
  REQUIRE(onboardctl(data, {"--registry", registry.string()}, kInit).exit_code == 0);
  // The data directory has no registry of its own: serve reports the location it was given,
  // at start, before serving anything.
  const auto missing = base / "missing.db";
  auto r = onboardctl(data, {"--registry", missing.string()}, {"serve", "--listen", "127.0.0.1:0"});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "no registry at " + missing.string()));
}

TEST_CASE("the global help names the registry option and its variable") {
  auto r = onboard::test::run({ONBOARDCTL_PATH, "--help"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "--registry"));
  CHECK(contains(r.out, "ONBOARD_REGISTRY"));
  CHECK(contains(r.out, "postgresql://"));
  CHECK(contains(r.out, "PGPASSFILE"));
}

TEST_CASE("registry grants prints the PostgreSQL rights and refuses odd role names") {
  TempDir base;
  auto r = onboardctl(
      base / "data", {},
      {"registry", "grants", "--broker-role", "onboard_broker", "--writer-role", "onboard_writer"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out,
                 "GRANT SELECT ON TABLE public.meta, public.groups, public.devices, "
                 "public.certificates, public.acl_rules, public.changes, public.claims TO "
                 "\"onboard_broker\";"));
  CHECK(contains(r.out, "TO \"onboard_writer\";"));
  CHECK_FALSE(std::filesystem::exists(base / "data"));  // printed only: nothing opened or made

  for (const Args& roles : std::vector<Args>{{"Broker", "writer"},
                                             {"broker", "writer; DROP TABLE devices"},
                                             {"broker\"", "writer"},
                                             {"broker", "broker"},
                                             {"public", "writer"}}) {
    INFO(roles[0] << " " << roles[1]);
    auto bad =
        onboardctl(base / "data", {},
                   {"registry", "grants", "--broker-role", roles[0], "--writer-role", roles[1]});
    CHECK(bad.exit_code == 3);
    CHECK(bad.out.empty());
    CHECK(contains(bad.err, "role"));
  }
}

namespace {

// psql on `conninfo`, stopping at the first error; `sql` as one -c (one transaction).
RunResult psql(const std::string& conninfo, const std::string& sql) {
  const std::string binary = std::filesystem::exists("/usr/lib/postgresql/15/bin/psql")
                                 ? "/usr/lib/postgresql/15/bin/psql"
                                 : "/usr/bin/psql";
  return onboard::test::run(
      {binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql});
}

}  // namespace

TEST_CASE("a PostgreSQL registry is made by init and used by every command", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir base;
  const auto data = base / "data";
  const std::string conninfo = onboard::test::fresh_test_database("location_cli");
  const Args at{"--registry", conninfo};

  auto init = onboardctl(data, at, kInit);
  REQUIRE(init.exit_code == 0);
  CHECK(contains(init.out, "registry  host=127.0.0.1"));
  CHECK_FALSE(std::filesystem::exists(data / "registry.db"));
  REQUIRE(onboardctl(data, at, register_device(base, "dev-1")).exit_code == 0);
  auto list = onboardctl(data, {}, {"device", "list"}, {{"ONBOARD_REGISTRY", conninfo}});
  CHECK(list.exit_code == 0);
  CHECK(contains(list.out, "dev-1"));

  auto again = onboardctl(data, at, kInit);
  CHECK(again.exit_code == 5);
  CHECK(contains(again.err, "a registry already exists at host=127.0.0.1"));
  auto backup = onboardctl(data, at, {"registry", "backup", (base / "copy.db").string()});
  CHECK(backup.exit_code == 3);
  CHECK(contains(backup.err, "pg_dump"));
}

TEST_CASE("the printed grants apply to the schema init made and give each role its rights",
          "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir base;
  const auto data = base / "data";
  const std::string conninfo = onboard::test::fresh_test_database("location_grants");
  REQUIRE(onboardctl(data, {"--registry", conninfo}, kInit).exit_code == 0);

  // Roles belong to the whole cluster: names of this process, so that runs do not collide.
  const std::string suffix = std::to_string(::getpid());
  const std::string broker = "loc_broker_" + suffix, writer = "loc_writer_" + suffix;
  auto grants = onboardctl(
      data, {}, {"registry", "grants", "--broker-role", broker, "--writer-role", writer});
  REQUIRE(grants.exit_code == 0);
  REQUIRE(psql(conninfo, "CREATE ROLE " + broker + "; CREATE ROLE " + writer).exit_code == 0);
  auto applied = psql(conninfo, grants.out);
  INFO(applied.err);
  REQUIRE(applied.exit_code == 0);

  auto as = [&](const std::string& role, const std::string& sql) {
    return psql(conninfo, "SET ROLE " + role + "; " + sql).exit_code == 0;
  };
  CHECK(as(broker, "SELECT count(*) FROM devices, certificates, acl_rules, changes, meta, groups"));
  CHECK_FALSE(as(broker, "SELECT count(*) FROM held_keys"));
  CHECK_FALSE(as(broker, "SELECT count(*) FROM api_tokens"));
  CHECK_FALSE(as(broker, "SELECT count(*) FROM audit_events"));
  CHECK_FALSE(as(broker, "DELETE FROM devices"));
  CHECK(as(writer, "DELETE FROM held_keys; SELECT count(*) FROM api_tokens"));
  CHECK(as(writer, "SELECT nextval(pg_get_serial_sequence('acl_rules', 'id'))"));
  CHECK(as(writer, "SELECT nextval(pg_get_serial_sequence('certificates', 'rowid'))"));
  CHECK_FALSE(as(writer, "CREATE TABLE extra (i int)"));
  CHECK_FALSE(as(writer, "DROP TABLE devices"));
  CHECK_FALSE(as(writer, "TRUNCATE changes"));
}
