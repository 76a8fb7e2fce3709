// The broker's first snapshot is read on the watcher thread, not in the plugin's init: until it is
// handed over every connect is refused and every topic check denied (fail closed), after it they
// are decided by it. A first read that fails starts from the cache file, or keeps refusing and is
// retried.
#include <catch2/catch.hpp>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>

#include "plugin/broker_snapshot.h"
#include "plugin/watcher.h"
#include "registry/snapshot_cache.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::plugin;
using namespace std::chrono_literals;
using registry::Snapshot;

namespace {

std::shared_ptr<const Snapshot> registry_of(std::int64_t seq) {
  registry::CertificateAccess cert{"fp-dev1", "01", registry::CertificateStatus::active, 0,
                                   4'000'000'000};
  registry::DeviceAccess dev{"dev1", registry::DeviceStatus::active, "", {}, {cert}};
  dev.rules.push_back(acl::Rule{1, "devices/%d/#", acl::kReadWrite, acl::Effect::allow, 0});
  return Snapshot::build({std::move(dev)}, {}, seq);
}

// A registry whose full read waits until the test lets it finish, or fails while `fail` is set.
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool reading = false, released = false, fail = false;
  int reads = 0;
  std::shared_ptr<const Snapshot> full = registry_of(7);
};

class SlowSource final : public AccessSource {
 public:
  explicit SlowSource(Gate& gate) : gate_(gate) {}
  std::string name() const override { return "registry slow"; }
  std::optional<std::string> outdated() override { return std::nullopt; }
  Result<std::shared_ptr<const Snapshot>> reopen() override {
    std::unique_lock lock(gate_.mutex);
    ++gate_.reads;
    if (gate_.fail) return make_error(Errc::io, "disk on fire");
    gate_.reading = true;
    gate_.cv.notify_all();
    gate_.cv.wait(lock, [&] { return gate_.released; });
    return gate_.full;
  }
  Result<std::optional<registry::Refresh>> refresh(const Snapshot&) override {
    return std::optional<registry::Refresh>();
  }

 private:
  Gate& gate_;
};

bool logged(const Handover::Taken& taken, LogLevel level, const std::string& text) {
  for (const auto& [l, line] : taken.logs)
    if (l == level && line.find(text) != std::string::npos) return true;
  return false;
}

const registry::ConnectRequest kDev1{"fp-dev1", "dev1", "dev1"};

}  // namespace

TEST_CASE(
    "before the first snapshot is in every connect and topic check is refused, after it "
    "they are decided by it") {
  Gate gate;
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  Watcher watcher(std::make_unique<SlowSource>(gate), nullptr, handover, last_ok);
  BrokerSnapshot broker;
  ClientRules rules;
  std::jthread thread([&](std::stop_token stop) { watcher.run(stop, 10ms); });
  {
    std::unique_lock lock(gate.mutex);
    REQUIRE(gate.cv.wait_for(lock, 5s, [&] { return gate.reading; }));
  }

  // The full read is under way on the watcher thread: nothing to decide with yet.
  CHECK_FALSE(handover.take_snapshot());
  CHECK_FALSE(broker.loaded());
  CHECK_FALSE(broker.connect_verdict(kDev1, std::time(nullptr), false).has_value());
  CHECK(broker.decide(rules, "dev1", "dev1", acl::kPublish, "devices/dev1/t").decision ==
        acl::Decision::deny);
  CHECK(broker.decide(rules, "dev1", "dev1", acl::kSubscribe, "devices/dev1/#").decision ==
        acl::Decision::deny);
  CHECK(last_ok.load() == 0);

  {
    std::lock_guard lock(gate.mutex);
    gate.released = true;
  }
  gate.cv.notify_all();
  std::shared_ptr<const Snapshot> first;
  for (int i = 0; i < 500 && !first; ++i) {
    std::this_thread::sleep_for(10ms);
    if (handover.pending()) first = handover.take_snapshot();
  }
  REQUIRE(first == gate.full);
  broker.replace(first, handover);
  // take_snapshot() left the rest for the tick.
  auto rest = handover.take();
  CHECK_FALSE(rest.snapshot);
  CHECK(logged(rest, LogLevel::notice, "registry slow: 1 devices, change 7"));
  CHECK(last_ok.load() != 0);

  // Positive control: the same device, the same topics, now allowed.
  REQUIRE(broker.loaded());
  auto verdict = broker.connect_verdict(kDev1, std::time(nullptr), false);
  REQUIRE(verdict.has_value());
  CHECK(verdict->accepted());
  CHECK(verdict->device_id == "dev1");
  CHECK(broker.decide(rules, "dev1", "dev1", acl::kPublish, "devices/dev1/t").decision ==
        acl::Decision::allow);
  CHECK(broker.decide(rules, "dev1", "dev1", acl::kSubscribe, "devices/dev1/#").decision ==
        acl::Decision::allow);
  // And what the registry refuses is still refused.
  auto stranger = broker.connect_verdict({"fp-other", "dev2", "dev2"}, std::time(nullptr), false);
  REQUIRE(stranger.has_value());
  CHECK(stranger->reason == registry::ConnectReason::unknown_certificate);
  CHECK(broker.decide(rules, "dev1", "dev1", acl::kPublish, "devices/dev2/t").decision !=
        acl::Decision::allow);
  thread.request_stop();
}

TEST_CASE("a first read that fails starts from the cache file when there is one") {
  test::TempDir dir;
  const auto cache = (dir / "snapshot").string();
  REQUIRE(registry::write_snapshot_cache(*registry_of(5), cache).ok());
  Gate gate;
  gate.fail = true;
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  Watcher watcher(std::make_unique<SlowSource>(gate), nullptr, handover, last_ok);
  watcher.keep_cache(cache);
  watcher.poll();
  auto taken = handover.take();
  REQUIRE(taken.snapshot);
  CHECK(taken.snapshot->change_seq() == 5);
  CHECK(taken.snapshot->find_device("dev1") != nullptr);
  CHECK(logged(taken, LogLevel::warning, "disk on fire; starting from the cache file " + cache));
  CHECK(last_ok.load() != 0);  // as old as the file
}

TEST_CASE(
    "a first read that fails without a cache file keeps refusing, says so once, and is "
    "retried") {
  Gate gate;
  gate.fail = true;
  gate.released = true;
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  Watcher watcher(std::make_unique<SlowSource>(gate), nullptr, handover, last_ok);
  watcher.poll();
  watcher.request_full_reload();  // a SIGHUP before the first read is in: the same full read
  watcher.poll();
  auto taken = handover.take();
  CHECK_FALSE(taken.snapshot);
  REQUIRE(taken.logs.size() == 1);
  CHECK(logged(taken, LogLevel::error,
               "cannot read the registry: disk on fire (no client is let in until it is read)"));
  CHECK(last_ok.load() == 0);

  {
    std::lock_guard lock(gate.mutex);
    gate.fail = false;
  }
  watcher.poll();
  CHECK(gate.reads == 3);
  taken = handover.take();
  CHECK(taken.snapshot == gate.full);
  CHECK(logged(taken, LogLevel::notice, "registry readable again"));
  CHECK(last_ok.load() != 0);
}
