// The per_listener_settings probe reads a private Mosquitto 2.0 layout: only on 2.0.x.
#include "plugin/broker_version.h"

#include <catch2/catch.hpp>

using onboard::plugin::not_mosquitto_2_0;
using onboard::plugin::Version;

TEST_CASE("the private identifier layout is trusted on Mosquitto 2.0 only") {
  const Version v2011{2, 0, 11};
  CHECK_FALSE(not_mosquitto_2_0(v2011, std::nullopt, false));  // Debian 12: no version export
  CHECK_FALSE(not_mosquitto_2_0(v2011, Version{2, 0, 18}, false));
  CHECK(not_mosquitto_2_0(v2011, std::nullopt, true) == "a broker with the 2.1 plugin API");
  CHECK(not_mosquitto_2_0(v2011, Version{2, 1, 0}, false) == "library 2.1.0");
  CHECK(not_mosquitto_2_0(Version{2, 1, 2}, std::nullopt, false) == "built against 2.1.2");
  CHECK(not_mosquitto_2_0(Version{1, 6, 9}, std::nullopt, false) == "built against 1.6.9");
}
