// Certificate revocation lists, built as a pure function of the CA and the revoked entries.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ca/certificate.h"
#include "core/revocation.h"

namespace onboard::ca {

struct CrlParams {
  std::uint64_t crl_number = 0;  // monotonic: the caller stores it and passes the next one
  UnixTime this_update = 0;
  UnixTime next_update = 0;
};

// A v2 CRL signed by `signer` for `issuer`, with CRL Number, AKI and a reason code on every
// entry other than unspecified. Entries are sorted by serial.
Result<ossl::Ptr<X509_CRL>> build_crl(const X509* issuer, const Signer& signer,
                                      std::span<const RevokedEntry> revoked,
                                      const CrlParams& params);

std::string crl_to_pem(const X509_CRL* crl);
std::string crl_to_der(const X509_CRL* crl);
// The first CRL of a PEM text.
Result<ossl::Ptr<X509_CRL>> crl_from_pem(std::string_view pem);
// Every CRL of a PEM text, in order: a CRL file holds one per issuing CA after 'ca rotate'.
Result<std::vector<ossl::Ptr<X509_CRL>>> crls_from_pem(std::string_view pem);

}  // namespace onboard::ca
