// The watcher thread against a fake registry that fails, stalls, throws and changes: the broker
// thread must always get the last good snapshot, the lines to log and the devices to disconnect,
// and nothing the source does may escape the thread.
#include "plugin/watcher.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>

using namespace onboard;
using namespace onboard::plugin;
using namespace std::chrono_literals;
using registry::DeviceAccess;
using registry::Snapshot;

namespace {

DeviceAccess device(std::string id) {
  registry::CertificateAccess cert{"fp-" + id, "01", registry::CertificateStatus::active, 0,
                                   4'000'000'000};
  return DeviceAccess{std::move(id), registry::DeviceStatus::active, "", {}, {cert}};
}

std::shared_ptr<const Snapshot> snapshot_of(std::vector<std::string> ids, std::int64_t seq) {
  std::vector<DeviceAccess> devices;
  for (auto& id : ids) devices.push_back(device(std::move(id)));
  return Snapshot::build(std::move(devices), {}, seq);
}

// What the next call of the source does; shared with the test, which changes it between polls.
struct Script {
  enum class Next { nothing, change, fail, throw_bad_alloc, stall };
  std::mutex mutex;
  std::condition_variable cv;
  Next next = Next::nothing;
  bool current = true;
  bool released = false;
  bool stalled = false;
  int refreshes = 0, reopens = 0;
  std::shared_ptr<const Snapshot> full = snapshot_of({"a"}, 1);  // what reopen() reads
  registry::Refresh change;
};

class FakeSource final : public AccessSource {
 public:
  explicit FakeSource(Script& script) : script_(script) {}
  std::string name() const override { return "registry fake"; }
  std::optional<std::string> outdated() override {
    std::lock_guard lock(script_.mutex);
    if (script_.current) return std::nullopt;
    return "the file was replaced";
  }
  Result<std::shared_ptr<const Snapshot>> reopen() override {
    std::lock_guard lock(script_.mutex);
    ++script_.reopens;
    if (script_.next == Script::Next::fail) return make_error(Errc::io, "disk on fire");
    script_.current = true;
    return script_.full;
  }
  Result<std::optional<registry::Refresh>> refresh(const Snapshot&) override {
    std::unique_lock lock(script_.mutex);
    ++script_.refreshes;
    switch (script_.next) {
      case Script::Next::nothing:
        return std::optional<registry::Refresh>();
      case Script::Next::change:
        script_.next = Script::Next::nothing;
        return std::optional<registry::Refresh>(script_.change);
      case Script::Next::fail:
        return make_error(Errc::io, "database is locked");
      case Script::Next::throw_bad_alloc:
        throw std::bad_alloc();
      case Script::Next::stall:
        script_.stalled = true;
        script_.cv.notify_all();
        script_.cv.wait(lock, [&] { return script_.released; });
        return std::optional<registry::Refresh>();
    }
    return std::optional<registry::Refresh>();
  }

 private:
  Script& script_;
};

struct Rig {
  Script script;
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  std::shared_ptr<const Snapshot> start = snapshot_of({"a", "b"}, 1);
  Watcher watcher{std::make_unique<FakeSource>(script), start, handover, last_ok};

  void set(Script::Next next) {
    std::lock_guard lock(script.mutex);
    script.next = next;
  }
  static bool logged(const Handover::Taken& taken, LogLevel level, const std::string& text) {
    for (const auto& [l, line] : taken.logs)
      if (l == level && line.find(text) != std::string::npos) return true;
    return false;
  }
};

}  // namespace

TEST_CASE("a change is handed over with the devices to disconnect") {
  Rig rig;
  rig.script.change = registry::Refresh{snapshot_of({"a"}, 2), {"b"}, 1, 0, std::nullopt};
  rig.set(Script::Next::change);
  rig.watcher.poll();
  REQUIRE(rig.handover.pending());
  auto taken = rig.handover.take();
  REQUIRE(taken.snapshot);
  CHECK(taken.snapshot->change_seq() == 2);
  CHECK(taken.kicks == std::vector<std::string>{"b"});
  CHECK_FALSE(rig.handover.pending());

  rig.watcher.poll();  // nothing changed: nothing handed over
  CHECK_FALSE(rig.handover.pending());
}

TEST_CASE("an unreadable registry is reported once and the last snapshot stays until it is back") {
  Rig rig;
  rig.set(Script::Next::fail);
  rig.watcher.poll();
  rig.watcher.poll();
  auto taken = rig.handover.take();
  CHECK_FALSE(taken.snapshot);
  REQUIRE(taken.logs.size() == 1);  // once, not once per poll
  CHECK(
      Rig::logged(taken, LogLevel::error, "(keeping the last good snapshot): database is locked"));
  CHECK(rig.last_ok.load() == 0);  // the staleness clock keeps running

  rig.set(Script::Next::nothing);
  rig.watcher.poll();
  taken = rig.handover.take();
  CHECK(Rig::logged(taken, LogLevel::notice, "registry readable again"));
  CHECK(rig.last_ok.load() != 0);
}

TEST_CASE("std::bad_alloc while building a snapshot is caught and the next poll retries") {
  Rig rig;
  rig.set(Script::Next::throw_bad_alloc);
  CHECK_NOTHROW(rig.watcher.poll());
  auto taken = rig.handover.take();
  CHECK_FALSE(taken.snapshot);
  CHECK(Rig::logged(taken, LogLevel::error, "(keeping the last good snapshot): std::bad_alloc"));

  // The next poll works again and hands over the change it finds.
  rig.script.change = registry::Refresh{snapshot_of({"a", "b", "c"}, 3), {}, 1, 0, std::nullopt};
  rig.set(Script::Next::change);
  CHECK_NOTHROW(rig.watcher.poll());
  taken = rig.handover.take();
  REQUIRE(taken.snapshot);
  CHECK(taken.snapshot->change_seq() == 3);
  CHECK(Rig::logged(taken, LogLevel::notice, "registry readable again"));
}

TEST_CASE("a replaced registry and a requested full reload both read everything again") {
  Rig rig;
  SECTION("the file was replaced") {
    std::lock_guard lock(rig.script.mutex);
    rig.script.current = false;
  }
  SECTION("SIGHUP asked for it") { rig.watcher.request_full_reload(); }
  rig.watcher.poll();
  CHECK(rig.script.reopens == 1);
  CHECK(rig.script.refreshes == 0);
  auto taken = rig.handover.take();
  REQUIRE(taken.snapshot);
  CHECK(taken.snapshot == rig.script.full);
  CHECK(taken.kicks == std::vector<std::string>{"b"});  // not in the full read any more
  CHECK(Rig::logged(taken, LogLevel::notice, "registry fake read in full ("));
  CHECK(Rig::logged(taken, LogLevel::notice, "): 1 devices"));

  rig.watcher.poll();  // back to reading changes
  CHECK(rig.script.reopens == 1);
  CHECK(rig.script.refreshes == 1);
}

TEST_CASE("a refresh that finds the registry rewound reads it in full and says why") {
  Rig rig;
  {
    std::lock_guard lock(rig.script.mutex);
    rig.script.change.read_in_full_because = "its change counter went back from 7 to 5";
  }
  rig.set(Script::Next::change);
  rig.watcher.poll();
  CHECK(rig.script.refreshes == 1);
  CHECK(rig.script.reopens == 1);
  auto taken = rig.handover.take();
  REQUIRE(taken.snapshot);
  CHECK(taken.snapshot == rig.script.full);
  CHECK(taken.kicks == std::vector<std::string>{"b"});
  CHECK(Rig::logged(taken, LogLevel::notice,
                    "read in full (its change counter went back from 7 to 5)"));
}

TEST_CASE("a failed full reload keeps the last snapshot and is retried") {
  Rig rig;
  rig.watcher.request_full_reload();
  rig.set(Script::Next::fail);
  rig.watcher.poll();
  auto taken = rig.handover.take();
  CHECK_FALSE(taken.snapshot);
  CHECK(Rig::logged(taken, LogLevel::error, "disk on fire"));
  // The source is not current until a reopen succeeds, so the next poll reopens again.
  {
    std::lock_guard lock(rig.script.mutex);
    rig.script.current = false;
  }
  rig.set(Script::Next::nothing);
  rig.watcher.poll();
  CHECK(rig.script.reopens == 2);
  CHECK(rig.handover.take().snapshot == rig.script.full);
}

TEST_CASE("a stalled registry read holds up neither the broker thread nor the next change") {
  Rig rig;
  rig.set(Script::Next::stall);
  std::jthread thread([&](std::stop_token stop) { rig.watcher.run(stop, 10ms); });
  {
    std::unique_lock lock(rig.script.mutex);
    REQUIRE(rig.script.cv.wait_for(lock, 2s, [&] { return rig.script.stalled; }));
  }
  // The broker thread's side never waits for the watcher.
  const auto before = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    CHECK_FALSE(rig.handover.pending());
    (void)rig.handover.take();
  }
  CHECK(std::chrono::steady_clock::now() - before < 100ms);

  // Released, the watcher goes on to the next change.
  {
    std::lock_guard lock(rig.script.mutex);
    rig.script.change = registry::Refresh{snapshot_of({"a"}, 4), {"b"}, 1, 0, std::nullopt};
    rig.script.next = Script::Next::change;
    rig.script.released = true;
  }
  rig.script.cv.notify_all();
  bool delivered = false;
  for (int i = 0; i < 200 && !delivered; ++i) {
    std::this_thread::sleep_for(10ms);
    delivered = rig.handover.pending() && rig.handover.take().snapshot != nullptr;
  }
  CHECK(delivered);
  thread.request_stop();
}

namespace {

// A source that says it announces changes but never does, as with a SQLite commit whose notice
// came before it could be read: only the idle interval, an hour here, would read it again.
class SilentSource final : public AccessSource {
 public:
  explicit SilentSource(std::atomic<int>& refreshes) : refreshes_(refreshes) {}
  std::string name() const override { return "silent fake"; }
  std::optional<std::string> outdated() override { return std::nullopt; }
  Result<std::shared_ptr<const Snapshot>> reopen() override { return snapshot_of({"a"}, 1); }
  Result<std::optional<registry::Refresh>> refresh(const Snapshot&) override {
    ++refreshes_;
    return std::optional<registry::Refresh>();
  }
  bool notifies() const noexcept override { return true; }
  std::chrono::milliseconds idle_interval() const noexcept override { return 1h; }
  bool wait_for_change(std::chrono::milliseconds max) noexcept override {
    std::this_thread::sleep_for(max);
    return false;
  }

 private:
  std::atomic<int>& refreshes_;
};

}  // namespace

TEST_CASE("while the broker holds an answer the watcher reads every interval without a notice") {
  std::atomic<int> refreshes{0};
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  Watcher watcher{std::make_unique<SilentSource>(refreshes), snapshot_of({"a"}, 1), handover,
                  last_ok};
  std::jthread thread([&](std::stop_token stop) { watcher.run(stop, 10ms); });
  // No notice and not eager: no read before the idle interval.
  std::this_thread::sleep_for(300ms);
  CHECK(refreshes.load() == 0);
  // Eager: a read every interval (10 ms; a loaded machine still manages a few in half a second).
  watcher.set_eager(true);
  std::this_thread::sleep_for(500ms);
  CHECK(refreshes.load() >= 3);
  // Back to waiting for notices once the round under way ends.
  watcher.set_eager(false);
  std::this_thread::sleep_for(100ms);
  const int settled = refreshes.load();
  std::this_thread::sleep_for(300ms);
  CHECK(refreshes.load() == settled);
  thread.request_stop();
}

namespace {

// A SQLite commit whose notice comes before it can be read: one notice, then the change readable
// `lag` later with no notice of its own. The idle interval is an hour.
class EarlyNoticeSource final : public AccessSource {
 public:
  EarlyNoticeSource(std::atomic<int>& refreshes, std::chrono::milliseconds lag)
      : refreshes_(refreshes), lag_(lag) {}
  std::string name() const override { return "early notice fake"; }
  std::optional<std::string> outdated() override { return std::nullopt; }
  Result<std::shared_ptr<const Snapshot>> reopen() override { return snapshot_of({"a"}, 1); }
  Result<std::optional<registry::Refresh>> refresh(const Snapshot&) override {
    ++refreshes_;
    if (!noticed_ || delivered_ || std::chrono::steady_clock::now() < readable_at_)
      return std::optional<registry::Refresh>();
    delivered_ = true;
    return std::optional<registry::Refresh>(
        registry::Refresh{snapshot_of({"a", "b"}, 2), {}, 1, 0, std::nullopt});
  }
  bool notifies() const noexcept override { return true; }
  std::chrono::milliseconds idle_interval() const noexcept override { return 1h; }
  bool wait_for_change(std::chrono::milliseconds max) noexcept override {
    if (!noticed_) {
      noticed_ = true;
      readable_at_ = std::chrono::steady_clock::now() + lag_;
      return true;
    }
    std::this_thread::sleep_for(max);
    return false;
  }

 private:
  std::atomic<int>& refreshes_;
  std::chrono::milliseconds lag_;
  bool noticed_ = false, delivered_ = false;
  std::chrono::steady_clock::time_point readable_at_{};
};

}  // namespace

TEST_CASE("a change readable only after its notice is read within the refresh intervals after it") {
  std::atomic<int> refreshes{0};
  Handover handover;
  std::atomic<Clock::rep> last_ok{0};
  Watcher watcher{std::make_unique<EarlyNoticeSource>(refreshes, 200ms), snapshot_of({"a"}, 1),
                  handover, last_ok};
  std::jthread thread([&](std::stop_token stop) { watcher.run(stop, 10ms); });
  // Without the reads after the notice the change would wait for the idle interval (an hour);
  // 3 s only turns that into a failure on a loaded machine.
  std::shared_ptr<const Snapshot> taken;
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (!taken && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    if (handover.pending()) taken = handover.take().snapshot;
  }
  REQUIRE(taken);
  CHECK(taken->find_device("b") != nullptr);
  // The reads after a notice end: an idle broker goes back to waiting for notices.
  std::this_thread::sleep_for(kReadAfterNotice + 300ms);
  const int settled = refreshes.load();
  std::this_thread::sleep_for(300ms);
  CHECK(refreshes.load() == settled);
  thread.request_stop();
}
