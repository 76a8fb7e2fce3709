#include "plugin/config.h"

#include <catch2/catch.hpp>

using namespace onboard;
using onboard::plugin::parse_config;
using Options = std::vector<std::pair<std::string, std::string>>;

namespace {

// `options` with a registry are refused, with a message that names `named`.
void refused(Options options, const std::string& named) {
  options.insert(options.begin(), {"registry", "/var/lib/r.db"});
  auto parsed = parse_config(options);
  REQUIRE_FALSE(parsed.ok());
  INFO(parsed.error().message);
  CHECK(parsed.error().message.find(named) != std::string::npos);
}

}  // namespace

TEST_CASE("the registry path is required and must be absolute") {
  auto none = parse_config({});
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().message.find("plugin_opt_registry is required") != std::string::npos);
  auto relative = parse_config(Options{{"registry", "data/registry.db"}});
  REQUIRE_FALSE(relative.ok());
  CHECK(relative.error().message.find("absolute path") != std::string::npos);
}

TEST_CASE("plugin_opt_registry takes every registry location onboardctl takes") {
  auto url = parse_config(Options{{"registry", "sqlite:///var/lib/mosquitto-onboard/registry.db"}});
  REQUIRE(url.ok());
  CHECK(url->registry.backend == registry::Backend::sqlite);
  CHECK(url->registry.target == "/var/lib/mosquitto-onboard/registry.db");

  auto uri = parse_config(
      Options{{"registry", "postgresql://broker@db.example/registry?sslmode=verify-full"}});
  REQUIRE(uri.ok());
  CHECK(uri->registry.backend == registry::Backend::postgresql);
  CHECK(uri->registry.display() ==
        "host=db.example dbname=registry user=broker sslmode=verify-full");

  auto keywords = parse_config(Options{{"registry", "host=/run/postgresql dbname=registry "}});
  REQUIRE(keywords.ok());
  CHECK(keywords->registry.backend == registry::Backend::postgresql);
  CHECK(keywords->registry.target == "host=/run/postgresql dbname=registry");
}

TEST_CASE("plugin_opt_registry refuses a password and never repeats it") {
  for (const char* location :
       {"postgresql://broker:secret@db.example/registry", "host=db.example password=secret",
        "host=db.example secret", "postgresql://broker:secret@[::1/registry"}) {
    INFO(location);
    auto config = parse_config(Options{{"registry", location}});
    REQUIRE_FALSE(config.ok());
    CHECK(config.error().code == Errc::invalid_input);
    CHECK(config.error().message.starts_with("plugin_opt_registry: "));
    CHECK(config.error().message.find("secret") == std::string::npos);
  }
  auto password = parse_config(Options{{"registry", "host=db.example password=secret"}});
  CHECK(password.error().message.find("PGPASSFILE") != std::string::npos);
  auto host = parse_config(Options{{"registry", "sqlite://db.example/registry.db"}});
  REQUIRE_FALSE(host.ok());
  CHECK(host.error().message.find("no host") != std::string::npos);
}

TEST_CASE("plugin_opt_cache_file is an optional absolute path") {
  auto config = parse_config(Options{{"registry", "host=db.example dbname=registry"},
                                     {"cache_file", "/var/cache/mosquitto-onboard/snapshot "}});
  REQUIRE(config.ok());
  REQUIRE(config->cache_file.has_value());
  CHECK(*config->cache_file == "/var/cache/mosquitto-onboard/snapshot");
  for (const char* bad : {"snapshot", "", "./cache/snapshot"}) {
    INFO(bad);
    auto relative = parse_config(Options{{"registry", "/r.db"}, {"cache_file", bad}});
    REQUIRE_FALSE(relative.ok());
    CHECK(relative.error().message == "plugin_opt_cache_file must be an absolute path");
  }
}

TEST_CASE(
    "defaults refresh every 50 ms, refuse after 60 s without the registry, and log connections") {
  auto config = parse_config(Options{{"registry", "/var/lib/mosquitto-onboard/registry.db  "}});
  REQUIRE(config.ok());
  CHECK(config->registry.backend == registry::Backend::sqlite);
  CHECK(config->registry.target == "/var/lib/mosquitto-onboard/registry.db");  // spaces dropped
  CHECK_FALSE(config->cache_file.has_value());
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

TEST_CASE("the signer's options go together and default to four workers and a 5 s timeout") {
  const std::pair<std::string, std::string> registry{"registry", "/var/lib/r.db"};
  auto none = parse_config(Options{registry});
  REQUIRE(none.ok());
  CHECK(none->provision_url.empty());

  auto full = parse_config(Options{registry,
                                   {"provision_url", "https://signer.example:8443"},
                                   {"provision_token_file", "/etc/onboard/provision.token"},
                                   {"provision_cafile", "/etc/onboard/chain.pem"},
                                   {"provision_workers", "8"},
                                   {"provision_queue", "50"},
                                   {"provision_timeout_ms", "2000"}});
  REQUIRE(full.ok());
  CHECK(full->provision_url == "https://signer.example:8443");
  CHECK(full->provision_token_file == "/etc/onboard/provision.token");
  CHECK(full->provision_workers == 8);
  CHECK(full->provision_queue == 50);
  CHECK(full->provision_timeout == std::chrono::milliseconds(2000));
  auto defaults = parse_config(Options{registry,
                                       {"provision_url", "http://127.0.0.1:8443"},
                                       {"provision_token_file", "/etc/onboard/provision.token"}});
  REQUIRE(defaults.ok());
  CHECK(defaults->provision_workers == 4);
  CHECK(defaults->provision_timeout == std::chrono::milliseconds(5000));

  // A URL without the secret, the secret without a URL, another scheme, a relative path, a
  // worker count out of range: refused, naming the option.
  refused({{"provision_url", "http://127.0.0.1:8443"}}, "provision_token_file");
  refused({{"provision_token_file", "/etc/onboard/provision.token"}}, "provision_url");
  refused({{"provision_url", "ftp://x"}, {"provision_token_file", "/t"}}, "provision_url");
  refused({{"provision_url", "http://[::1]:1"}, {"provision_token_file", "t"}},
          "provision_token_file");
  refused({{"provision_url", "http://localhost"},
           {"provision_token_file", "/t"},
           {"provision_workers", "0"}},
          "provision_workers");
  // The secret goes in clear text over http://: only to this machine. The same host over https://
  // is the positive control.
  for (const char* url :
       {"http://10.0.0.5:8443", "http://signer.example", "http://127.0.0.1.example",
        "http://localhost.example:80", "http://[::1]x", "http://"}) {
    INFO(url);
    refused({{"provision_url", url}, {"provision_token_file", "/t"}}, "only to 127.0.0.1");
  }
  CHECK(parse_config(Options{registry,
                             {"provision_url", "https://10.0.0.5:8443"},
                             {"provision_token_file", "/t"}})
            .ok());
  CHECK(parse_config(Options{registry,
                             {"provision_url", "http://[::1]:8443/"},
                             {"provision_token_file", "/t"}})
            .ok());
}

TEST_CASE(
    "a claim's share of the provisioning queue defaults to a quarter of it and never exceeds it") {
  const std::pair<std::string, std::string> registry{"registry", "/var/lib/r.db"};
  auto defaults = parse_config(Options{registry});
  REQUIRE(defaults.ok());
  CHECK(defaults->provision_queue == 1000);
  CHECK(defaults->provision_claim_share == 250);
  // The quarter of the queue given, in either order of the lines; at least 1.
  auto quarter = parse_config(Options{registry, {"provision_queue", "50"}});
  REQUIRE(quarter.ok());
  CHECK(quarter->provision_claim_share == 12);
  auto tiny = parse_config(Options{registry, {"provision_queue", "3"}});
  REQUIRE(tiny.ok());
  CHECK(tiny->provision_claim_share == 1);
  auto given =
      parse_config(Options{registry, {"provision_claim_share", "40"}, {"provision_queue", "40"}});
  REQUIRE(given.ok());
  CHECK(given->provision_claim_share == 40);

  // Larger than the queue (the default 1000 or the one given), zero, not a number: refused.
  refused(
      {{"provision_claim_share", "1001"}},
      "plugin_opt_provision_claim_share (1001) must not exceed plugin_opt_provision_queue (1000)");
  refused({{"provision_queue", "40"}, {"provision_claim_share", "41"}},
          "must not exceed plugin_opt_provision_queue (40)");
  refused({{"provision_claim_share", "0"}},
          "plugin_opt_provision_claim_share must be a whole number");
  refused({{"provision_claim_share", "a quarter"}}, "plugin_opt_provision_claim_share");
}

TEST_CASE(
    "the plugin's credential towards the signer is the secret or a client certificate over https") {
  const std::pair<std::string, std::string> registry{"registry", "/var/lib/r.db"};
  auto certificate = parse_config(Options{registry,
                                          {"provision_url", "https://signer.example:8443"},
                                          {"provision_cafile", "/etc/onboard/chain.pem"},
                                          {"provision_certfile", "/etc/onboard/broker.crt"},
                                          {"provision_keyfile", "/etc/onboard/broker.key"}});
  REQUIRE(certificate.ok());
  CHECK(certificate->provision_certfile == "/etc/onboard/broker.crt");
  CHECK(certificate->provision_keyfile == "/etc/onboard/broker.key");
  CHECK(certificate->provision_token_file.empty());

  const std::pair<std::string, std::string> https{"provision_url", "https://signer.example:8443"};
  // The certificate without its key, or the key alone.
  refused({https, {"provision_certfile", "/c.crt"}}, "go together");
  refused({https, {"provision_keyfile", "/c.key"}}, "go together");
  // Both credentials at once: the signer would look at the secret alone.
  refused({https,
           {"provision_token_file", "/t"},
           {"provision_certfile", "/c.crt"},
           {"provision_keyfile", "/c.key"}},
          "not both");
  // Neither: the URL names both ways.
  refused({https}, "plugin_opt_provision_certfile and plugin_opt_provision_keyfile");
  // Over http:// a client certificate means nothing: refused, even to this machine.
  refused({{"provision_url", "http://127.0.0.1:8443"},
           {"provision_certfile", "/c.crt"},
           {"provision_keyfile", "/c.key"}},
          "needs an https://");
  // Without a URL, and relative paths.
  refused({{"provision_certfile", "/c.crt"}, {"provision_keyfile", "/c.key"}},
          "go with plugin_opt_provision_url");
  refused({https, {"provision_certfile", "c.crt"}, {"provision_keyfile", "/c.key"}},
          "plugin_opt_provision_certfile must be an absolute path");
}
