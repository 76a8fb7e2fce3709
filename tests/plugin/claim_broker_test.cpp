// The claim gate on a real broker: a client with a claim certificate from the real onboardctl
// connects with an id its claim allows and may only ask for its own certificate; every other
// topic, an id outside the pattern, a registered id, a revoked or expired claim and connects
// beyond the rate limit are refused, while devices connect beside it as before.
#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "tests/plugin/fleet.h"
#include "tests/support/broker.h"
#include "tests/support/mqtt_client.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::test;
using namespace std::chrono_literals;

namespace {

constexpr int kV5Accepted = 0;
// PUBACK "no matching subscribers": a success code, the publish passed the ACL check (nothing
// subscribes to a request topic; the answer is a separate publish to the client, and this broker
// has no signer configured).
constexpr int kV5NoSubscribers = 0x10;
constexpr int kV5NotAuthorized = 0x87;  // MQTT v5 CONNACK / PUBACK / SUBACK reason code
constexpr int kV5 = 5;

// A fleet whose broker runs on a wall clock the test can move (libfaketime).
class ClaimSite : public Fleet {
 public:
  ClaimSite() { set_clock("+0d"); }
  void set_clock(const std::string& offset) { std::ofstream(dir() / "clock") << offset << "\n"; }

  std::unique_ptr<Broker> start_broker(std::vector<std::string> plugin_options) {
    auto options = broker_options(std::move(plugin_options));
    options.faketime_file = dir() / "clock";
    return start(options);
  }
};

int connect_v5(const std::string& id, const Credentials& creds, const Broker& broker) {
  MqttClient client(id, creds, kV5);
  return client.connect(broker.port(), 3s);
}

}  // namespace

TEST_CASE("a claim client may only ask for its own certificate and devices connect beside it") {
  ClaimSite site;
  const auto device = site.add_device("sensor-0001");
  const auto claim = site.add_claim(
      "factory-1", {"--quota", "5", "--expires", "1h", "--id-pattern", "sensor-[0-9]{4}"});
  auto broker = site.start_broker({"claim_connect_rate 1", "claim_connect_burst 100"});
  INFO(broker->log());

  MqttClient enrolling("sensor-0002", claim, kV5);
  REQUIRE(enrolling.connect(broker->port(), 3s) == kV5Accepted);
  // Its own request topic: PUBACK success. Anything else: not authorised.
  CHECK(enrolling.publish_reason("$provision/sensor-0002/csr", R"({"csr":"..."})") ==
        kV5NoSubscribers);
  CHECK(enrolling.publish_reason("devices/sensor-0002/telemetry", "x") == kV5NotAuthorized);
  CHECK(enrolling.publish_reason("devices/sensor-0001/telemetry", "x") == kV5NotAuthorized);
  CHECK(enrolling.publish_reason("$provision/sensor-0003/csr", "x") == kV5NotAuthorized);
  CHECK(enrolling.publish_reason("$provision/sensor-0002/accepted", "x") == kV5NotAuthorized);
  CHECK(enrolling.subscribe("$provision/sensor-0002/+") == 1);
  CHECK(enrolling.subscribe("$provision/#") == kV5NotAuthorized);
  CHECK(enrolling.subscribe("devices/#") == kV5NotAuthorized);
  CHECK(enrolling.connected());

  // A device beside it: connects and is delivered its own messages, as before.
  MqttClient sensor("sensor-0001", device, kV5);
  REQUIRE(sensor.connect(broker->port(), 3s) == kV5Accepted);
  REQUIRE(sensor.subscribe("devices/sensor-0001/#") == 1);
  CHECK(sensor.publish_reason("devices/sensor-0001/telemetry", "21.5") == kV5Accepted);
  auto message = sensor.next_message();
  REQUIRE(message.has_value());
  CHECK(message->payload == "21.5");

  // The claim's certificate with another id: outside the pattern, or a registered device's.
  CHECK(connect_v5("other-0002", claim, *broker) == kV5NotAuthorized);
  CHECK(connect_v5("sensor-0001", claim, *broker) == kV5NotAuthorized);
  CHECK(broker->wait_for_log("client id not allowed by the claim's id pattern"));
  CHECK(broker->wait_for_log("client id is a registered device's"));
  // The registered device was not disturbed by the attempt to take its id.
  CHECK(sensor.connected());

  // Past the claim's expiry: refused (by the TLS layer, which checks the certificate's dates
  // first, or by the plugin); the device, valid for a year, still connects.
  site.set_clock("+2h");
  std::this_thread::sleep_for(100ms);
  CHECK(connect_v5("sensor-0004", claim, *broker) != kV5Accepted);
  CHECK(connect_v5("sensor-0001", device, *broker) == kV5Accepted);
}

TEST_CASE("a revoked claim is disconnected and refused and a claim's connects are rate-limited") {
  ClaimSite site;
  const auto device = site.add_device("dev-1");
  const auto revoked = site.add_claim("line-a", {"--quota", "100", "--expires", "2h"});
  const auto busy = site.add_claim("line-b", {"--quota", "100", "--expires", "2h"});
  auto broker = site.start_broker({"claim_connect_rate 1", "claim_connect_burst 2"});
  INFO(broker->log());

  MqttClient connected("unit-1", revoked, kV5);
  REQUIRE(connected.connect(broker->port(), 3s) == kV5Accepted);
  site.must(site.ctl({"claim", "revoke", "line-a"}));
  CHECK(connected.wait_disconnected(3s));
  CHECK(connect_v5("unit-2", revoked, *broker) == kV5NotAuthorized);
  CHECK(broker->wait_for_log("claim revoked"));

  // line-b: a burst of two, then one a second. Its neighbours are unaffected.
  CHECK(connect_v5("unit-3", busy, *broker) == kV5Accepted);
  CHECK(connect_v5("unit-4", busy, *broker) == kV5Accepted);
  int refused = 0;
  for (int i = 0; i < 4; ++i) refused += connect_v5("unit-5", busy, *broker) == kV5NotAuthorized;
  CHECK(refused >= 2);
  CHECK(broker->wait_for_log("rate limit"));
  CHECK(connect_v5("dev-1", device, *broker) == kV5Accepted);
  std::this_thread::sleep_for(1500ms);  // a token comes back
  CHECK(connect_v5("unit-6", busy, *broker) == kV5Accepted);
}

TEST_CASE("a SIGHUP spends none of a claim's connect rate on its clients already connected") {
  ClaimSite site;
  const auto claim = site.add_claim("line-s", {"--quota", "100", "--expires", "2h"});
  auto broker = site.start_broker({"claim_connect_rate 1", "claim_connect_burst 2"});
  INFO(broker->log());
  // The burst spent on two connects.
  MqttClient one("unit-1", claim, kV5);
  MqttClient two("unit-2", claim, kV5);
  REQUIRE(one.connect(broker->port(), 3s) == kV5Accepted);
  REQUIRE(two.connect(broker->port(), 3s) == kV5Accepted);

  // Mosquitto checks both again on SIGHUP: they are no new connects and stay.
  broker->hangup();
  REQUIRE(broker->wait_for_log("Reloading config."));
  const auto count = [&](const std::string& text) {
    const std::string log = broker->log();
    std::size_t found = 0;
    for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++found;
    return found;
  };
  const auto until = std::chrono::steady_clock::now() + 5s;
  while ((count("accepted client 'unit-1'") < 2 || count("accepted client 'unit-2'") < 2) &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  CHECK(count("accepted client 'unit-1'") == 2);
  CHECK(count("accepted client 'unit-2'") == 2);
  std::this_thread::sleep_for(300ms);
  CHECK(one.connected());
  CHECK(two.connected());
  CHECK(broker->log().find("rate limit") == std::string::npos);
  // The rate still holds for new connects (the negative control): with the burst spent and at
  // most one token back since, one of two new connects is refused.
  int refused = 0;
  for (int i = 0; i < 2; ++i) refused += connect_v5("unit-3", claim, *broker) == kV5NotAuthorized;
  CHECK(refused >= 1);
  CHECK(broker->wait_for_log("rate limit"));
}
