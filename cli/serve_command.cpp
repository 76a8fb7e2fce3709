#include "cli/commands.h"

#include <charconv>
#include <chrono>
#include <iostream>
#include <memory>

#include "ops/credentials.h"
#include "ops/duration.h"
#include "ops/operations.h"
#include "ops/workspace.h"
#include "rest/server.h"

namespace onboard::cli {
namespace {

// "HOST:PORT", "[v6]:PORT" or ":PORT"; the port 0 to 65535 (0: any free port).
Status parse_listen(const std::string& text, rest::ServeOptions& options) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return make_error(Errc::invalid_input, "--listen must be HOST:PORT, e.g. 127.0.0.1:8443");
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = -1;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port < 0 || port > 65535)
    return make_error(Errc::invalid_input, "--listen: the port must be 0 to 65535");
  options.host = host.empty() ? "127.0.0.1" : host;
  options.port = port;
  return ok_status();
}

std::string seconds_text(std::chrono::milliseconds duration) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(duration).count());
}

}  // namespace

void add_serve_command(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string listen = "127.0.0.1:8443";
    rest::ServeOptions server;
    PassphraseSource passphrase;
    PassphraseSource hold_passphrase{"hold-passphrase"};
    bool list_routes = false;
    std::string renewal_grace = "24h";
    std::string renewal_min_age = "1h";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve the REST API (bearer tokens from 'onboardctl token create'), the CRL and one-time "
      "bundle links until SIGTERM/SIGINT");
  cmd->add_option("--listen", o->listen,
                  "Address and port. The default is loopback only; binding any other address "
                  "(e.g. 0.0.0.0:8443) exposes the API to the network: use --tls-cert/--tls-key "
                  "then")
      ->capture_default_str();
  cmd->add_option("--threads", o->server.threads,
                  "Worker threads, each serving one request at a time; clients that are slow to "
                  "send a request or idle between requests wait without holding one")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("--max-connections", o->server.max_connections,
                  "Open connections at once, from all peers; more are closed at once (plain "
                  "HTTP: after a 503)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--max-connections-per-peer", o->server.max_connections_per_peer,
                  "Open connections at once from one IP address; more are closed at once (plain "
                  "HTTP: after a 503)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option_function<int>(
         "--header-timeout",
         [o](int seconds) { o->server.header_timeout = std::chrono::seconds(seconds); },
         "Seconds a client has to send a whole request line and headers (TLS handshake "
         "included), however slowly it sends them; then the connection is closed")
      ->default_str(seconds_text(o->server.header_timeout))
      ->check(CLI::Range(1, 3600));
  cmd->add_option_function<int>(
         "--body-timeout",
         [o](int seconds) { o->server.body_timeout = std::chrono::seconds(seconds); },
         "Seconds an authenticated request has to send its whole body; then the connection is "
         "closed")
      ->default_str(seconds_text(o->server.body_timeout))
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--max-body", o->server.max_body_bytes,
                  "Largest request body in bytes (larger: 413); read only once the caller is "
                  "authenticated")
      ->capture_default_str()
      ->check(CLI::Range(1024, 16 * 1024 * 1024));
  auto* cert_opt = cmd->add_option("--tls-cert", o->server.tls_cert,
                                   "Serve HTTPS with this certificate chain (PEM)");
  auto* key_opt =
      cmd->add_option("--tls-key", o->server.tls_key, "The TLS key (PEM, unencrypted, 0600)");
  auto* client_ca_opt = cmd->add_option(
      "--client-ca", o->server.client_ca,
      "Also accept operators by client certificate: CA certificates (PEM, e.g. DATA_DIR/ca/"
      "chain.pem) to verify them against; bind a certificate with 'token create --client-cert'");
  cmd->add_option("--provision-token-file", o->server.provision_token_file,
                  "Let the broker's plugin hand over devices' enrolment requests (docs/"
                  "provisioning.md), authenticated by the secret in this file (one line, at least "
                  "32 characters; the same file as the plugin's plugin_opt_provision_token_file)")
      ->check(CLI::ExistingFile);
  auto* provision_cert_opt = cmd->add_option(
      "--provision-client-cert", o->server.provision_client_certs,
      "Let the broker's plugin hand over devices' enrolment requests authenticated by this client "
      "certificate (PEM; e.g. from 'ca issue --device NAME'; the plugin's "
      "plugin_opt_provision_certfile) instead of, or beside, the secret; verified against "
      "--client-ca, and refused once revoked or out of date in the registry. Repeat it for each "
      "broker's certificate");
  provision_cert_opt->check(CLI::ExistingFile);
  cmd->add_option("--renewal-grace", o->renewal_grace,
                  "With --provision-token-file or --provision-client-cert: how long a device's old "
                  "certificate stays valid after it renewed over MQTT if the new one never "
                  "connects; then it is revoked (superseded). 1s to 365d, default 24h")
      ->default_str("24h");
  cmd->add_option("--renewal-min-age", o->renewal_min_age,
                  "With --provision-token-file or --provision-client-cert: how old the certificate "
                  "a device connected with must be before it may renew it over MQTT (younger: "
                  "renewal_too_soon), so that no device can have the CRL rewritten, and every "
                  "broker re-read it, over and over. 0 to 365d, default 1h")
      ->default_str("1h");
  cert_opt->needs(key_opt);
  key_opt->needs(cert_opt);
  client_ca_opt->needs(cert_opt);
  provision_cert_opt->needs(client_ca_opt);
  o->passphrase.add_to(*cmd, "the CA key (read once, at start)");
  o->hold_passphrase.add_to(
      *cmd,
      "device keys the server makes for requests without a CSR; they are kept encrypted until "
      "bundled. Without it such requests are refused");
  cmd->add_flag("--list-routes", o->list_routes, "Print the routes served, one per line, and exit");
  cmd->callback([o, &global, &exit_code] {
    exit_code = run_action([&]() -> Result<int> {
      if (o->list_routes) {
        for (const auto& route : rest::routes())
          std::cout << route.method << " " << route.path << "\n";
        return kExitOk;
      }
      ONBOARD_CHECK(parse_listen(o->listen, o->server));
      ONBOARD_TRY(const auto grace,
                  ops::parse_duration(o->renewal_grace, "--renewal-grace", 1, 365 * ops::kDay));
      o->server.renewal_grace = std::chrono::seconds(grace);
      ONBOARD_TRY(const auto min_age,
                  ops::parse_duration(o->renewal_min_age, "--renewal-min-age", 0, 365 * ops::kDay));
      o->server.renewal_min_age = std::chrono::seconds(min_age);
      ONBOARD_TRY(const auto ws, workspace(global));
      ONBOARD_TRY(auto hold, o->hold_passphrase.read());
      if (hold) {
        if (auto problem = ops::hold_passphrase_problem(*hold))
          return make_error(Errc::invalid_input, "hold passphrase: " + *problem);
      }
      ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
      ONBOARD_CHECK(rest::serve(ws, std::move(ca), std::move(hold), o->server));
      return kExitOk;
    });
  });
}

}  // namespace onboard::cli
