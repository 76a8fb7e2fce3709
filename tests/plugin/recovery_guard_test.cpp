// The plugin's part of a claim asking again after a lost answer: who is connected and which
// recently enrolled devices connected with their own certificate (plugin/recovery_guard.h).
#include "plugin/recovery_guard.h"

#include <catch2/catch.hpp>

using namespace onboard::plugin;
using namespace std::chrono_literals;

namespace {

const int kClients[4] = {};
const void* client(int i) { return &kClients[i]; }

}  // namespace

TEST_CASE("a claim may not ask again for an id a connected client has") {
  RecoveryGuard guard(1h, 10);
  const auto t0 = RecoveryGuard::Clock::now();
  CHECK(guard.may_recover(client(3), "sensor-1", t0));  // the positive control
  guard.connected(client(0), "sensor-1", true);
  CHECK(guard.live("sensor-1"));
  CHECK_FALSE(guard.may_recover(client(3), "sensor-1", t0));
  CHECK(guard.may_recover(client(3), "sensor-2", t0));
  // A takeover: the new connection is accepted before the old one's disconnect.
  guard.connected(client(1), "sensor-1", true);
  guard.disconnected(client(0), "sensor-1");
  CHECK_FALSE(guard.may_recover(client(3), "sensor-1", t0));
  // A refused connect with the id, or an unknown client, leaves the live one.
  guard.disconnected(client(2), "sensor-1");
  CHECK(guard.live("sensor-1"));
  // Accepted again (SIGHUP) is the same connection; it ends.
  guard.connected(client(1), "sensor-1", true);
  guard.disconnected(client(1), "sensor-1");
  CHECK_FALSE(guard.live("sensor-1"));
  CHECK(guard.may_recover(client(3), "sensor-1", t0));
  CHECK(guard.live_count() == 0);
}

TEST_CASE("a claim client checked again on SIGHUP is not in its own way") {
  RecoveryGuard guard(1h, 10);
  const auto t0 = RecoveryGuard::Clock::now();
  guard.connected(client(0), "sensor-1", true);
  // The broker checks the connected client again: it may go on asking.
  CHECK_FALSE(guard.live_other(client(0), "sensor-1"));
  CHECK(guard.may_recover(client(0), "sensor-1", t0));
  // Any other client with that id would take it over: refused (the negative control).
  CHECK(guard.live_other(client(1), "sensor-1"));
  CHECK_FALSE(guard.may_recover(client(1), "sensor-1", t0));
  // No client with the id: nothing in the way.
  CHECK_FALSE(guard.live_other(client(1), "sensor-2"));
  // The device seen with its own certificate refuses even the same client.
  guard.device_seen("sensor-1", t0);
  CHECK_FALSE(guard.may_recover(client(0), "sensor-1", t0 + 1min));
}

TEST_CASE("a device that connected with its own certificate is not asked for again") {
  RecoveryGuard guard(1h, 10);
  const auto t0 = RecoveryGuard::Clock::now();
  guard.device_seen("sensor-1", t0);
  CHECK_FALSE(guard.may_recover(client(3), "sensor-1", t0 + 10min));
  CHECK(guard.may_recover(client(3), "sensor-2", t0 + 10min));
  CHECK(guard.may_recover(client(3), "sensor-1", t0 + 61min));
}

TEST_CASE("a full memory of devices refuses every recovery for a window") {
  RecoveryGuard guard(1h, 2);
  const auto t0 = RecoveryGuard::Clock::now();
  guard.device_seen("sensor-1", t0);
  guard.device_seen("sensor-2", t0);
  CHECK(guard.may_recover(client(3), "sensor-3", t0));  // not full yet: the positive control
  guard.device_seen("sensor-3", t0 + 1min);             // cannot be remembered
  CHECK(guard.seen_count() == 2);
  CHECK_FALSE(guard.may_recover(client(3), "sensor-3", t0 + 2min));
  CHECK_FALSE(guard.may_recover(client(3), "sensor-4", t0 + 2min));
  // Once the old ones age out there is room again.
  guard.device_seen("sensor-5", t0 + 62min);
  CHECK(guard.seen_count() == 1);
  CHECK_FALSE(guard.may_recover(client(3), "sensor-5", t0 + 63min));
  CHECK(guard.may_recover(client(3), "sensor-4", t0 + 62min));
}

TEST_CASE("the holder of a client id is the claim client or the device the plugin accepted last") {
  RecoveryGuard guard(1h, 10);
  CHECK(guard.holder("sensor-1") == RecoveryGuard::Holder::none);
  guard.connected(client(0), "sensor-1", true);
  CHECK(guard.holder("sensor-1") == RecoveryGuard::Holder::claim);
  CHECK(guard.live_claim(client(0), "sensor-1"));
  CHECK_FALSE(guard.live_claim(client(2), "sensor-1"));  // another client with the id
  // The device takes the id over; the claim client's disconnect follows and changes nothing.
  guard.connected(client(1), "sensor-1", false);
  guard.disconnected(client(0), "sensor-1");
  CHECK(guard.holder("sensor-1") == RecoveryGuard::Holder::device);
  CHECK(guard.holder("sensor-2") == RecoveryGuard::Holder::none);
  // The claim client is no longer the live one: a check of it now is no check again.
  CHECK_FALSE(guard.live_claim(client(0), "sensor-1"));
  CHECK_FALSE(guard.live_claim(client(1), "sensor-1"));  // a device, not a claim client
  guard.disconnected(client(1), "sensor-1");
  CHECK(guard.holder("sensor-1") == RecoveryGuard::Holder::none);
}
