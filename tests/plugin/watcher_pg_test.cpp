// The watcher on a real PostgreSQL registry: a commit wakes it through the change notification;
// a database that goes away or hangs leaves the last snapshot in force, is reported once, and once
// it is back every change made meanwhile reaches the broker, kicks included.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "plugin/watcher.h"
#include "registry/open.h"
#include "registry/pg_access.h"
#include "tests/registry/fixtures.h"
#include "tests/support/postgres.h"
#include "tests/support/result.h"

using namespace onboard;
using namespace onboard::plugin;
using namespace std::chrono_literals;
using onboard::test::kAlice;
using onboard::test::must;
using onboard::test::register_test_device;

namespace {

registry::Location location_of(const std::string& conninfo) {
  return registry::Location{registry::Backend::postgresql, conninfo};
}

std::unique_ptr<registry::Store> writer(const std::string& conninfo) {
  return must(registry::open_store(location_of(conninfo), registry::OpenMode::read_write));
}

struct Broker {
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  std::shared_ptr<const registry::Snapshot> snapshot;
  std::unique_ptr<Watcher> watcher;
  std::vector<std::string> kicks;
  std::vector<std::string> logs;

  explicit Broker(const std::string& conninfo) {
    auto source = access_source(location_of(conninfo), 2s);
    snapshot = must(source->reopen());
    watcher = std::make_unique<Watcher>(std::move(source), snapshot, handover, last_ok);
  }
  void poll() {
    watcher->poll();
    auto taken = handover.take();
    if (taken.snapshot) snapshot = taken.snapshot;
    kicks.insert(kicks.end(), taken.kicks.begin(), taken.kicks.end());
    for (auto& [level, line] : taken.logs) logs.push_back(line);
  }
  std::size_t logged(const std::string& text) const {
    std::size_t n = 0;
    for (const auto& line : logs) n += line.find(text) != std::string::npos ? 1 : 0;
    return n;
  }
  registry::DeviceStatus status_of(const std::string& id) const {
    const auto* device = snapshot->find_device(id);
    REQUIRE(device != nullptr);
    return device->status();
  }
};

}  // namespace

TEST_CASE("a commit on PostgreSQL wakes the broker's watcher and its change reaches the snapshot") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  const std::string db = onboard::test::fresh_test_database("watcher");
  auto store = writer(db);
  register_test_device(*store, "dev-1");
  auto access = must(registry::open_pg_access(location_of(db), 2s));
  // Control: nothing committed, nothing heard.
  CHECK_FALSE(must(access->wait_for_change(200ms)));
  must(store->set_device_enabled("dev-1", false, kAlice));
  CHECK(must(access->wait_for_change(2s)));
  // A write that changes nothing the broker reads sends no word.
  must(store->record_event("note", "x", "{}", kAlice));
  CHECK_FALSE(must(access->wait_for_change(200ms)));

  Broker broker(db);
  must(store->set_device_enabled("dev-1", true, kAlice));
  broker.poll();
  CHECK(broker.status_of("dev-1") == registry::DeviceStatus::active);
}

TEST_CASE(
    "while PostgreSQL is down the broker keeps its snapshot and afterwards applies what it "
    "missed") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  onboard::test::PrivateCluster cluster(PG_CLUSTER_SCRIPT);
  const std::string db = cluster.fresh_database("outage");
  {
    auto store = writer(db);
    register_test_device(*store, "dev-1");
    register_test_device(*store, "dev-2");
  }
  Broker broker(db);
  broker.poll();
  REQUIRE(broker.logs.empty());

  cluster.down();
  for (int i = 0; i < 3; ++i) {
    broker.poll();
    std::this_thread::sleep_for(300ms);
  }
  // Reported once, and the last snapshot still decides.
  CHECK(broker.logged("cannot read the registry") == 1);
  CHECK(broker.status_of("dev-1") == registry::DeviceStatus::active);

  cluster.up();
  {
    auto store = writer(db);  // a revocation the broker could not hear about
    must(store->revoke_device("dev-1", RevocationReason::key_compromise, kAlice));
  }
  // The backoff (1 s after the first failure, then 2 s) may hold the next attempt back a while.
  for (int i = 0; i < 40 && broker.logged("registry readable again") == 0; ++i) {
    std::this_thread::sleep_for(250ms);
    broker.poll();
  }
  CHECK(broker.logged("registry readable again") == 1);
  CHECK(broker.status_of("dev-1") == registry::DeviceStatus::revoked);
  CHECK(broker.status_of("dev-2") == registry::DeviceStatus::active);
  CHECK(broker.kicks == std::vector<std::string>{"dev-1"});
}

TEST_CASE("a PostgreSQL server that hangs does not hang the watcher") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  onboard::test::PrivateCluster cluster(PG_CLUSTER_SCRIPT);
  const std::string db = cluster.fresh_database("hang");
  register_test_device(*writer(db), "dev-1");
  Broker broker(db);

  cluster.pause();
  const auto started = std::chrono::steady_clock::now();
  broker.poll();  // the statement timeout (2 s here) ends the wait
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited < 10s);
  CHECK(broker.logged("cannot read the registry") == 1);
  CHECK(broker.status_of("dev-1") == registry::DeviceStatus::active);

  cluster.resume();
  must(writer(db)->set_device_enabled("dev-1", false, kAlice));
  for (int i = 0; i < 40 && broker.logged("registry readable again") == 0; ++i) {
    std::this_thread::sleep_for(250ms);
    broker.poll();
  }
  CHECK(broker.status_of("dev-1") == registry::DeviceStatus::disabled);
  CHECK(broker.kicks == std::vector<std::string>{"dev-1"});
}
