#include "plugin/config.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <string_view>

namespace onboard::plugin {
namespace {

Result<long> parse_number(const std::string& key, const std::string& value, long min, long max) {
  long number = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
  if (ec != std::errc() || end != value.data() + value.size() || number < min || number > max) {
    return make_error(Errc::invalid_input, "plugin_opt_" + key + " must be a whole number from " +
                                               std::to_string(min) + " to " + std::to_string(max) +
                                               ", not '" + value + "'");
  }
  return number;
}

Result<bool> parse_bool(const std::string& key, const std::string& value) {
  if (value == "true" || value == "1" || value == "yes") return true;
  if (value == "false" || value == "0" || value == "no") return false;
  return make_error(Errc::invalid_input,
                    "plugin_opt_" + key + " must be true or false, not '" + value + "'");
}

// Whether the authority of a URL (what follows "http://") names this machine: 127.0.0.1, [::1]
// or localhost, with or without a port and a path.
bool loopback_host(std::string_view authority) {
  const std::string_view host = authority.substr(0, authority.find_first_of(":/"));
  if (authority.starts_with("[::1]")) {
    const std::string_view rest = authority.substr(5);
    return rest.empty() || rest.front() == ':' || rest.front() == '/';
  }
  return host == "127.0.0.1" || host == "localhost";
}

}  // namespace

Result<Config> parse_config(const std::vector<std::pair<std::string, std::string>>& options) {
  Config config;
  bool has_registry = false;
  std::optional<long> claim_share;
  for (const auto& [key, raw] : options) {
    // Mosquitto keeps trailing spaces in option values; they are never meaningful here.
    std::string value = raw;
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t' || value.back() == '\r'))
      value.pop_back();
    if (key == "registry") {
      // An SQLite path must be absolute: the broker's working directory is not ours. The parser's
      // messages never quote the value, which may hold a password.
      auto location = registry::parse_location(value);
      if (!location.ok()) {
        return make_error(Errc::invalid_input, "plugin_opt_registry: " + location.error().message);
      }
      config.registry = std::move(location).value();
      has_registry = true;
    } else if (key == "cache_file") {
      if (value.empty() || value.front() != '/') {
        return make_error(Errc::invalid_input, "plugin_opt_cache_file must be an absolute path");
      }
      config.cache_file = value;
    } else if (key == "crl_file" || key == "crl_cafile") {
      if (value.empty() || value.front() != '/') {
        return make_error(Errc::invalid_input, "plugin_opt_" + key + " must be an absolute path");
      }
      (key == "crl_file" ? config.crl_file : config.crl_cafile) = value;
    } else if (key == "provision_url") {
      if (!value.starts_with("http://") && !value.starts_with("https://")) {
        return make_error(Errc::invalid_input,
                          "plugin_opt_provision_url must start with http:// or https://");
      }
      // The secret and the certificates the signer answers with travel in it: in clear text only
      // to this machine.
      if (value.starts_with("http://") && !loopback_host(value.substr(7))) {
        return make_error(
            Errc::invalid_input,
            "plugin_opt_provision_url: http:// only to 127.0.0.1, [::1] or localhost; "
            "use https:// to reach another machine");
      }
      config.provision_url = value;
    } else if (key == "provision_token_file" || key == "provision_cafile" ||
               key == "provision_certfile" || key == "provision_keyfile") {
      if (value.empty() || value.front() != '/') {
        return make_error(Errc::invalid_input, "plugin_opt_" + key + " must be an absolute path");
      }
      (key == "provision_token_file" ? config.provision_token_file
       : key == "provision_cafile"   ? config.provision_cafile
       : key == "provision_certfile" ? config.provision_certfile
                                     : config.provision_keyfile) = value;
    } else if (key == "provision_workers") {
      ONBOARD_TRY(config.provision_workers, parse_number(key, value, 1, 64));
    } else if (key == "provision_queue") {
      ONBOARD_TRY(config.provision_queue, parse_number(key, value, 1, 1000000));
    } else if (key == "provision_claim_share") {
      ONBOARD_TRY(claim_share, parse_number(key, value, 1, 1000000));
    } else if (key == "provision_timeout_ms") {
      ONBOARD_TRY(long ms, parse_number(key, value, 100, 60000));
      config.provision_timeout = std::chrono::milliseconds(ms);
    } else if (key == "refresh_interval_ms") {
      ONBOARD_TRY(long ms, parse_number(key, value, 10, 10000));
      config.refresh_interval = std::chrono::milliseconds(ms);
    } else if (key == "claim_connect_rate") {
      ONBOARD_TRY(config.claim_connect_rate, parse_number(key, value, 1, 100000));
    } else if (key == "claim_connect_burst") {
      ONBOARD_TRY(config.claim_connect_burst, parse_number(key, value, 1, 1000000));
    } else if (key == "staleness_limit_s") {
      ONBOARD_TRY(long s, parse_number(key, value, 1, 86400));
      config.staleness_limit = std::chrono::seconds(s);
    } else if (key == "log_acl") {
      if (value == "none")
        config.log_acl = AclLogging::none;
      else if (value == "denied")
        config.log_acl = AclLogging::denied;
      else if (value == "all")
        config.log_acl = AclLogging::all;
      else
        return make_error(Errc::invalid_input,
                          "plugin_opt_log_acl must be none, denied or all, not '" + value + "'");
    } else if (key == "log_connections") {
      ONBOARD_TRY(config.log_connections, parse_bool(key, value));
    } else if (key == "clients_without_certificate") {
      if (value == "deny")
        config.without_certificate = ClientsWithoutCertificate::deny;
      else if (value == "defer")
        config.without_certificate = ClientsWithoutCertificate::defer;
      else
        return make_error(
            Errc::invalid_input,
            "plugin_opt_clients_without_certificate must be deny or defer, not '" + value + "'");
    } else {
      return make_error(Errc::invalid_input, "unknown option plugin_opt_" + key);
    }
  }
  if (!has_registry) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_registry is required: where the registry is (the SQLite file's "
                      "absolute path or a PostgreSQL connection string)");
  }
  if (!config.crl_cafile.empty() && config.crl_file.empty()) {
    return make_error(Errc::invalid_input, "plugin_opt_crl_cafile goes with plugin_opt_crl_file");
  }
  // The plugin's credential towards the signer: the secret, or a client certificate (over
  // https:// only, the certificate and its key together); one, not both (the signer would decide
  // by the secret alone).
  const bool certificate = !config.provision_certfile.empty() || !config.provision_keyfile.empty();
  if (certificate && (config.provision_certfile.empty() || config.provision_keyfile.empty())) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_provision_certfile and plugin_opt_provision_keyfile go together");
  }
  if (certificate && !config.provision_token_file.empty()) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_provision_token_file or plugin_opt_provision_certfile: one "
                      "credential towards the signer, not both");
  }
  if (!config.provision_url.empty() && !certificate && config.provision_token_file.empty()) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_provision_url needs plugin_opt_provision_token_file (the secret "
                      "the signer accepts) or plugin_opt_provision_certfile and "
                      "plugin_opt_provision_keyfile (a client certificate it accepts)");
  }
  if (config.provision_url.empty() &&
      (!config.provision_token_file.empty() || !config.provision_cafile.empty() || certificate)) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_provision_token_file, plugin_opt_provision_cafile and "
                      "plugin_opt_provision_certfile go with plugin_opt_provision_url");
  }
  if (certificate && !config.provision_url.starts_with("https://")) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_provision_certfile needs an https:// plugin_opt_provision_url");
  }
  // A claim's share of the queue: a quarter by default, so that at least four claims flooding at
  // once are needed to fill it; a share larger than the queue would be no share at all.
  if (claim_share && *claim_share > config.provision_queue) {
    return make_error(Errc::invalid_input, "plugin_opt_provision_claim_share (" +
                                               std::to_string(*claim_share) +
                                               ") must not exceed plugin_opt_provision_queue (" +
                                               std::to_string(config.provision_queue) + ")");
  }
  config.provision_claim_share = claim_share.value_or(std::max(1L, config.provision_queue / 4));
  if (config.staleness_limit <= config.refresh_interval) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_staleness_limit_s must be longer than the refresh interval");
  }
  return config;
}

}  // namespace onboard::plugin
