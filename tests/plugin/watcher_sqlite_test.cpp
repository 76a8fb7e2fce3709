// The watcher on a real SQLite registry, with a writer in the same places onboardctl writes from:
// whatever happens to the registry's files, a change must reach the snapshot, or the watcher must
// say it cannot read the registry (so that the staleness limit takes over). Never silence.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "plugin/watcher.h"
#include "registry/sqlite_store.h"
#include "tests/registry/fixtures.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::plugin;
using onboard::test::kAlice;
using onboard::test::must;
using onboard::test::register_test_device;
using onboard::test::TempDir;

namespace {

// One onboardctl command: open, write, close.
template <class Change>
void write(const std::string& path, Change change) {
  auto store = must(registry::open_sqlite_store(path, registry::OpenMode::read_write));
  change(*store);
}

registry::DeviceStatus status_of(const registry::Snapshot& snapshot, const std::string& id) {
  const auto* device = snapshot.find_device(id);
  REQUIRE(device != nullptr);
  return device->status();
}

struct Broker {
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  std::shared_ptr<const registry::Snapshot> snapshot;
  std::unique_ptr<Watcher> watcher;

  explicit Broker(const std::string& path) {
    auto source = sqlite_access_source(path);
    snapshot = must(source->reopen());
    watcher = std::make_unique<Watcher>(std::move(source), snapshot, handover, last_ok);
  }
  // One poll; the snapshot the broker would now decide with, and what it was told.
  Handover::Taken poll() {
    watcher->poll();
    auto taken = handover.take();
    if (taken.snapshot) snapshot = taken.snapshot;
    return taken;
  }
  static bool logged(const Handover::Taken& taken, const std::string& text) {
    for (const auto& [level, line] : taken.logs)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }
};

}  // namespace

TEST_CASE("a change written after the registry's WAL files were deleted still reaches the broker") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  write(path, [](registry::Store& store) {
    register_test_device(store, "dev-1");
    register_test_device(store, "dev-2");
  });
  Broker broker(path);
  REQUIRE(status_of(*broker.snapshot, "dev-1") == registry::DeviceStatus::active);

  // Control: an ordinary change arrives through the change feed, without a full read.
  write(path,
        [](registry::Store& store) { must(store.set_device_enabled("dev-2", false, kAlice)); });
  auto taken = broker.poll();
  CHECK(status_of(*broker.snapshot, "dev-2") == registry::DeviceStatus::disabled);
  CHECK(taken.kicks == std::vector<std::string>{"dev-2"});
  CHECK_FALSE(Broker::logged(taken, "read in full"));

  // A backup script or an operator removes the WAL files while the broker holds them open. The
  // broker's connection would go on reading the registry as it was: the next poll must notice and
  // read it again.
  const std::string side = GENERATE(as<std::string>{}, "-wal", "-shm", "both");
  INFO("removed: " << side);
  REQUIRE(std::filesystem::exists(path + "-wal"));
  REQUIRE(std::filesystem::exists(path + "-shm"));
  if (side != "-shm") std::filesystem::remove(path + "-wal");
  if (side != "-wal") std::filesystem::remove(path + "-shm");
  taken = broker.poll();
  CHECK(Broker::logged(taken, "file was removed or replaced"));
  CHECK(Broker::logged(taken, "read in full"));

  write(path, [](registry::Store& store) {
    must(store.revoke_device("dev-1", RevocationReason::key_compromise, kAlice));
  });
  taken = broker.poll();
  CHECK(status_of(*broker.snapshot, "dev-1") == registry::DeviceStatus::revoked);
  CHECK(taken.kicks == std::vector<std::string>{"dev-1"});
  CHECK_FALSE(Broker::logged(taken, "read in full"));  // through the change feed again

  write(path,
        [](registry::Store& store) { must(store.set_device_enabled("dev-2", true, kAlice)); });
  broker.poll();
  CHECK(status_of(*broker.snapshot, "dev-2") == registry::DeviceStatus::active);
}
