#include "core/identity.h"

#include <catch2/catch.hpp>

using onboard::device_id_problem;
using onboard::is_valid_device_id;

TEST_CASE("device ids of letters, digits, dot, underscore and dash are accepted") {
  for (const char* id : {"a", "sensor-001", "Dev_1.2", "0abc", "x-y_z.w"}) {
    INFO(id);
    CHECK(is_valid_device_id(id));
    CHECK_FALSE(device_id_problem(id).has_value());
  }
  CHECK(is_valid_device_id(std::string(64, 'a')));
}

TEST_CASE("device ids that could act as MQTT wildcards, levels or system topics are refused") {
  for (const char* id : {"a/b", "a+", "a#", "$SYS", "a b", "a\tb"}) {
    INFO(id);
    CHECK_FALSE(is_valid_device_id(id));
    REQUIRE(device_id_problem(id).has_value());
  }
  CHECK(device_id_problem("a/b")->find("'/'") != std::string::npos);
  CHECK(device_id_problem("a b")->find("a space") != std::string::npos);
  CHECK(device_id_problem(std::string("a\0b", 3))->find("NUL") != std::string::npos);
}

TEST_CASE("device ids must be 1 to 64 characters and start with a letter or digit") {
  CHECK_FALSE(is_valid_device_id(""));
  CHECK_FALSE(is_valid_device_id(std::string(65, 'a')));
  CHECK(device_id_problem(std::string(65, 'a'))->find("65") != std::string::npos);
  CHECK_FALSE(is_valid_device_id("-abc"));
  CHECK_FALSE(is_valid_device_id(".abc"));
  CHECK(device_id_problem("-abc")->find("start") != std::string::npos);
}

TEST_CASE("device ids with bytes outside ASCII are refused") {
  CHECK_FALSE(is_valid_device_id("caf\xc3\xa9"));
  CHECK(device_id_problem("caf\xc3\xa9")->find("0xc3") != std::string::npos);
}
