#include "tests/support/postgres.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tests/support/run.h"

namespace onboard::test {
namespace {

struct PqFinish {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PqClear {
  void operator()(PGresult* result) const { PQclear(result); }
};
struct PqFreeOptions {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};
using Connection = std::unique_ptr<PGconn, PqFinish>;
using Result = std::unique_ptr<PGresult, PqClear>;

// The server's message without its trailing newline.
std::string message_of(const PGconn* conn) {
  std::string message = PQerrorMessage(conn);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  return message;
}

// A value in a libpq keyword string: quoted, with ' and \ escaped, whenever it is not a plain word.
std::string quoted(std::string_view value) {
  bool plain = !value.empty();
  for (char c : value) plain = plain && c != ' ' && c != '\'' && c != '\\' && c != '=';
  if (plain) return std::string(value);
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// `conninfo` with its dbname replaced by `dbname`.
std::string with_dbname(const std::string& conninfo, const std::string& dbname) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, PqFreeOptions> options(
      PQconninfoParse(conninfo.c_str(), &error));
  if (!options) {
    std::string message = error != nullptr ? error : "out of memory";
    PQfreemem(error);
    throw std::runtime_error("the test cluster's conninfo is invalid: " + message);
  }
  std::string out;
  for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    const std::string_view keyword = option->keyword;
    if (keyword == "dbname" || option->val == nullptr) continue;
    out += std::string(keyword) + "=" + quoted(option->val) + " ";
  }
  return out + "dbname=" + dbname;
}

// A valid unquoted identifier (at most 63 bytes, lower case) unique to this process and call.
std::string database_name(std::string_view label, unsigned long counter) {
  std::string name = "t_";
  for (char c : label) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    name += ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : '_';
  }
  const std::string suffix = "_" + std::to_string(::getpid()) + "_" + std::to_string(counter);
  name.resize(std::min(name.size(), std::size_t{63} - suffix.size()));
  return name + suffix;
}

}  // namespace

std::optional<std::string> test_cluster_conninfo() {
  const char* dir = std::getenv("ONBOARD_TEST_PG_DIR");
  if (dir == nullptr || *dir == '\0') return std::nullopt;
  const std::string path = std::string(dir) + "/conninfo";
  std::ifstream in(path);
  std::string conninfo;
  if (!in || !std::getline(in, conninfo) || conninfo.empty()) {
    throw std::runtime_error("cannot read the test cluster's " + path +
                             " (did `postgres: start cluster` run and succeed?)");
  }
  return conninfo;
}

namespace {

std::string fresh_database_in(const std::string& conninfo, std::string_view label);

}  // namespace

std::string fresh_test_database(std::string_view label) {
  const std::optional<std::string> conninfo = test_cluster_conninfo();
  if (!conninfo) throw std::runtime_error(test_cluster_missing());
  return fresh_database_in(*conninfo, label);
}

namespace {

std::string fresh_database_in(const std::string& cluster, std::string_view label) {
  const std::optional<std::string> conninfo = cluster;
  Connection conn(PQconnectdb(conninfo->c_str()));
  if (!conn) throw std::runtime_error("libpq: out of memory");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("cannot connect to the test cluster: " + message_of(conn.get()));
  }
  static std::atomic<unsigned long> counter{0};
  // A name left over by an earlier process with the same pid is taken: try the next one.
  for (int attempt = 0; attempt < 10; ++attempt) {
    const std::string name = database_name(label, ++counter);
    // template0: nothing that anyone added to template1 leaks into the test.
    const std::string sql = "CREATE DATABASE " + name + " TEMPLATE template0";
    Result result(PQexec(conn.get(), sql.c_str()));
    if (result && PQresultStatus(result.get()) == PGRES_COMMAND_OK) {
      return with_dbname(*conninfo, name);
    }
    const char* state = result ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
    if (state == nullptr || std::string_view(state) != "42P04") {  // 42P04: duplicate_database
      throw std::runtime_error("CREATE DATABASE " + name + " failed: " + message_of(conn.get()));
    }
  }
  throw std::runtime_error("no free database name for " + std::string(label));
}

}  // namespace

std::string test_cluster_missing() {
  const char* dir = std::getenv("ONBOARD_TEST_PG_DIR");
  if (dir != nullptr && *dir != '\0') return {};
  return "ONBOARD_TEST_PG_DIR is not set: this test needs the PostgreSQL test cluster, which ctest "
         "starts for it (fixture `postgres`, tests/support/postgres.cmake)";
}

bool test_cluster_required() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string_view(ci) == "true";
}

PrivateCluster::PrivateCluster(std::string script)
    : script_(std::move(script)), dir_("/tmp/onboard-pgp-" + std::to_string(::getpid())) {
  static std::atomic<unsigned> count{0};
  dir_ += "-" + std::to_string(++count);
  run_script("start");
  std::ifstream in(dir_ + "/conninfo");
  std::getline(in, conninfo_);
  if (conninfo_.empty()) throw std::runtime_error("pg_cluster start wrote no conninfo");
}

PrivateCluster::~PrivateCluster() {
  run({script_, "resume", dir_});  // a paused server would not stop
  run({script_, "stop", dir_});
}

std::string PrivateCluster::fresh_database(std::string_view label) {
  return fresh_database_in(conninfo_, label);
}

void PrivateCluster::down() { run_script("down"); }
void PrivateCluster::up() { run_script("up"); }
void PrivateCluster::pause() { run_script("pause"); }
void PrivateCluster::resume() { run_script("resume"); }

void PrivateCluster::run_script(const char* command) {
  const auto result = run({script_, command, dir_});
  if (result.exit_code != 0) {
    throw std::runtime_error("pg_cluster " + std::string(command) + " failed: " + result.err);
  }
}

}  // namespace onboard::test
