# A throwaway PostgreSQL 15 cluster for the tests that need one, as a ctest fixture named `postgres`:
# `postgres: start cluster` runs tests/support/pg_cluster start before them, `postgres: stop cluster`
# stops it and removes its directory after them (also when they fail, and whatever `ctest -j`).
# Tests ask for it with one of the functions below; each then gets ONBOARD_TEST_PG_DIR in its
# environment and makes its own empty database with onboard::test::fresh_test_database().
#
# The cluster's directory holds its unix socket, whose path may not exceed ~107 bytes, so it lives
# under /tmp rather than in the build tree, named after a hash of the build tree: two build trees
# (default, asan, tsan) get two clusters and may run at the same time.
string(SHA256 _onboard_pg_hash "${CMAKE_BINARY_DIR}")
string(SUBSTRING "${_onboard_pg_hash}" 0 12 _onboard_pg_hash)
set(ONBOARD_TEST_PG_DIR "/tmp/onboard-pg-${_onboard_pg_hash}")
# Global, so that the functions below work from any directory of the project.
set_property(GLOBAL PROPERTY ONBOARD_TEST_PG_DIR "${ONBOARD_TEST_PG_DIR}")
set(ONBOARD_PG_CLUSTER_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/pg_cluster")

add_test(NAME "postgres: start cluster" COMMAND "${ONBOARD_PG_CLUSTER_SCRIPT}" start "${ONBOARD_TEST_PG_DIR}")
add_test(NAME "postgres: stop cluster" COMMAND "${ONBOARD_PG_CLUSTER_SCRIPT}" stop "${ONBOARD_TEST_PG_DIR}")
set_tests_properties("postgres: start cluster" PROPERTIES FIXTURES_SETUP postgres TIMEOUT 120)
set_tests_properties("postgres: stop cluster" PROPERTIES FIXTURES_CLEANUP postgres TIMEOUT 60)

# Sets <out_var> to the test properties that make a test use the cluster, for tests registered with
# catch_discover_tests (they do not exist at configure time):
#   onboard_postgres_test_properties(pg_properties)
#   catch_discover_tests(my_tests TEST_PREFIX "my: " PROPERTIES ${pg_properties})
function(onboard_postgres_test_properties out_var)
  get_property(dir GLOBAL PROPERTY ONBOARD_TEST_PG_DIR)
  set(${out_var} FIXTURES_REQUIRED postgres ENVIRONMENT "ONBOARD_TEST_PG_DIR=${dir}" PARENT_SCOPE)
endfunction()

# Makes the named tests (registered with add_test) use the cluster:
#   onboard_requires_postgres("my: first test" "my: second test")
function(onboard_requires_postgres)
  onboard_postgres_test_properties(properties)
  set_tests_properties(${ARGN} PROPERTIES ${properties})
endfunction()
