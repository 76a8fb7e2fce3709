// The OCSP responder of 'onboardctl serve': answers from the registry, signed by a delegated
// responder certificate the CA issues and renews by itself.
//
// Choices (docs/architecture.md, "OCSP"):
//  - The responder certificate lives in <data>/ca/ocsp.crt and ocsp.key (0600, unencrypted: the
//    server signs with it unattended). It is valid kOcspResponderDays and renewed once less than
//    kOcspResponderRenewBefore is left, or when it is missing, unreadable or from another CA. It
//    carries id-pkix-ocsp-nocheck, so it cannot be revoked in practice: hence the short life.
//    Each one is recorded in the registry (kind other), like every certificate the CA signs.
//  - Every answer is looked up and signed when asked, never cached: a revocation shows in the
//    very next answer. thisUpdate is the time of the answer, nextUpdate kOcspResponseValidity
//    after it (how long a client may keep it).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ca/authority.h"
#include "ca/ocsp.h"
#include "registry/store.h"

namespace onboard::ops {

inline constexpr int kOcspResponderDays = 7;
inline constexpr UnixTime kOcspResponderRenewBefore = 2 * 86400;
inline constexpr UnixTime kOcspResponseValidity = 3600;

struct OcspResponderFiles {
  explicit OcspResponderFiles(const ca::Authority& ca)
      : cert(ca.paths().dir / "ocsp.crt"), key(ca.paths().dir / "ocsp.key") {}
  std::filesystem::path cert, key;
};

// The responder in the CA's directory when it is fit to use at `now`: issued by the issuing CA,
// holding the key beside it, valid for more than kOcspResponderRenewBefore. nullopt when it is
// absent or not fit (then renew_ocsp_responder); an error only for a file that cannot be read.
Result<std::optional<ca::OcspResponder>> load_ocsp_responder(const ca::Authority& ca, UnixTime now);

// Issues a new responder certificate through the CA's Signer, records it (kind other) and then
// replaces the files, key first. A certificate that could not be recorded is not used.
Result<ca::OcspResponder> renew_ocsp_responder(registry::Store& store, const ca::Authority& ca,
                                               const registry::Actor& actor);

// The DER OCSPResponse to a DER request: statuses from the registry for certificates of the
// issuing CA (good, revoked with time and reason), unknown for anything else; malformedRequest
// for a request that does not parse; internalError when the registry cannot answer.
std::string answer_ocsp(registry::Store& store, const ca::Authority& ca,
                        const ca::OcspResponder& responder, std::string_view der, UnixTime now);

}  // namespace onboard::ops
