// The throwaway PostgreSQL cluster that the PostgreSQL store's tests stand on: each test gets a
// database of its own that nothing else sees, over 127.0.0.1 with the conninfo it is handed, and
// tests/support/pg_cluster really stops the server it started.
#include "tests/support/postgres.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "tests/support/run.h"

namespace {

using onboard::test::fresh_test_database;

struct PqFinish {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PqClear {
  void operator()(PGresult* result) const { PQclear(result); }
};
using Connection = std::unique_ptr<PGconn, PqFinish>;
using Result = std::unique_ptr<PGresult, PqClear>;

Connection connect(const std::string& conninfo) {
  return Connection(PQconnectdb(conninfo.c_str()));
}

bool connected(const Connection& conn) { return conn && PQstatus(conn.get()) == CONNECTION_OK; }

// Runs `sql`, which must succeed; the first column of the first row, or nullopt for no row or NULL.
std::optional<std::string> query(const Connection& conn, const std::string& sql) {
  Result result(PQexec(conn.get(), sql.c_str()));
  const ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  INFO(sql << ": " << PQerrorMessage(conn.get()));
  REQUIRE((status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK));
  if (status != PGRES_TUPLES_OK || PQntuples(result.get()) == 0 ||
      PQgetisnull(result.get(), 0, 0)) {
    return std::nullopt;
  }
  return std::string(PQgetvalue(result.get(), 0, 0));
}

const char* const kTablesInPublic =
    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'";

// Sets an environment variable (or unsets it, for nullopt) until the end of the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("a fresh database is empty and reached with the conninfo it comes with") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  const std::string conninfo = fresh_test_database("empty");
  const Connection conn = connect(conninfo);
  INFO(conninfo << ": " << PQerrorMessage(conn.get()));
  REQUIRE(connected(conn));
  CHECK(PQdb(conn.get()) != std::string("postgres"));
  CHECK(query(conn, "SELECT current_database()") == std::string(PQdb(conn.get())));
  CHECK(query(conn, kTablesInPublic) == "0");
  CHECK(query(conn, "SHOW server_encoding") == "UTF8");
}

TEST_CASE("a table made in one fresh database does not exist in another") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  const Connection first = connect(fresh_test_database("isolation"));
  const Connection second = connect(fresh_test_database("isolation"));
  REQUIRE(connected(first));
  REQUIRE(connected(second));
  REQUIRE(std::string(PQdb(first.get())) != PQdb(second.get()));

  query(first, "CREATE TABLE devices (id text PRIMARY KEY)");
  query(first, "INSERT INTO devices VALUES ('sensor-1')");
  // Positive control: the table is there, with its row, where it was made.
  CHECK(query(first, "SELECT to_regclass('public.devices')::text") == "devices");
  CHECK(query(first, "SELECT id FROM devices") == "sensor-1");
  CHECK(query(second, "SELECT to_regclass('public.devices')::text") == std::nullopt);
  CHECK(query(second, kTablesInPublic) == "0");
}

TEST_CASE("database names are valid identifiers whatever the label") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  const std::string long_label(100, 'X');
  for (const std::string label :
       {"Registry: Store/Ä \"quoted\"; DROP", "", "42", long_label.c_str()}) {
    const Connection conn = connect(fresh_test_database(label));
    INFO("label " << label << ": " << PQerrorMessage(conn.get()));
    REQUIRE(connected(conn));
    const std::string name = PQdb(conn.get());
    CHECK(name.size() <= 63);
    CHECK(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos);
    CHECK(query(conn, "SELECT current_database()") == name);
  }
}

TEST_CASE("the cluster listens on 127.0.0.1 only and wants the password over TCP") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  const std::string conninfo = fresh_test_database("tcp");
  const Connection conn = connect(conninfo);
  REQUIRE(connected(conn));
  CHECK(query(conn, "SHOW listen_addresses") == "127.0.0.1");
  CHECK(query(conn, "SELECT host(inet_server_addr())") == "127.0.0.1");

  // A client that does not know the password is refused (the conninfo's passfile holds it).
  const Connection wrong = connect(conninfo + " password=wrong");
  CHECK_FALSE(connected(wrong));
  CHECK_THAT(PQerrorMessage(wrong.get()), Catch::Contains("password authentication failed"));
}

TEST_CASE("without ONBOARD_TEST_PG_DIR there is no cluster and CI may not skip its tests") {
  const ScopedEnv no_dir("ONBOARD_TEST_PG_DIR", std::nullopt);
  CHECK(onboard::test::test_cluster_conninfo() == std::nullopt);
  CHECK_THAT(onboard::test::test_cluster_missing(), Catch::Contains("ONBOARD_TEST_PG_DIR"));
  CHECK_THROWS_WITH(fresh_test_database("none"), Catch::Contains("ONBOARD_TEST_PG_DIR"));
  {
    const ScopedEnv ci("CI", "true");
    CHECK(onboard::test::test_cluster_required());
  }
  {
    const ScopedEnv ci("CI", std::nullopt);
    CHECK_FALSE(onboard::test::test_cluster_required());
  }
}

TEST_CASE("a directory without a started cluster is an error naming the fixture") {
  const ScopedEnv dir("ONBOARD_TEST_PG_DIR", "/nonexistent/onboard-pg");
  CHECK_THROWS_WITH(onboard::test::test_cluster_conninfo(),
                    Catch::Contains("postgres: start cluster"));
}

TEST_CASE("pg_cluster stop ends the server it started and removes its directory") {
  // A cluster of its own, not the shared one; short path for the unix socket.
  const std::filesystem::path dir = "/tmp/onboard-pg-stop-" + std::to_string(::getpid());
  // Whatever fails below, no server is left running.
  struct StopAtEnd {
    std::filesystem::path dir;
    ~StopAtEnd() { onboard::test::run({PG_CLUSTER_SCRIPT, "stop", dir.string()}); }
  } stop_at_end{dir};
  const auto started = onboard::test::run({PG_CLUSTER_SCRIPT, "start", dir.string()});
  INFO(started.err);
  REQUIRE(started.exit_code == 0);

  std::string conninfo;
  std::getline(std::ifstream(dir / "conninfo"), conninfo);
  pid_t pid = 0;
  std::ifstream(dir / "pid") >> pid;
  REQUIRE(pid > 0);
  // Positive control: the server answers before it is stopped.
  REQUIRE(connected(connect(conninfo)));
  // libpq reads the password file at connect time, and stop removes it: keep the password.
  std::string pgpass;
  std::getline(std::ifstream(dir / "pgpass"), pgpass);
  const std::string with_password =
      conninfo + " passfile=/nonexistent password=" + pgpass.substr(pgpass.rfind(':') + 1);
  REQUIRE(connected(connect(with_password)));

  const auto stopped = onboard::test::run({PG_CLUSTER_SCRIPT, "stop", dir.string()});
  INFO(stopped.err);
  CHECK(stopped.exit_code == 0);
  CHECK_FALSE(connected(connect(with_password)));
  CHECK((::kill(pid, 0) == -1 && errno == ESRCH));
  CHECK_FALSE(std::filesystem::exists(dir));

  // Stopping again, or what was never started, is not an error.
  CHECK(onboard::test::run({PG_CLUSTER_SCRIPT, "stop", dir.string()}).exit_code == 0);
}
