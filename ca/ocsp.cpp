#include "ca/ocsp.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

#include "ca/certificate.h"
#include "ca/keys.h"
#include "core/x509.h"

namespace onboard::ca {
namespace {

std::string bytes_of(const ASN1_STRING* s) {
  if (s == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

// The hashes a CertID may use here. SHA-1 is what most clients send (OpenSSL, GnuTLS); it only
// names the issuer, nothing is signed with it.
const EVP_MD* cert_id_hash(const ASN1_OBJECT* alg) {
  switch (OBJ_obj2nid(alg)) {
    case NID_sha1:
      return EVP_sha1();
    case NID_sha256:
      return EVP_sha256();
    case NID_sha384:
      return EVP_sha384();
    case NID_sha512:
      return EVP_sha512();
    default:
      return nullptr;
  }
}

// Upper-case hex of a positive serial of at most 20 bytes (RFC 5280 4.1.2.2), in the form the
// registry stores; empty otherwise.
std::string serial_text(const ASN1_INTEGER* serial) {
  if (serial == nullptr || ASN1_STRING_type(serial) != V_ASN1_INTEGER ||
      ASN1_STRING_length(serial) < 1 || ASN1_STRING_length(serial) > 20) {
    return {};
  }
  ossl::Ptr<BIGNUM> bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn || BN_is_zero(bn.get())) {
    ossl::clear_errors();
    return {};
  }
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) {
    ossl::clear_errors();
    return {};
  }
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Whether `request` encodes to exactly `der`.
bool encodes_back(const OCSP_REQUEST* request, std::string_view der) {
  unsigned char* encoded = nullptr;
  const int len = i2d_OCSP_REQUEST(request, &encoded);
  const bool same = len > 0 && static_cast<std::size_t>(len) == der.size() &&
                    std::memcmp(encoded, der.data(), der.size()) == 0;
  OPENSSL_free(encoded);
  return same;
}

}  // namespace

Result<OcspRequest> parse_ocsp_request(std::string_view der) {
  if (der.empty()) return make_error(Errc::invalid_input, "empty OCSP request");
  if (der.size() > kMaxOcspRequestBytes)
    return make_error(Errc::invalid_input, "OCSP request larger than " +
                                               std::to_string(kMaxOcspRequestBytes) + " bytes");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  const auto* end = p + der.size();
  OcspRequest parsed;
  parsed.request.reset(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size())));
  if (!parsed.request) {
    ossl::clear_errors();
    return make_error(Errc::invalid_input, "not a DER OCSP request");
  }
  if (p != end) return make_error(Errc::invalid_input, "bytes after the OCSP request");
  // The answer copies the request's certificate IDs and nonce, which re-encodes them. OpenSSL
  // reads some encodings it cannot write back (BER lengths, an algorithm's parameters of a
  // universal tag 0), and then the answer could not be built: a request is accepted only when it
  // encodes back to exactly the bytes received, as RFC 6960's DER requires.
  if (!encodes_back(parsed.request.get(), der)) {
    ossl::clear_errors();
    return make_error(Errc::invalid_input, "the OCSP request is not in DER");
  }
  const int count = OCSP_request_onereq_count(parsed.request.get());
  if (count < 1) return make_error(Errc::invalid_input, "the OCSP request names no certificate");
  if (static_cast<std::size_t>(count) > kMaxOcspRequestIds)
    return make_error(
        Errc::invalid_input,
        "the OCSP request names more than " + std::to_string(kMaxOcspRequestIds) + " certificates");
  for (int i = 0; i < count; ++i) {
    OCSP_CERTID* cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(parsed.request.get(), i));
    ASN1_OCTET_STRING* name_hash = nullptr;
    ASN1_OBJECT* alg = nullptr;
    ASN1_OCTET_STRING* key_hash = nullptr;
    ASN1_INTEGER* serial = nullptr;
    if (cid == nullptr || OCSP_id_get0_info(&name_hash, &alg, &key_hash, &serial, cid) != 1) {
      ossl::clear_errors();
      return make_error(Errc::invalid_input, "an OCSP certificate ID cannot be read");
    }
    OcspCertId id;
    id.hash = cert_id_hash(alg);
    id.issuer_name_hash = bytes_of(name_hash);
    id.issuer_key_hash = bytes_of(key_hash);
    id.serial_hex = serial_text(serial);
    parsed.ids.push_back(std::move(id));
  }
  return parsed;
}

std::optional<std::string> decode_ocsp_get_path(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.empty() || text.size() % 4 == 1 || text.size() / 4 * 3 > kMaxOcspRequestBytes)
    return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  unsigned buffer = 0;
  int bits = 0;
  for (char c : text) {
    const int v = base64_value(c);
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

bool ocsp_id_matches_issuer(const OcspCertId& id, const X509* issuer) {
  if (id.hash == nullptr || issuer == nullptr) return false;
  unsigned char name_hash[EVP_MAX_MD_SIZE];
  unsigned char key_hash[EVP_MAX_MD_SIZE];
  unsigned name_len = 0;
  unsigned key_len = 0;
  // RFC 6960 4.1.1: the hash of the issuer's DER-encoded name, and of the value (without tag,
  // length and unused-bits octet) of the BIT STRING subjectPublicKey.
  const ASN1_BIT_STRING* key = X509_get0_pubkey_bitstr(issuer);
  if (X509_NAME_digest(X509_get_subject_name(issuer), id.hash, name_hash, &name_len) != 1 ||
      key == nullptr ||
      EVP_Digest(ASN1_STRING_get0_data(key), static_cast<std::size_t>(ASN1_STRING_length(key)),
                 key_hash, &key_len, id.hash, nullptr) != 1) {
    ossl::clear_errors();
    return false;
  }
  return id.issuer_name_hash == std::string_view(reinterpret_cast<char*>(name_hash), name_len) &&
         id.issuer_key_hash == std::string_view(reinterpret_cast<char*>(key_hash), key_len);
}

Result<std::string> build_ocsp_response(const OcspRequest& request,
                                        std::span<const OcspAnswer> answers,
                                        const OcspResponder& responder, UnixTime this_update,
                                        UnixTime next_update) {
  if (!request.request || answers.size() != request.ids.size() ||
      static_cast<int>(answers.size()) != OCSP_request_onereq_count(request.request.get())) {
    return make_error(Errc::internal, "one OCSP answer per certificate ID");
  }
  if (next_update <= this_update)
    return make_error(Errc::internal, "OCSP nextUpdate must come after thisUpdate");
  ossl::Ptr<OCSP_BASICRESP> basic(OCSP_BASICRESP_new());
  ossl::Ptr<ASN1_TIME> this_time(ASN1_TIME_set(nullptr, static_cast<time_t>(this_update)));
  ossl::Ptr<ASN1_TIME> next_time(ASN1_TIME_set(nullptr, static_cast<time_t>(next_update)));
  if (!basic || !this_time || !next_time) return ossl::error("cannot build the OCSP response");
  for (std::size_t i = 0; i < answers.size(); ++i) {
    // The SingleResponse names the certificate exactly as the request did.
    OCSP_CERTID* cid =
        OCSP_onereq_get0_id(OCSP_request_onereq_get0(request.request.get(), static_cast<int>(i)));
    const auto& answer = answers[i];
    int status = V_OCSP_CERTSTATUS_UNKNOWN;
    int reason = -1;  // none
    ossl::Ptr<ASN1_TIME> revoked_time;
    if (answer.status == OcspStatus::good) {
      status = V_OCSP_CERTSTATUS_GOOD;
    } else if (answer.status == OcspStatus::revoked) {
      status = V_OCSP_CERTSTATUS_REVOKED;
      revoked_time.reset(ASN1_TIME_set(nullptr, static_cast<time_t>(answer.revoked_at)));
      if (!revoked_time) return ossl::error("cannot set the revocation time");
      // As in the CRL (RFC 5280 5.3.1): no reason rather than 'unspecified'.
      if (answer.reason != RevocationReason::unspecified) reason = static_cast<int>(answer.reason);
    }
    if (OCSP_basic_add1_status(basic.get(), cid, status, reason, revoked_time.get(),
                               this_time.get(), next_time.get()) == nullptr) {
      return ossl::error("cannot add an OCSP single response");
    }
  }
  // Echoes the nonce extension as it came (RFC 8954); a request without one gets none.
  if (OCSP_REQUEST_get_ext_by_NID(request.request.get(), NID_id_pkix_OCSP_Nonce, -1) >= 0 &&
      OCSP_copy_nonce(basic.get(), request.request.get()) != 1) {
    return ossl::error("cannot echo the OCSP nonce");
  }
  const EVP_MD* digest = signing_digest(responder.key.get());
  // The responder's certificate goes in the response: a client trusts it because the CA issued
  // it with OCSPSigning, and needs it to check the signature.
  if (OCSP_basic_sign(basic.get(), responder.cert.get(), responder.key.get(), digest, nullptr, 0) !=
      1) {
    return ossl::error("cannot sign the OCSP response");
  }
  ossl::Ptr<OCSP_RESPONSE> response(
      OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get()));
  if (!response) return ossl::error("cannot build the OCSP response");
  unsigned char* der = nullptr;
  const int len = i2d_OCSP_RESPONSE(response.get(), &der);
  if (len <= 0) return ossl::error("cannot encode the OCSP response");
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string ocsp_error_response(OcspError error) {
  // responseStatus only, no responseBytes: SEQUENCE { ENUMERATED status }.
  const char der[] = {0x30, 0x03, 0x0a, 0x01, static_cast<char>(error)};
  return std::string(der, sizeof der);
}

Result<OcspResponder> issue_ocsp_responder(const X509* issuer, const Signer& signer, UnixTime now,
                                           int days) {
  if (days < 1) return make_error(Errc::invalid_input, "responder validity must be at least a day");
  ONBOARD_TRY(auto key, generate_key(KeyAlg::p256));
  CertificateRequest request;
  request.profile = Profile::ocsp_responder;
  const std::string issuer_cn = subject_common_name(issuer);
  request.common_name = (issuer_cn.empty() ? std::string("CA") : issuer_cn) + " OCSP Responder";
  if (request.common_name.size() > 64) request.common_name = "OCSP Responder";
  request.public_key = key.get();
  request.not_before = now - 300;  // clock skew, as for every certificate the CA issues
  request.not_after = now + static_cast<UnixTime>(days) * 86400;
  if (auto issuer_end = to_unix_time(X509_get0_notAfter(issuer)))
    request.not_after = std::min(request.not_after, *issuer_end);
  ONBOARD_TRY(auto cert, issue_certificate(request, issuer, signer));
  return OcspResponder{std::move(cert), std::move(key)};
}

}  // namespace onboard::ca
