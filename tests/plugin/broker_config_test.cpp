#include "plugin/broker_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/support/temp_dir.h"

using namespace onboard::plugin;
using onboard::test::TempDir;

namespace {

std::string write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST_CASE("the config files are the -c and --config-file arguments") {
  using namespace std::string_literals;
  CHECK(config_files_from_cmdline("/usr/sbin/mosquitto\0-c\0/etc/m.conf\0-v\0"s) ==
        std::vector<std::string>{"/etc/m.conf"});
  CHECK(config_files_from_cmdline("mosquitto\0--config-file\0a.conf\0-c\0b.conf"s) ==
        std::vector<std::string>{"a.conf", "b.conf"});
  CHECK(config_files_from_cmdline("mosquitto\0-c"s).empty());  // no value: nothing to read
  CHECK(config_files_from_cmdline("mosquitto\0-v\0"s).empty());
}

TEST_CASE("use_identity_as_username and use_subject_as_username true on a listener are found") {
  TempDir dir;
  for (const char* setting : {"use_identity_as_username", "use_subject_as_username"}) {
    INFO(setting);
    auto conf =
        write(dir / "m.conf", "per_listener_settings false\nlistener 8883\n" +
                                  std::string(setting) + " true\nrequire_certificate true\n");
    auto found = find_identity_setting({conf});
    REQUIRE(found.ok());
    REQUIRE(found.value());
    CHECK(found.value()->setting == setting);
    CHECK(found.value()->file == conf);
  }
}

TEST_CASE("false values and comments are honoured and the last value in a listener wins") {
  TempDir dir;
  auto conf = write(dir / "m.conf",
                    "# use_identity_as_username true\n"
                    "listener 8883\n"
                    "use_identity_as_username true\n"
                    "use_identity_as_username false\r\n"
                    "listener 1884 127.0.0.1\n"
                    "  use_subject_as_username   false\n");
  auto found = find_identity_setting({conf});
  REQUIRE(found.ok());
  CHECK_FALSE(found.value());
}

TEST_CASE("a setting before the first listener counts: every listener starts from it") {
  TempDir dir;
  auto conf = write(dir / "m.conf", "use_identity_as_username true\nlistener 8883\n");
  auto found = find_identity_setting({conf});
  REQUIRE(found.ok());
  REQUIRE(found.value());
  CHECK(found.value()->setting == "use_identity_as_username");
}

TEST_CASE("include_dir in the main file is followed with its .conf files in name order") {
  TempDir dir;
  std::filesystem::create_directory(dir / "conf.d");
  write(dir / "conf.d" / "a.conf", "listener 8883\n");
  write(dir / "conf.d" / "b.conf", "use_subject_as_username true\n");
  write(dir / "conf.d" / "c.txt", "use_identity_as_username true\n");  // not a .conf: ignored
  auto main = write(dir / "m.conf", "include_dir " + (dir / "conf.d").string() + "\n");
  auto found = find_identity_setting({main});
  REQUIRE(found.ok());
  REQUIRE(found.value());
  CHECK(found.value()->setting == "use_subject_as_username");
  CHECK(found.value()->file == (dir / "conf.d" / "b.conf").string());

  SECTION("but not from an included file, as Mosquitto does") {
    std::filesystem::create_directory(dir / "deeper");
    write(dir / "deeper" / "x.conf", "listener 1\nuse_identity_as_username true\n");
    std::filesystem::remove(dir / "conf.d" / "b.conf");
    write(dir / "conf.d" / "b.conf", "include_dir " + (dir / "deeper").string() + "\n");
    auto nested = find_identity_setting({main});
    REQUIRE(nested.ok());
    CHECK_FALSE(nested.value());
  }
}

TEST_CASE("what cannot be read is an error for the caller to report and never a hang") {
  TempDir dir;
  auto missing = find_identity_setting({(dir / "none.conf").string()});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message.find("none.conf") != std::string::npos);

  // A pipe (mosquitto -c /dev/stdin) is not read again: it could block the broker's start.
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  auto fifo = find_identity_setting({(dir / "fifo").string()});
  REQUIRE_FALSE(fifo.ok());
  CHECK(fifo.error().message.find("not a regular file") != std::string::npos);

  auto main = write(dir / "m.conf", "include_dir " + (dir / "nodir").string() + "\n");
  CHECK_FALSE(find_identity_setting({main}).ok());
}
