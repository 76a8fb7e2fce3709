// The throwaway PostgreSQL cluster the tests share (tests/support/pg_cluster, started and stopped
// by the ctest fixture `postgres`; see tests/support/postgres.cmake), and a fresh empty database
// in it for each test.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace onboard::test {

// The libpq keyword string of the cluster's superuser and `postgres` database, read from
// $ONBOARD_TEST_PG_DIR/conninfo; nullopt when ONBOARD_TEST_PG_DIR is unset (the test was not
// given the fixture). Throws std::runtime_error when it is set but the file cannot be read.
std::optional<std::string> test_cluster_conninfo();

// Creates a new, empty database in the cluster and returns the libpq keyword string that
// connects to it. Its name is `label` (lower-cased, other characters than [a-z0-9_] made `_`),
// the process id and a counter, so that tests running at the same time never share one.
// Throws std::runtime_error (with the server's message) when there is no cluster or it fails.
std::string fresh_test_database(std::string_view label);

// Why a test that needs the cluster cannot have it ("" when it can), and whether that must fail
// the test rather than skip it: under CI ($CI is "true") a missing cluster is an error, so that
// the PostgreSQL tests can never pass there by not running.
std::string test_cluster_missing();
bool test_cluster_required();

// A cluster of one test's own, for what the shared one must not suffer: going down, coming back,
// hanging. Started by the constructor (throws std::runtime_error on failure), stopped and removed
// by the destructor. The script's path comes from the build (PG_CLUSTER_SCRIPT).
class PrivateCluster {
 public:
  explicit PrivateCluster(std::string script);
  ~PrivateCluster();
  PrivateCluster(const PrivateCluster&) = delete;
  PrivateCluster& operator=(const PrivateCluster&) = delete;

  // The cluster's `postgres` database as a libpq keyword string.
  const std::string& conninfo() const noexcept { return conninfo_; }
  // A new empty database in it, as fresh_test_database does in the shared cluster.
  std::string fresh_database(std::string_view label);
  void down();    // stops, keeping its data and port
  void up();      // starts again
  void pause();   // SIGSTOP to the server and its backends: it hangs
  void resume();  // SIGCONT

 private:
  void run_script(const char* command);
  std::string script_, dir_, conninfo_;
};

}  // namespace onboard::test

// First statement of a Catch2 test case that needs the cluster: without one it fails the test
// under CI and otherwise returns from it with a warning (Catch2 v2 has no SKIP).
#define ONBOARD_REQUIRE_TEST_CLUSTER()                                                \
  do {                                                                                \
    if (const std::string onboard_missing_ = ::onboard::test::test_cluster_missing(); \
        !onboard_missing_.empty()) {                                                  \
      if (::onboard::test::test_cluster_required()) FAIL(onboard_missing_);           \
      WARN("skipped: " << onboard_missing_);                                          \
      return;                                                                         \
    }                                                                                 \
  } while (false)
