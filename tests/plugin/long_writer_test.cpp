// A registry held locked by a long writer (another process inside a write transaction) while the
// broker runs: the broker decides from its snapshot and reads the registry without the write lock,
// so devices still connect, publish and are refused exactly as before, and nothing the broker does
// waits for the writer. A change queued behind the writer reaches the broker once it commits.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/plugin/fleet.h"
#include "tests/support/process.h"

using namespace onboard::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// The sqlite3 shell on PATH (scripts/install-deps installs it), or "" when there is none.
std::string find_sqlite3() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const auto candidate = std::filesystem::path(dir) / "sqlite3";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return {};
}

// Publish-to-delivery round trips of `client` on its own topic, in milliseconds; each one must
// arrive.
std::vector<double> round_trips(MqttClient& client, const std::string& topic, int count) {
  std::vector<double> ms;
  for (int i = 0; i < count; ++i) {
    const auto sent = Clock::now();
    REQUIRE(client.publish(topic, "ping " + std::to_string(i)));
    auto m = client.next_message(2s);
    REQUIRE(m);
    CHECK(m->payload == "ping " + std::to_string(i));
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
  }
  return ms;
}

std::string describe(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  std::ostringstream out;
  out.precision(3);
  out << "median " << ms[ms.size() / 2] << " ms, max " << ms.back() << " ms over " << ms.size();
  return out.str();
}

}  // namespace

TEST_CASE("a long writer holding the registry locked does not hold up the broker's decisions") {
  const std::string sqlite3 = find_sqlite3();
  if (sqlite3.empty()) {
    WARN("SKIPPED: no sqlite3 shell on PATH (apt-get install sqlite3) to hold the registry locked");
    return;
  }
  Fleet fleet;
  auto a_creds = fleet.add_device("dev-a");
  auto b_creds = fleet.add_device("dev-b");
  auto c_creds = fleet.add_device("dev-c");        // disabled by a write queued behind the writer
  auto late_creds = fleet.add_device("dev-late");  // connects for the first time during the hold
  auto outsider = fleet.unregistered("dev-x");     // signed by the CA, never registered
  auto broker = fleet.start_with();
  const int port = broker->port();

  auto a = connected("dev-a", a_creds, port);
  auto b = connected("dev-b", b_creds, port);
  auto c = connected("dev-c", c_creds, port);
  REQUIRE(a->subscribe("devices/dev-a/#") == 1);
  REQUIRE(b->subscribe("devices/dev-b/#") == 1);
  const auto before = round_trips(*a, "devices/dev-a/rt", 20);

  // The writer: a write transaction (it has written a page) held for 4 s, less than onboardctl's
  // 5 s busy timeout, so that the write queued behind it succeeds.
  const auto hold = 4s;
  ChildProcess writer(
      {sqlite3, fleet.registry().string(), "BEGIN IMMEDIATE;",
       "UPDATE groups SET description = description;", ".shell echo held",
       ".shell sleep " + std::to_string(hold.count()), "COMMIT;", ".shell echo released"},
      fleet.dir() / "writer.err");
  REQUIRE(writer.read_line(10000) == "held");
  const auto held_at = Clock::now();

  // A write of onboardctl's own, which must wait for the writer: it shows the lock is real.
  std::atomic<bool> disable_done{false};
  RunResult disable;
  std::thread disabler([&] {
    disable = fleet.ctl({"device", "disable", "dev-c"});
    disable_done = true;
  });

  // While the lock is held, everything is decided as before.
  const auto during = round_trips(*a, "devices/dev-a/rt", 20);
  auto late = std::make_unique<MqttClient>("dev-late", late_creds);
  CHECK(late->connect(port) == 0);  // a registered device connects
  MqttClient stranger("dev-x", outsider);
  CHECK(stranger.connect(port) == kNotAuthorized);      // an unregistered one is refused
  CHECK(a->subscribe("devices/dev-b/#") == kRefused);   // another device's topics: refused
  CHECK(a->subscribe("devices/dev-a/more/#") == 1);     // control: its own are granted
  CHECK(a->publish("devices/dev-b/cmd", "not yours"));  // sent, but not delivered
  CHECK_FALSE(b->next_message(200ms));
  CHECK(b->publish("devices/dev-b/own", "mine"));  // control: an allowed publish arrives
  auto own = b->next_message();
  REQUIRE(own);
  CHECK(own->payload == "mine");
  CHECK(c->connected());  // its disable is still waiting for the writer
  const auto checked_at = Clock::now();

  // All of that happened while the writer still held the lock, and the queued write was waiting.
  CHECK(writer.read_line(1).empty());
  CHECK_FALSE(disable_done.load());
  CHECK(checked_at - held_at < hold);

  REQUIRE(writer.read_line(10000) == "released");
  disabler.join();
  INFO(disable.out << disable.err);
  CHECK(disable.exit_code == 0);
  // The change made behind the writer reaches the broker within a refresh: dev-c is disconnected
  // and refused, the others go on.
  CHECK(c->wait_disconnected(3s));
  MqttClient again("dev-c", c_creds);
  CHECK(again.connect(port) == kNotAuthorized);
  const auto after = round_trips(*a, "devices/dev-a/rt", 5);
  CHECK(writer.stop(SIGTERM) == 0);

  WARN("publish round trip before the hold: " << describe(before)
                                              << "; during the hold: " << describe(during)
                                              << "; after: " << describe(after));
}
