// Who is calling the REST server: a bearer token, or a client certificate bound to a credential.
#pragma once

#include <httplib.h>

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/secret.h"
#include "registry/store.h"
#include "rest/http.h"

namespace onboard::rest {

// The token of an `Authorization: Bearer <token>` header value (the scheme case-insensitive, RFC
// 7235), viewing `header`; nullopt for an empty header, another scheme or no token. The one place
// both the API tokens and the provisioning secret are read from.
std::optional<std::string_view> bearer_token(std::string_view header);

// Who is calling: a client certificate the TLS handshake verified against --client-ca, that is
// bound to a credential and that the registry knows as active and in date (only when no
// Authorization header is sent: one that is sent alone decides, and one that holds no known
// bearer token is refused), else a bearer token. The Reply is the refusal.
std::variant<registry::ApiToken, Reply> caller(registry::Store& store,
                                               const httplib::Request& request);

// The broker's plugin on the provisioning routes: the audit actor it records as, or the refusal
// (401). A request with an Authorization header is decided by that header alone: its bearer token
// must be `secret` (compared in constant time), and is then `provision:secret`; any other header
// value (another scheme, no token, another token) is refused, whatever certificate comes with it.
// Without one, a client certificate the TLS handshake verified against --client-ca whose SHA-256
// fingerprint is one of `certificates_sha256` and that the registry knows as active and in date,
// named `provision:broker:<the first 16 hex digits of its SHA-256>`. No API token and no other
// certificate: refused.
std::variant<std::string, Reply> provisioning_caller(
    registry::Store& store, const httplib::Request& request, const std::optional<Secret>& secret,
    const std::vector<std::string>& certificates_sha256);

}  // namespace onboard::rest
