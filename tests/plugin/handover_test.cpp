// The hand-over between the watcher thread and the broker's tick: what is posted is taken exactly
// once, a newer snapshot replaces one not yet taken while the devices to disconnect add up, and
// nothing is lost when both threads work at once.
#include "plugin/handover.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace onboard;
using namespace onboard::plugin;
using registry::Snapshot;

namespace {

std::shared_ptr<const Snapshot> snapshot_at(std::int64_t seq) {
  return Snapshot::build({}, {}, seq);
}

}  // namespace

TEST_CASE("a posted change is taken exactly once") {
  Handover handover;
  CHECK_FALSE(handover.pending());
  CHECK_FALSE(handover.take().snapshot);  // nothing posted: nothing taken

  const auto next = snapshot_at(2);
  handover.post(next, {"dev-1"});
  REQUIRE(handover.pending());
  auto taken = handover.take();
  CHECK(taken.snapshot == next);
  CHECK(taken.kicks == std::vector<std::string>{"dev-1"});
  CHECK_FALSE(handover.pending());

  auto again = handover.take();
  CHECK_FALSE(again.snapshot);
  CHECK(again.kicks.empty());
  CHECK(again.logs.empty());
  CHECK_FALSE(again.crl_reload);
}

TEST_CASE("a newer snapshot replaces an untaken older one and the kicks of both are kept") {
  Handover handover;
  const auto older = snapshot_at(2);
  const auto newer = snapshot_at(3);
  handover.post(older, {"dev-1"});
  handover.post(newer, {"dev-2", "dev-3"});
  // Kicks alone (a full reload that found no newer snapshot to hand over) keep the newest one.
  handover.post(nullptr, {"dev-4"});
  auto taken = handover.take();
  CHECK(taken.snapshot == newer);
  CHECK(taken.kicks == std::vector<std::string>{"dev-1", "dev-2", "dev-3", "dev-4"});
}

TEST_CASE("log lines are handed over in order and a CRL reload carries the newest stamp") {
  Handover handover;
  handover.post_log(LogLevel::error, "cannot read the registry");
  REQUIRE(handover.pending());  // a log line alone is worth a tick
  handover.post_log(LogLevel::notice, "registry readable again");
  handover.post_crl_reload(FileStamp{1, 10, 100, 1000});
  handover.post_crl_reload(FileStamp{1, 11, 200, 2000});
  auto taken = handover.take();
  CHECK_FALSE(taken.snapshot);
  REQUIRE(taken.logs.size() == 2);
  CHECK(taken.logs[0].first == LogLevel::error);
  CHECK(taken.logs[0].second == "cannot read the registry");
  CHECK(taken.logs[1].first == LogLevel::notice);
  REQUIRE(taken.crl_reload);
  CHECK(*taken.crl_reload == FileStamp{1, 11, 200, 2000});
  CHECK_FALSE(handover.pending());
  CHECK(handover.take().logs.empty());
}

TEST_CASE("a watcher posting while the broker takes loses no kick and never goes back in time") {
  // Every post carries a kick; every 100th post a newer snapshot (building one is not free).
  constexpr int kPosts = 5000;
  constexpr int kPerSnapshot = 100;
  std::vector<std::shared_ptr<const Snapshot>> snapshots;
  for (int seq = 1; seq <= kPosts / kPerSnapshot; ++seq) snapshots.push_back(snapshot_at(seq));

  Handover handover;
  std::atomic<bool> done{false};
  std::atomic<int> takes{0};
  std::thread watcher([&] {
    for (int i = 1; i <= kPosts; ++i) {
      handover.post(snapshots[static_cast<std::size_t>((i - 1) / kPerSnapshot)],
                    {"dev-" + std::to_string(i)});
      if (i % kPerSnapshot == 0) handover.post_log(LogLevel::info, std::to_string(i));
      // Halfway, wait for the broker's first take, so that the two threads surely overlap.
      while (i == kPosts / 2 && takes.load() == 0) std::this_thread::yield();
    }
    done.store(true);
  });

  // The broker's tick, as plugin.cpp runs it: take when pending() says so.
  std::vector<std::string> kicks;
  std::vector<std::string> logs;
  std::int64_t last_seq = 0;
  bool went_back = false;
  auto tick = [&] {
    if (!handover.pending()) return;
    auto taken = handover.take();
    ++takes;
    if (taken.snapshot) {
      if (taken.snapshot->change_seq() < last_seq) went_back = true;
      last_seq = taken.snapshot->change_seq();
    }
    kicks.insert(kicks.end(), taken.kicks.begin(), taken.kicks.end());
    for (auto& [level, line] : taken.logs) logs.push_back(line);
  };
  while (!done.load()) tick();
  watcher.join();
  tick();  // whatever the last posts left

  CHECK_FALSE(went_back);
  CHECK(last_seq == kPosts / kPerSnapshot);  // the newest snapshot arrived
  REQUIRE(kicks.size() == static_cast<std::size_t>(kPosts));
  for (int i = 1; i <= kPosts; ++i) {
    // Every kick, once, in the order posted.
    if (kicks[static_cast<std::size_t>(i - 1)] != "dev-" + std::to_string(i)) {
      FAIL("kick " << i << " is " << kicks[static_cast<std::size_t>(i - 1)]);
    }
  }
  REQUIRE(logs.size() == static_cast<std::size_t>(kPosts / kPerSnapshot));
  CHECK(logs.back() == std::to_string(kPosts));
  CHECK(takes.load() > 1);  // the tick ran while the watcher posted, not once at the end
  CHECK_FALSE(handover.pending());
}

TEST_CASE(
    "a snapshot the broker never took is freed outside the lock when a newer one replaces it") {
  Handover handover;
  std::atomic<bool> freed{false}, broker_took_meanwhile{false};
  std::future<void> taking;  // outlives the deleter, so that a lock held there cannot hang it
  {
    auto inner = snapshot_at(1);
    // Its last reference, whose deleter asks the broker's side to take while it frees.
    std::shared_ptr<const Snapshot> first(inner.get(), [&, inner](const Snapshot*) mutable {
      taking = std::async(std::launch::async, [&] { (void)handover.take(); });
      broker_took_meanwhile = taking.wait_for(std::chrono::seconds(2)) == std::future_status::ready;
      inner.reset();
      freed = true;
    });
    handover.post(std::move(first), {});
  }
  CHECK_FALSE(freed);
  handover.post(snapshot_at(2), {});  // replaces the untaken first
  CHECK(freed);
  CHECK(broker_took_meanwhile);  // the lock was not held while it was freed
}
