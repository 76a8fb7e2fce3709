// Eight onboardctl processes writing one PostgreSQL registry at once, as operators on several
// hosts would: nothing is lost, no serial repeats, the audit log stays one verifiable chain and
// CRL numbers never repeat.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/postgres.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

RunResult onboardctl(const std::filesystem::path& data, const std::string& registry,
                     std::vector<std::string> command) {
  command.insert(command.begin(), {ONBOARDCTL_PATH, "--data-dir", data.string()});
  return onboard::test::run(command, {}, {{"ONBOARD_REGISTRY", registry}});
}

}  // namespace

TEST_CASE("eight onboardctl processes at once on one PostgreSQL registry lose nothing",
          "[postgres]") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  TempDir base;
  const auto data = base / "data";
  const std::string registry = onboard::test::fresh_test_database("writers");
  REQUIRE(onboardctl(data, registry, {"init", "--key-alg", "p256", "--no-group"}).exit_code == 0);

  constexpr int kWriters = 8;
  constexpr int kDevicesEach = 4;
  std::vector<std::vector<std::string>> failures(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kDevicesEach; ++i) {
        const std::string id = "w" + std::to_string(w) + "-" + std::to_string(i);
        auto r = onboardctl(data, registry,
                            {"device", "register", id, "--key-alg", "p256", "--key-out",
                             (base / (id + ".key")).string()});
        if (r.exit_code != 0) failures[w].push_back(id + ": " + r.err);
      }
      // Each revocation issues the next CRL.
      auto r = onboardctl(
          data, registry,
          {"device", "revoke", "w" + std::to_string(w) + "-0", "--reason", "keyCompromise"});
      if (r.exit_code != 0) failures[w].push_back("revoke: " + r.err);
    });
  }
  for (auto& t : writers) t.join();
  for (const auto& f : failures) {
    CHECK(f.empty());
    if (!f.empty()) WARN(f.front());
  }

  // A serial issued twice would have failed its registration (the registry's key refuses it).
  auto devices = onboardctl(data, registry, {"device", "list", "--limit", "0", "--json"});
  REQUIRE(devices.exit_code == 0);
  CHECK(nlohmann::json::parse(devices.out).at("devices").size() == kWriters * kDevicesEach);

  CHECK(onboardctl(data, registry, {"audit", "verify"}).exit_code == 0);
  auto audit = onboardctl(data, registry, {"audit", "list", "--limit", "0", "--json"});
  REQUIRE(audit.exit_code == 0);
  std::vector<long> crl_numbers;
  for (const auto& e : nlohmann::json::parse(audit.out)) {
    if (e.at("action") == "crl.issue")
      crl_numbers.push_back(std::stol(e.at("subject").get<std::string>()));
  }
  std::sort(crl_numbers.begin(), crl_numbers.end());
  CHECK(crl_numbers.size() >= kWriters);
  CHECK(std::adjacent_find(crl_numbers.begin(), crl_numbers.end()) == crl_numbers.end());
}
