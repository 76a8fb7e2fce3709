// The per-claim connect rate limit (a token bucket per claim name, with an injected clock), its
// options, and the standing of a client accepted with a claim.
#include <catch2/catch.hpp>

#include "plugin/accepted_clients.h"
#include "plugin/claim_rate.h"
#include "plugin/config.h"

using onboard::plugin::ClaimRateLimiter;
using namespace std::chrono_literals;

TEST_CASE("a claim gets its burst at once then its rate and other claims are unaffected") {
  ClaimRateLimiter limiter(2, 3);  // 2 a second, 3 at once
  const auto t0 = ClaimRateLimiter::Clock::time_point{} + 1h;
  CHECK(limiter.allow("a", t0));
  CHECK(limiter.allow("a", t0));
  CHECK(limiter.allow("a", t0));
  CHECK_FALSE(limiter.allow("a", t0));
  CHECK(limiter.allow("b", t0));  // its own bucket
  CHECK_FALSE(limiter.allow("a", t0 + 400ms));
  CHECK(limiter.allow("a", t0 + 500ms));  // one token back after half a second
  CHECK_FALSE(limiter.allow("a", t0 + 500ms));
  // Never more than the burst, however long it rested.
  const auto later = t0 + 1h;
  for (int i = 0; i < 3; ++i) CHECK(limiter.allow("a", later));
  CHECK_FALSE(limiter.allow("a", later));
  // A clock that goes back refills nothing.
  CHECK_FALSE(limiter.allow("a", later - 10s));
}

TEST_CASE("the claim rate options have safe defaults and bounds") {
  auto config = onboard::plugin::parse_config({{"registry", "/var/lib/x/registry.db"}});
  REQUIRE(config.ok());
  CHECK(config->claim_connect_rate == 10);
  CHECK(config->claim_connect_burst == 50);
  auto set = onboard::plugin::parse_config({{"registry", "/var/lib/x/registry.db"},
                                            {"claim_connect_rate", "3"},
                                            {"claim_connect_burst", "7"}});
  REQUIRE(set.ok());
  CHECK(set->claim_connect_rate == 3);
  CHECK(set->claim_connect_burst == 7);
  auto zero = onboard::plugin::parse_config(
      {{"registry", "/var/lib/x/registry.db"}, {"claim_connect_rate", "0"}});
  REQUIRE_FALSE(zero.ok());
  CHECK(zero.error().message.find("plugin_opt_claim_connect_rate must be a whole number") !=
        std::string::npos);
}

TEST_CASE("a client accepted with a claim has the claim standing and never a device's") {
  onboard::plugin::AcceptedClients clients;
  int a = 0;
  const void* client = &a;
  clients.accept_claim(client, "sensor-0002", "claim:factory-1");
  auto no_certificate = [] { return false; };
  auto verdict = clients.check(client, "sensor-0002", "claim:factory-1", no_certificate);
  CHECK(verdict.standing == onboard::plugin::AcceptedClients::Standing::claim);
  CHECK(verdict.device_id == "claim:factory-1");
  // A username that is not the one the plugin set: not this client any more.
  CHECK(clients.check(client, "sensor-0002", "sensor-0002", no_certificate).standing ==
        onboard::plugin::AcceptedClients::Standing::not_accepted);
}
