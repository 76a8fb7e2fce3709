#include "rest/auth.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>

#include "core/x509.h"
#include "ops/operations.h"

namespace onboard::rest {
namespace {

using registry::Store;

Reply unauthorized(bool token_given) {
  Reply reply = error_reply(401, "unauthorized",
                            token_given ? "the bearer token is unknown or revoked"
                                        : "send Authorization: Bearer <token>");
  reply.headers.emplace_back("WWW-Authenticate",
                             token_given
                                 ? "Bearer realm=\"mosquitto-onboard\", error=\"invalid_token\""
                                 : "Bearer realm=\"mosquitto-onboard\"");
  return reply;
}

// A store that cannot answer while a certificate is checked refuses the request (fail closed).
Reply certificate_check_unavailable(const Error& error) {
  log_line("unavailable: checking a client certificate: " + error.message);
  Reply reply = error_reply(503, "unavailable", "the registry is busy or unavailable; retry");
  reply.headers.emplace_back("Retry-After", "1");
  return reply;
}

Reply certificate_refused(const std::string& message) {
  Reply reply = error_reply(401, "unauthorized", message);
  reply.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"mosquitto-onboard\"");
  return reply;
}

// The registry's record of a bound client certificate, read on every request: the handshake
// checked the chain and dates only when the connection opened and knows nothing of `ca revoke`
// or `device revoke`, so a certificate revoked since, one expired on a kept-alive connection, or
// one the CA's registry never recorded is refused here. The Reply is the refusal.
std::optional<Reply> bound_certificate_refusal(Store& store, const std::string& fingerprint) {
  auto record = store.find_certificate_by_fingerprint(fingerprint);
  if (!record.ok()) {
    if (record.error().code != Errc::not_found)
      return certificate_check_unavailable(record.error());
    return certificate_refused("the client certificate is not one the registry's CA recorded");
  }
  if (record->status == registry::CertificateStatus::revoked) {
    std::string reason = record->revocation_reason
                             ? std::string(revocation_reason_name(*record->revocation_reason))
                             : std::string("unspecified");
    return certificate_refused("the client certificate (serial " + record->serial_hex +
                               ") is revoked (" + reason + ")");
  }
  const UnixTime now = unix_now();
  if (now < record->not_before)
    return certificate_refused("the client certificate (serial " + record->serial_hex +
                               ") is not valid yet");
  if (now > record->not_after)
    return certificate_refused("the client certificate (serial " + record->serial_hex +
                               ") has expired");
  return std::nullopt;
}

// The SHA-256 fingerprint of the client certificate the TLS handshake verified against
// --client-ca; nullopt without TLS, without a certificate, when it did not verify, or when it
// cannot be fingerprinted (no certificate, then: an empty fingerprint is nobody's).
std::optional<std::string> verified_peer_sha256(const httplib::Request& request) {
  if (request.ssl == nullptr) return std::nullopt;
  const X509* peer = SSL_get0_peer_certificate(request.ssl);
  if (peer == nullptr || SSL_get_verify_result(request.ssl) != X509_V_OK) return std::nullopt;
  std::string fingerprint = sha256_fingerprint(peer);
  if (fingerprint.empty()) return std::nullopt;
  return fingerprint;
}

// Whether the request has an Authorization header: then it alone decides, whatever it holds.
// (cpp-httplib drops a header line whose value is empty or blanks, before any handler: such a
// line is no header.)
bool authorization_sent(const httplib::Request& request) {
  return request.has_header("Authorization");
}

Reply provisioner_required() {
  return error_reply(401, "unauthorized", "a provisioning credential is required");
}

}  // namespace

std::optional<std::string_view> bearer_token(std::string_view header) {
  constexpr std::string_view kScheme = "Bearer ";
  const bool is_bearer =
      header.size() > kScheme.size() &&
      std::equal(kScheme.begin(), kScheme.end(), header.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) ==
               std::tolower(static_cast<unsigned char>(b));
      });
  if (!is_bearer) return std::nullopt;
  return header.substr(kScheme.size());
}

std::variant<registry::ApiToken, Reply> caller(Store& store, const httplib::Request& request) {
  const std::string header = request.get_header_value("Authorization");
  if (!authorization_sent(request) && request.ssl != nullptr) {
    if (const auto fingerprint = verified_peer_sha256(request)) {
      auto credential = ops::authenticate_certificate(store, *fingerprint);
      if (!credential.ok()) {
        if (credential.error().code != Errc::not_found)
          return certificate_check_unavailable(credential.error());
        return unauthorized(false);
      }
      if (auto refusal = bound_certificate_refusal(store, *fingerprint)) return std::move(*refusal);
      return std::move(credential).value();
    }
    return unauthorized(false);
  }
  const auto sent = bearer_token(header);
  if (!sent) return unauthorized(!header.empty());
  auto token = ops::authenticate_token(store, *sent);
  if (token.ok()) return std::move(token).value();
  if (token.error().code == Errc::not_found) return unauthorized(true);
  return reply_for(token.error());
}

std::variant<std::string, Reply> provisioning_caller(
    Store& store, const httplib::Request& request, const std::optional<Secret>& secret,
    const std::vector<std::string>& certificates_sha256) {
  if (authorization_sent(request)) {
    const std::string header = request.get_header_value("Authorization");  // `sent` views it
    const auto sent = bearer_token(header);
    if (!secret || !sent) return provisioner_required();
    const std::string_view want = secret->view();
    const bool same =
        sent->size() == want.size() && CRYPTO_memcmp(sent->data(), want.data(), want.size()) == 0;
    if (!same) return provisioner_required();
    return std::string("provision:secret");
  }
  const auto fingerprint = verified_peer_sha256(request);
  if (!fingerprint || std::find(certificates_sha256.begin(), certificates_sha256.end(),
                                *fingerprint) == certificates_sha256.end())
    return provisioner_required();
  if (auto refusal = bound_certificate_refusal(store, *fingerprint)) return std::move(*refusal);
  return "provision:broker:" + fingerprint->substr(0, 16);
}

}  // namespace onboard::rest
