// `onboardctl registry copy --to LOCATION`: moving a registry to a new SQLite file, to PostgreSQL
// and back, run as an operator runs it and checked through onboardctl on the copy.
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

RunResult onboardctl(const std::filesystem::path& data_dir, const Args& global,
                     const Args& command) {
  Args args{ONBOARDCTL_PATH, "--data-dir", data_dir.string()};
  args.insert(args.end(), global.begin(), global.end());
  args.insert(args.end(), command.begin(), command.end());
  return onboard::test::run(args, {}, {});
}

const Args kInit{"init", "--key-alg", "p256", "--no-group"};

Args register_device(const TempDir& base, const std::string& id) {
  return {
      "device", "register", id, "--key-alg", "p256", "--key-out", (base / (id + ".key")).string()};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The registry at `at` verifies and lists `devices`.
void check_registry(const std::filesystem::path& data, const Args& at,
                    const std::vector<std::string>& devices) {
  auto verify = onboardctl(data, at, {"audit", "verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  auto list = onboardctl(data, at, {"device", "list"});
  CHECK(list.exit_code == 0);
  for (const auto& id : devices) CHECK(contains(list.out, id));
}

}  // namespace

TEST_CASE("registry copy moves the registry to a new SQLite file and refuses an existing one") {
  TempDir base;
  const auto data = base / "data";
  REQUIRE(onboardctl(data, {}, kInit).exit_code == 0);
  REQUIRE(onboardctl(data, {}, register_device(base, "dev-1")).exit_code == 0);
  REQUIRE(onboardctl(data, {}, {"device", "revoke", "dev-1"}).exit_code == 0);
  REQUIRE(onboardctl(data, {}, register_device(base, "dev-2")).exit_code == 0);

  const auto copy = base / "copy.db";
  auto copied = onboardctl(data, {}, {"registry", "copy", "--to", copy.string()});
  INFO(copied.err);
  REQUIRE(copied.exit_code == 0);
  CHECK(contains(copied.out, "to " + copy.string()));
  CHECK(contains(copied.out, "2 devices"));

  const Args at{"--registry", copy.string()};
  check_registry(data, at, {"dev-1", "dev-2"});
  REQUIRE(onboardctl(data, at, register_device(base, "dev-3")).exit_code == 0);
  check_registry(data, at, {"dev-3"});
  // The copy is apart from the original.
  CHECK_FALSE(contains(onboardctl(data, {}, {"device", "list"}).out, "dev-3"));

  // The copy exists now: a second copy to it is refused and leaves it as it is.
  auto again = onboardctl(data, {}, {"registry", "copy", "--to", copy.string()});
  CHECK(again.exit_code == 5);
  CHECK(contains(again.err, "exists"));
  check_registry(data, at, {"dev-3"});

  auto usage = onboardctl(data, {}, {"registry", "copy"});
  CHECK(usage.exit_code == 2);
}

TEST_CASE("registry copy moves an SQLite registry to PostgreSQL and back", "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir base;
  const auto data = base / "data";
  REQUIRE(onboardctl(data, {}, kInit).exit_code == 0);
  REQUIRE(onboardctl(data, {}, register_device(base, "dev-1")).exit_code == 0);
  REQUIRE(onboardctl(data, {}, register_device(base, "dev-2")).exit_code == 0);

  const std::string conninfo = onboard::test::fresh_test_database("copy_cli");
  auto to_postgres = onboardctl(data, {}, {"registry", "copy", "--to", conninfo});
  INFO(to_postgres.err);
  REQUIRE(to_postgres.exit_code == 0);
  CHECK(contains(to_postgres.out, "to host=127.0.0.1"));
  CHECK(contains(to_postgres.out, "2 devices"));

  const Args on_postgres{"--registry", conninfo};
  check_registry(data, on_postgres, {"dev-1", "dev-2"});
  REQUIRE(onboardctl(data, on_postgres, register_device(base, "dev-3")).exit_code == 0);

  // A database that holds a registry is refused, and keeps what it holds.
  auto again = onboardctl(data, {}, {"registry", "copy", "--to", conninfo});
  CHECK(again.exit_code == 5);
  CHECK(contains(again.err, "already holds a registry"));
  check_registry(data, on_postgres, {"dev-1", "dev-2", "dev-3"});

  const auto back = base / "back.db";
  auto to_sqlite =
      onboardctl(data, on_postgres, {"registry", "copy", "--to", "sqlite://" + back.string()});
  INFO(to_sqlite.err);
  REQUIRE(to_sqlite.exit_code == 0);
  CHECK(contains(to_sqlite.out, "3 devices"));
  check_registry(data, {"--registry", back.string()}, {"dev-1", "dev-2", "dev-3"});
}
