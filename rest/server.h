// The REST server behind `onboardctl serve`: HTTP routes (routes.h) mapped onto ops::
// (ops/operations.h), bearer-token authentication, JSON errors. docs/openapi.yaml describes every
// route.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "ca/authority.h"
#include "core/secret.h"
#include "ops/workspace.h"

namespace onboard::rest {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8443;          // 0: any free port (printed at start)
  std::size_t threads = 8;  // workers: each serves one request at a time, never a waiting client
  // Open connections at once, in total and from one peer address; more are refused (closed; a
  // plain HTTP one answered 503 first).
  std::size_t max_connections = 512;
  std::size_t max_connections_per_peer = 16;
  // The whole request head (TLS handshake included for a new connection) must arrive within this,
  // however it is split; then the body within body_timeout.
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds body_timeout{std::chrono::seconds(30)};
  std::size_t max_body_bytes = 256 * 1024;  // a CSR is ~1 KiB; nothing legitimate comes near
  int keep_alive_seconds = 5;
  std::size_t keep_alive_max_requests = 1000;
  std::string tls_cert, tls_key;  // both or neither: HTTPS
  // With TLS: CA certificates (PEM) that client certificates are verified against. A verified
  // client certificate bound to a credential (token create --client-cert) authenticates without
  // a bearer token; a client without one may still send a token.
  std::string client_ca;
  // How often the server looks whether the CRL needs re-issuing (it does when less than half of
  // its lifetime is left).
  std::chrono::seconds crl_check_interval{60};
  // A file holding the secret the broker's plugin authenticates with to hand over enrolment
  // requests (POST /v1/provision/...); empty: enrolment over MQTT is off.
  std::string provision_token_file;
  // The client certificates (PEM files, one a broker) the brokers' plugins may authenticate with
  // instead of (or beside) the secret: needs client_ca, which the handshake verifies them against;
  // the registry must know each as active and in date (`ca issue` records it). Either these or
  // the secret turn enrolment over MQTT on.
  std::vector<std::string> provision_client_certs;
  // How long a device's old certificate stays valid after it renewed over MQTT when the new one
  // never connects (docs/provisioning.md, "Renewal"); then this server revokes it as superseded.
  std::chrono::seconds renewal_grace{86400};
  // The least age of the certificate a device renews with (ops::RenewRequest::min_age).
  std::chrono::seconds renewal_min_age{3600};
};

// One route as the server registers it and docs/openapi.yaml names it: "GET", "/v1/devices/{id}".
struct Route {
  std::string method;
  std::string path;
};
std::vector<Route> routes();

// Serves until SIGTERM or SIGINT, then returns (requests in flight are finished). The CA's
// signing key is loaded; `hold_passphrase` lets requests without a CSR have a key made and held.
// Prints "serving on http(s)://HOST:PORT" on stdout once listening.
Status serve(const ops::Workspace& workspace, ca::Authority ca,
             std::optional<Secret> hold_passphrase, const ServeOptions& options);

}  // namespace onboard::rest
