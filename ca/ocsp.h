// OCSP (RFC 6960) as pure functions: parsing a request from outside, matching its certificate
// IDs against the issuing CA, and building the signed answer from statuses the caller looked up.
// The responder's own certificate (a delegated responder: extended key usage OCSPSigning and the
// id-pkix-ocsp-nocheck extension, issued by the issuing CA through its Signer) is made here too;
// where it is kept and when it is renewed is ops/ocsp.h's business.
#pragma once

#include <openssl/ocsp.h>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ca/authority.h"
#include "core/error.h"
#include "core/ossl.h"
#include "core/revocation.h"
#include "core/time.h"

namespace onboard::ossl {
template <>
struct Free<OCSP_REQUEST> {
  void operator()(OCSP_REQUEST* p) const noexcept { OCSP_REQUEST_free(p); }
};
template <>
struct Free<OCSP_RESPONSE> {
  void operator()(OCSP_RESPONSE* p) const noexcept { OCSP_RESPONSE_free(p); }
};
template <>
struct Free<OCSP_BASICRESP> {
  void operator()(OCSP_BASICRESP* p) const noexcept { OCSP_BASICRESP_free(p); }
};
template <>
struct Free<OCSP_CERTID> {
  void operator()(OCSP_CERTID* p) const noexcept { OCSP_CERTID_free(p); }
};
}  // namespace onboard::ossl

namespace onboard::ca {

// A real request is about 100 bytes (one certificate ID and a nonce); a signed one with its
// certificates a few KiB. Anything larger is refused before it is parsed.
inline constexpr std::size_t kMaxOcspRequestBytes = 16 * 1024;
// Certificate IDs in one request; more is malformed (each costs a registry lookup).
inline constexpr std::size_t kMaxOcspRequestIds = 16;

// One certificate ID of a request. `hash` is nullptr when the request names a hash this responder
// does not compute (then the certificate is unknown); `serial_hex` is empty for a serial no
// certificate of ours can have (zero, negative, longer than 20 bytes).
struct OcspCertId {
  const EVP_MD* hash = nullptr;
  std::string issuer_name_hash;  // raw bytes
  std::string issuer_key_hash;   // raw bytes
  std::string serial_hex;        // upper-case, as core/x509.h's serial_hex() writes it
};

struct OcspRequest {
  ossl::Ptr<OCSP_REQUEST> request;  // kept for its nonce, which the answer echoes
  std::vector<OcspCertId> ids;
};

// Parses a DER OCSPRequest. Errc::invalid_input (the caller answers malformedRequest) when it is
// empty, larger than kMaxOcspRequestBytes, not DER of an OCSPRequest, followed by other bytes,
// names no certificate or more than kMaxOcspRequestIds.
Result<OcspRequest> parse_ocsp_request(std::string_view der);

// The DER of a GET request's path segment (RFC 6960 appendix A.1: base64 of the DER, URL-encoded;
// httplib has already undone the URL encoding). Standard base64 with or without '=' padding and
// base64url are both accepted, as clients differ; nullopt when it is not base64 or decodes to more
// than kMaxOcspRequestBytes.
std::optional<std::string> decode_ocsp_get_path(std::string_view text);

// Whether `id` names a certificate issued by `issuer`: its issuer name and key hashes are those
// of `issuer` under the ID's hash algorithm.
bool ocsp_id_matches_issuer(const OcspCertId& id, const X509* issuer);

enum class OcspStatus { good, revoked, unknown };
struct OcspAnswer {
  OcspStatus status = OcspStatus::unknown;
  UnixTime revoked_at = 0;
  RevocationReason reason = RevocationReason::unspecified;
};

// The delegated responder's certificate and key.
struct OcspResponder {
  ossl::Ptr<X509> cert;
  ossl::Ptr<EVP_PKEY> key;
};

// A successful BasicOCSPResponse (DER), one SingleResponse per ID of `request` with `answers`
// (same order and size), thisUpdate and nextUpdate as given, the request's nonce echoed when it
// had one, signed by the responder (SHA-256 or the key's own digest) with its certificate
// included so that a client can check that the CA delegated to it.
Result<std::string> build_ocsp_response(const OcspRequest& request,
                                        std::span<const OcspAnswer> answers,
                                        const OcspResponder& responder, UnixTime this_update,
                                        UnixTime next_update);

// An unsigned error response (RFC 6960 4.2.1): malformedRequest, internalError, tryLater.
enum class OcspError { malformed_request = 1, internal_error = 2, try_later = 3 };
std::string ocsp_error_response(OcspError error);

// Issues a new responder certificate for the issuing CA `issuer` through its `signer` (the
// current issuing CA's or a kept earlier one's, Authority::load_signing_key()): a fresh P-256
// key, CN "<issuer CN> OCSP Responder", valid from `now` for `days` (never past the issuer).
Result<OcspResponder> issue_ocsp_responder(const X509* issuer, const Signer& signer, UnixTime now,
                                           int days);

}  // namespace onboard::ca
