#include "plugin/config.h"

#include <catch2/catch.hpp>

using namespace onboard;
using onboard::plugin::parse_config;
using Options = std::vector<std::pair<std::string, std::string>>;

TEST_CASE("the registry path is required and must be absolute") {
  auto none = parse_config({});
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().message.find("plugin_opt_registry is required") != std::string::npos);
  auto relative = parse_config(Options{{"registry", "data/registry.db"}});
  REQUIRE_FALSE(relative.ok());
  CHECK(relative.error().message.find("absolute path") != std::string::npos);
}

TEST_CASE(
    "defaults refresh every 50 ms, refuse after 60 s without the registry, and log connections") {
  auto config = parse_config(Options{{"registry", "/var/lib/mosquitto-onboard/registry.db  "}});
  REQUIRE(config.ok());
  CHECK(config->registry == "/var/lib/mosquitto-onboard/registry.db");  // trailing spaces dropped
  CHECK(config->refresh_interval == std::chrono::milliseconds(50));
  CHECK(config->staleness_limit == std::chrono::seconds(60));
  CHECK(config->log_connections);
  CHECK(config->log_acl == plugin::AclLogging::none);
}

TEST_CASE("every option is parsed and range-checked") {
  auto config = parse_config(Options{{"registry", "/r.db"},
                                     {"refresh_interval_ms", "200"},
                                     {"staleness_limit_s", "5"},
                                     {"log_acl", "denied"},
                                     {"log_connections", "false"}});
  REQUIRE(config.ok());
  CHECK(config->refresh_interval == std::chrono::milliseconds(200));
  CHECK(config->staleness_limit == std::chrono::seconds(5));
  CHECK(config->log_acl == plugin::AclLogging::denied);
  CHECK_FALSE(config->log_connections);

  for (const auto& [key, value] : Options{{"refresh_interval_ms", "5"},
                                          {"refresh_interval_ms", "fast"},
                                          {"staleness_limit_s", "0"},
                                          {"staleness_limit_s", "10s"},
                                          {"log_acl", "verbose"},
                                          {"log_connections", "maybe"}}) {
    INFO(key << " " << value);
    auto bad = parse_config(Options{{"registry", "/r.db"}, {key, value}});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().message.find("plugin_opt_" + key) != std::string::npos);
  }
}

TEST_CASE("an unknown option stops the broker instead of being ignored") {
  auto config = parse_config(Options{{"registry", "/r.db"}, {"refresh_intervall_ms", "100"}});
  REQUIRE_FALSE(config.ok());
  CHECK(config.error().message == "unknown option plugin_opt_refresh_intervall_ms");
}

TEST_CASE("the staleness limit must exceed the refresh interval") {
  auto config = parse_config(
      Options{{"registry", "/r.db"}, {"refresh_interval_ms", "2000"}, {"staleness_limit_s", "1"}});
  REQUIRE_FALSE(config.ok());
  CHECK(config.error().message.find("longer than the refresh interval") != std::string::npos);
}

TEST_CASE("the CRL file to guard is an absolute path and its CA file needs it") {
  auto ok = parse_config(Options{{"registry", "/r.db"},
                                 {"crl_file", "/var/lib/mosquitto-onboard/crl.pem"},
                                 {"crl_cafile", "/var/lib/mosquitto-onboard/ca/chain.pem"}});
  REQUIRE(ok.ok());
  CHECK(ok->crl_file == "/var/lib/mosquitto-onboard/crl.pem");
  CHECK(ok->crl_cafile == "/var/lib/mosquitto-onboard/ca/chain.pem");
  CHECK(parse_config(Options{{"registry", "/r.db"}})->crl_file.empty());

  auto relative = parse_config(Options{{"registry", "/r.db"}, {"crl_file", "crl.pem"}});
  REQUIRE_FALSE(relative.ok());
  CHECK(relative.error().message == "plugin_opt_crl_file must be an absolute path");
  auto alone = parse_config(Options{{"registry", "/r.db"}, {"crl_cafile", "/ca.pem"}});
  REQUIRE_FALSE(alone.ok());
  CHECK(alone.error().message == "plugin_opt_crl_cafile goes with plugin_opt_crl_file");
}

TEST_CASE("clients without a certificate are denied unless deferring to Mosquitto is asked for") {
  auto defaults = parse_config(Options{{"registry", "/r.db"}});
  REQUIRE(defaults.ok());
  CHECK(defaults->without_certificate == plugin::ClientsWithoutCertificate::deny);

  auto defer =
      parse_config(Options{{"registry", "/r.db"}, {"clients_without_certificate", "defer "}});
  REQUIRE(defer.ok());
  CHECK(defer->without_certificate == plugin::ClientsWithoutCertificate::defer);
  auto deny = parse_config(Options{{"registry", "/r.db"}, {"clients_without_certificate", "deny"}});
  REQUIRE(deny.ok());
  CHECK(deny->without_certificate == plugin::ClientsWithoutCertificate::deny);

  for (const char* bad : {"allow", "Defer", "", "true"}) {
    INFO(bad);
    auto refused =
        parse_config(Options{{"registry", "/r.db"}, {"clients_without_certificate", bad}});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message.find("plugin_opt_clients_without_certificate must be deny or "
                                       "defer") != std::string::npos);
  }
}
