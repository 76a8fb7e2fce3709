// Certificate revocation lists, built as a pure function of the CA and the revoked entries.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ca/certificate.h"

namespace onboard {

// RFC 5280 CRLReason codes the project uses (certificateHold is deliberately absent: revocation
// here is final).
enum class RevocationReason {
  unspecified = 0,
  key_compromise = 1,
  ca_compromise = 2,
  affiliation_changed = 3,
  superseded = 4,
  cessation_of_operation = 5,
  privilege_withdrawn = 9,
};

// "unspecified|keyCompromise|caCompromise|affiliationChanged|superseded|cessationOfOperation|privilegeWithdrawn"
inline constexpr std::string_view kRevocationReasonNames =
    "unspecified|keyCompromise|caCompromise|affiliationChanged|superseded|cessationOfOperation|"
    "privilegeWithdrawn";
std::optional<RevocationReason> parse_revocation_reason(std::string_view name) noexcept;
std::string_view revocation_reason_name(RevocationReason reason) noexcept;

struct RevokedEntry {
  std::string serial_hex;
  UnixTime revoked_at = 0;
  RevocationReason reason = RevocationReason::unspecified;
};

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
Result<ossl::Ptr<X509_CRL>> crl_from_pem(std::string_view pem);

}  // namespace onboard
