// Why a certificate was revoked: the registry stores it, the CRL and the audit log carry it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/time.h"

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

// One line of a CRL.
struct RevokedEntry {
  std::string serial_hex;
  UnixTime revoked_at = 0;
  RevocationReason reason = RevocationReason::unspecified;
};

}  // namespace onboard
