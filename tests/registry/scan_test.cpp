// Scans (sql::Database::prepare_scan) on PostgreSQL: inside a transaction the rows come through a
// server-side cursor a batch at a time, so that the broker's snapshot of a million devices never
// holds a whole table's result, and several scans merge while other statements run between them.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "registry/pg_database.h"
#include "registry/sql.h"
#include "tests/support/postgres.h"
#include "tests/support/result.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::must;

namespace {

constexpr int kBatch = 3;

std::unique_ptr<pg::PgDatabase> scan_database() {
  const Location location{Backend::postgresql, onboard::test::fresh_test_database("scan")};
  pg::Options options;
  options.scan_batch = kBatch;
  auto db = must(pg::connect(location, options));
  db->exec(
      "CREATE TABLE numbers (n bigint PRIMARY KEY); "
      "INSERT INTO numbers SELECT generate_series(1, 10); "
      "CREATE TABLE names (name text PRIMARY KEY); "
      "INSERT INTO names VALUES ('a'), ('b'), ('c'), ('d'), ('e'), ('f'), ('g')");
  return db;
}

std::int64_t open_scan_cursors(sql::Database& db) {
  return sql::query_int64(db, "SELECT count(*) FROM pg_cursors WHERE name LIKE 'onboard_scan_%'");
}

}  // namespace

TEST_CASE("scans interleave across batch boundaries with statements between them", "[postgres]") {
  auto db = scan_database();
  db->begin(sql::Transaction::read);
  auto numbers = sql::scan(*db, "SELECT n FROM numbers WHERE n > ?1 ORDER BY n", std::int64_t{0});
  auto names = sql::scan(*db, "SELECT name FROM names ORDER BY name");
  std::vector<std::int64_t> seen_numbers;
  std::string seen_names;
  bool more_numbers = true;
  bool more_names = true;
  while (more_numbers || more_names) {
    if (more_numbers) {
      more_numbers = numbers.step();
      if (more_numbers) seen_numbers.push_back(numbers.int64(0));
    }
    if (more_names) {
      more_names = names.step();
      if (more_names) seen_names += names.view(0);
    }
    // An ordinary statement between the steps does not disturb either scan.
    CHECK(sql::query_int64(*db, "SELECT count(*) FROM numbers") == 10);
  }
  db->commit();
  CHECK(seen_numbers == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(seen_names == "abcdefg");
}

TEST_CASE("a scan holds a server-side cursor and a statement does not", "[postgres]") {
  auto db = scan_database();
  db->begin(sql::Transaction::read);
  auto whole = sql::prepare(*db, "SELECT n FROM numbers ORDER BY n");
  REQUIRE(whole.step());
  CHECK(open_scan_cursors(*db) == 0);
  auto batched = sql::scan(*db, "SELECT n FROM numbers ORDER BY n");
  REQUIRE(batched.step());
  CHECK(open_scan_cursors(*db) == 1);

  // Ended early and run again, a scan starts from its first row on a cursor of its own.
  batched.reset();
  std::int64_t sum = 0;
  while (batched.step()) sum += batched.int64(0);
  CHECK(sum == 55);
  db->commit();
  // Cursors close with their transaction.
  CHECK(open_scan_cursors(*db) == 0);
}

TEST_CASE("a scan outside a transaction returns every row at once", "[postgres]") {
  auto db = scan_database();
  auto numbers = sql::scan(*db, "SELECT n FROM numbers ORDER BY n");
  std::int64_t count = 0;
  while (numbers.step()) ++count;
  CHECK(count == 10);
}

TEST_CASE("a scan of an empty result and of an exact number of batches ends cleanly",
          "[postgres]") {
  auto db = scan_database();
  db->begin(sql::Transaction::read);
  auto none = sql::scan(*db, "SELECT n FROM numbers WHERE n > ?1", std::int64_t{10});
  CHECK_FALSE(none.step());
  CHECK_FALSE(none.step());
  // Nine rows: three full batches, then an empty fetch ends the scan.
  auto nine = sql::scan(*db, "SELECT n FROM numbers WHERE n <= ?1 ORDER BY n", std::int64_t{9});
  std::int64_t count = 0;
  while (nine.step()) ++count;
  CHECK(count == 9);
  CHECK_FALSE(nine.step());
  db->commit();
}
