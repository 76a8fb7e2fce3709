// Chain and revocation checks with OpenSSL's own verifier, as a relying party would do them.
#pragma once

#include <span>
#include <string>

#include "ca/certificate.h"

namespace onboard::ca {

enum class Purpose { any, tls_client, tls_server };

struct VerifyOutcome {
  int code = 0;         // an X509_V_ERR_* value; X509_V_OK (0) when the chain is valid
  std::string message;  // OpenSSL's text for `code`
  bool ok() const noexcept { return code == 0; }
};

struct VerifyOptions {
  UnixTime at = 0;  // the time to verify at; 0 means now
  Purpose purpose = Purpose::any;
  bool check_crl = false;  // the leaf's issuer must then have a CRL in `crls`
};

VerifyOutcome verify_certificate(const X509* leaf, std::span<X509* const> intermediates,
                                 std::span<X509* const> roots, std::span<X509_CRL* const> crls,
                                 const VerifyOptions& options);

}  // namespace onboard::ca
