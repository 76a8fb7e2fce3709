// The OCSP responder of 'onboardctl serve': answers from the registry, signed by a delegated
// responder certificate the CA issues and renews by itself.
//
// Choices (docs/architecture.md, "OCSP"):
//  - The responder certificate lives in <data>/ca/ocsp.crt and ocsp.key (0600, unencrypted: the
//    server signs with it unattended); each issuing CA kept by 'ca rotate' has its own. It is valid
//    kOcspResponderDays and renewed once less than kOcspResponderRenewBefore is left, or when it is
//    missing, unreadable or from another CA. It carries id-pkix-ocsp-nocheck, so it cannot be
//    revoked in practice: hence the short life. Each one is recorded in the registry (kind other),
//    like every certificate the CA signs.
//  - Every answer is looked up and signed when asked, never cached: a revocation shows in the
//    very next answer. thisUpdate is the time of the answer, nextUpdate kOcspResponseValidity
//    after it (how long a client may keep it).
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ca/authority.h"
#include "ca/ocsp.h"
#include "registry/store.h"

namespace onboard::ops {

inline constexpr int kOcspResponderDays = 7;
inline constexpr UnixTime kOcspResponderRenewBefore = 2 * 86400;
inline constexpr UnixTime kOcspResponseValidity = 3600;

// An issuing CA the responder answers for: the current one, or an earlier one 'ca rotate' kept.
// Each has a delegated responder of its own, certified by that issuer, because an OCSP client
// accepts a delegated responder only when the certificate's own issuer signed it (RFC 6960
// 4.2.2.2). The current issuer's is in ca/ocsp.crt and ocsp.key, a kept one's in
// ca/ocsp-<ISSUER SERIAL>.crt and .key.
struct OcspIssuer {
  const X509* cert = nullptr;
  const ca::Signer* signer = nullptr;  // nullptr until Authority::load_signing_key()
  std::filesystem::path responder_cert, responder_key;
};

// The current issuing CA first, then the kept earlier ones (Authority::retired() order).
std::vector<OcspIssuer> ocsp_issuers(const ca::Authority& ca);

// The responder in `issuer`'s files when it is fit to use at `now`: issued by that issuer,
// holding the key beside it, valid for more than kOcspResponderRenewBefore. nullopt when it is
// absent or not fit (then renew_ocsp_responder); an error only for a file that cannot be read.
Result<std::optional<ca::OcspResponder>> load_ocsp_responder(const OcspIssuer& issuer,
                                                             UnixTime now);

// Issues a new responder certificate through the issuer's Signer, records it (kind other) and
// then replaces the files, key first. A certificate that could not be recorded is not used.
Result<ca::OcspResponder> renew_ocsp_responder(registry::Store& store, const OcspIssuer& issuer,
                                               const registry::Actor& actor);

// Which of `issuers` a request is about: the first whose name and key hashes a certificate ID
// of the request names; 0 (the current issuer) when none is named. One answer is signed by one
// responder, so IDs of another issuer in the same request are answered unknown; clients ask
// about one certificate at a time.
std::size_t ocsp_request_issuer(std::span<const OcspIssuer> issuers,
                                const ca::OcspRequest& request);

// The DER OCSPResponse to a parsed request: statuses from the registry for certificates of
// `issuer` (good, revoked with time and reason), unknown for anything else, signed by
// `responder`; internalError when the registry cannot answer.
std::string answer_ocsp(registry::Store& store, const OcspIssuer& issuer,
                        const ca::OcspResponder& responder, const ca::OcspRequest& request,
                        UnixTime now);

}  // namespace onboard::ops
