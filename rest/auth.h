// Who is calling the REST server: a bearer token, or a client certificate bound to a credential.
#pragma once

#include <httplib.h>

#include <variant>

#include "registry/store.h"
#include "rest/http.h"

namespace onboard::rest {

// Who is calling: a client certificate the TLS handshake verified against --client-ca, that is
// bound to a credential and that the registry knows as active and in date (only when no
// Authorization header is sent), else a bearer token. The Reply is the refusal.
std::variant<registry::ApiToken, Reply> caller(registry::Store& store,
                                               const httplib::Request& request);

}  // namespace onboard::rest
