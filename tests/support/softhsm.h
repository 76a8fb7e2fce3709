// A throwaway SoftHSM token for tests of a CA key in a PKCS#11 token: a token store of its own
// (SOFTHSM2_CONF names a config whose tokendir is in a temporary directory) with one initialised
// token. Header-only, for test programs that link Catch2.
#pragma once

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

namespace onboard::test {

inline constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";
inline constexpr const char* kSoftHsmPin = "pin-4711-token";
inline constexpr const char* kSoftHsmLabel = "onboard-ca";

struct SoftHsmToken {
  TempDir dir;
  // What a command that reaches the token needs: SOFTHSM2_CONF, the PIN in CA_PIN and a wrong
  // one in WRONG_PIN (for --passphrase-env).
  std::map<std::string, std::string> env;

  SoftHsmToken() {
    INFO("the tests need SoftHSM: scripts/install-deps installs softhsm2");
    REQUIRE(std::filesystem::exists(kSoftHsmModule));
    std::filesystem::create_directories(dir / "tokens");
    std::ofstream(dir / "softhsm2.conf") << "directories.tokendir = " << (dir / "tokens").string()
                                         << "\nobjectstore.backend = file\nlog.level = ERROR\n";
    env = {{"SOFTHSM2_CONF", (dir / "softhsm2.conf").string()},
           {"CA_PIN", kSoftHsmPin},
           {"WRONG_PIN", "pin-0000-wrong"}};
    auto made = run({"/usr/bin/softhsm2-util", "--init-token", "--free", "--label", kSoftHsmLabel,
                     "--pin", kSoftHsmPin, "--so-pin", "so-pin-1234"},
                    {}, env);
    INFO(made.out << made.err);
    REQUIRE(made.exit_code == 0);
  }

  // A SOFTHSM2_CONF whose token store is empty: the token is missing.
  std::map<std::string, std::string> env_without_token() {
    std::filesystem::create_directories(dir / "empty");
    std::ofstream(dir / "empty.conf") << "directories.tokendir = " << (dir / "empty").string()
                                      << "\nobjectstore.backend = file\nlog.level = ERROR\n";
    auto other = env;
    other["SOFTHSM2_CONF"] = (dir / "empty.conf").string();
    return other;
  }
};

}  // namespace onboard::test
