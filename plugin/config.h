// The plugin's options, from `plugin_opt_<key> <value>` lines in mosquitto.conf. Parsed once at
// init: Mosquitto does not re-read them on SIGHUP.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "registry/location.h"

namespace onboard::plugin {

enum class AclLogging { none, denied, all };

// What happens to a client that presents no client certificate (a username/password client on a
// second listener: a backend service, a dashboard).
enum class ClientsWithoutCertificate {
  deny,   // refused at connect, as every client the registry does not vouch for
  defer,  // left to Mosquitto's other mechanisms (password_file, acl_file, dynamic security)
};

struct Config {
  registry::Location registry;  // plugin_opt_registry (required): a location
  // plugin_opt_cache_file: where the last good snapshot is kept, for starting while a PostgreSQL
  // registry is down (an absolute path). Parsed, not used yet.
  std::optional<std::string> cache_file;
  std::chrono::milliseconds refresh_interval{50};  // plugin_opt_refresh_interval_ms
  std::chrono::seconds staleness_limit{60};        // plugin_opt_staleness_limit_s
  AclLogging log_acl = AclLogging::none;           // plugin_opt_log_acl
  bool log_connections = true;                     // plugin_opt_log_connections
  // The listener's `crlfile`, to check and have the broker reload when it changes (empty: none).
  std::string crl_file;    // plugin_opt_crl_file
  std::string crl_cafile;  // plugin_opt_crl_cafile: a CRL must be signed by one of these
  // plugin_opt_clients_without_certificate. Certificate clients are always the plugin's to decide.
  ClientsWithoutCertificate without_certificate = ClientsWithoutCertificate::deny;
  // Connects with one claim's certificate (docs/provisioning.md): a token bucket per claim that
  // refills at this many per second and holds at most `burst`, so that a leaked claim cannot flood
  // the broker (and, later, the CA). plugin_opt_claim_connect_rate, plugin_opt_claim_connect_burst.
  long claim_connect_rate = 10;
  long claim_connect_burst = 50;
  // Enrolment over MQTT (docs/provisioning.md): where the signer (`onboardctl serve`) is,
  // plugin_opt_provision_url (http:// or https://; empty: requests are answered
  // signer_unavailable), the plugin's credential towards it, either the file with the secret it
  // accepts (plugin_opt_provision_token_file) or, over https://, a client certificate and its key
  // (plugin_opt_provision_certfile, plugin_opt_provision_keyfile), one of them required with a
  // URL, the CA certificates its TLS certificate is checked against
  // (plugin_opt_provision_cafile), how many requests go to it at once
  // (plugin_opt_provision_workers), how many may wait (plugin_opt_provision_queue), how many of
  // them may be one claim's enrolments (plugin_opt_provision_claim_share; by default a quarter of
  // the queue, at least 1; at most the queue) and how long one may take
  // (plugin_opt_provision_timeout_ms).
  std::string provision_url;
  std::string provision_token_file;
  std::string provision_cafile;
  std::string provision_certfile;
  std::string provision_keyfile;
  long provision_workers = 4;
  long provision_queue = 1000;
  long provision_claim_share = 250;
  std::chrono::milliseconds provision_timeout{5000};
};

// Unknown keys, bad values and a missing registry are errors: a typo in a security setting must
// stop the broker, not be ignored.
Result<Config> parse_config(const std::vector<std::pair<std::string, std::string>>& options);

}  // namespace onboard::plugin
