#include "ops/ocsp.h"

#include <openssl/x509.h>

#include <algorithm>
#include <system_error>
#include <vector>

#include "ca/certificate.h"
#include "ca/keys.h"
#include "core/files.h"
#include "core/x509.h"
#include "ops/operations.h"

namespace onboard::ops {
namespace {

// Whether `responder` is one `issuer` made, with time to go at `now`.
bool fit_responder(const X509* issuer, const ca::OcspResponder& responder, UnixTime now) {
  const auto not_after = to_unix_time(X509_get0_notAfter(responder.cert.get()));
  const auto not_before = to_unix_time(X509_get0_notBefore(responder.cert.get()));
  const bool fit =
      not_after && not_before && *not_before <= now &&
      *not_after - now > kOcspResponderRenewBefore &&
      X509_check_issued(const_cast<X509*>(issuer), responder.cert.get()) == X509_V_OK &&
      X509_verify(responder.cert.get(), X509_get0_pubkey(issuer)) == 1 &&
      X509_check_private_key(responder.cert.get(), responder.key.get()) == 1;
  ossl::clear_errors();
  return fit;
}

}  // namespace

std::vector<OcspIssuer> ocsp_issuers(const ca::Authority& ca) {
  const auto& dir = ca.paths().dir;
  std::vector<OcspIssuer> issuers{{ca.issuer(), ca.signer(), dir / "ocsp.crt", dir / "ocsp.key"}};
  for (const auto& kept : ca.retired()) {
    const std::string serial = serial_hex(kept.cert.get());
    issuers.push_back({kept.cert.get(), kept.signer.get(), dir / ("ocsp-" + serial + ".crt"),
                       dir / ("ocsp-" + serial + ".key")});
  }
  return issuers;
}

Result<std::optional<ca::OcspResponder>> load_ocsp_responder(const OcspIssuer& issuer,
                                                             UnixTime now) {
  std::error_code ec;
  if (!std::filesystem::exists(issuer.responder_cert, ec) ||
      !std::filesystem::exists(issuer.responder_key, ec))
    return std::optional<ca::OcspResponder>();
  ONBOARD_TRY(std::string cert_pem, read_file(issuer.responder_cert, 1 << 20));
  ONBOARD_TRY(std::string key_pem, read_file(issuer.responder_key, 1 << 20));
  auto cert = ca::certificate_from_pem(cert_pem);
  auto key = ca::private_key_from_pem(key_pem);
  std::fill(key_pem.begin(), key_pem.end(), '\0');
  if (!cert.ok() || !key.ok()) return std::optional<ca::OcspResponder>();  // made again
  ca::OcspResponder responder{std::move(cert).value(), std::move(key).value()};
  if (!fit_responder(issuer.cert, responder, now)) return std::optional<ca::OcspResponder>();
  return std::optional<ca::OcspResponder>(std::move(responder));
}

Result<ca::OcspResponder> renew_ocsp_responder(registry::Store& store, const OcspIssuer& issuer,
                                               const registry::Actor& actor) {
  if (issuer.signer == nullptr)
    return make_error(Errc::internal, "the issuing CA's signing key is not loaded");
  ONBOARD_TRY(auto responder,
              ca::issue_ocsp_responder(issuer.cert, *issuer.signer, actor.now, kOcspResponderDays));
  X509_up_ref(responder.cert.get());
  auto issued = ca::make_issued(ossl::Ptr<X509>(responder.cert.get()));
  ONBOARD_TRY(auto recorded, record_issued(store, registry::CertificateKind::other, issued, actor));
  (void)recorded;
  ONBOARD_TRY(Secret key_pem, ca::private_key_to_pem(responder.key.get()));
  // Key first: a reader that finds the new certificate finds its key (a reader that finds the
  // new key beside the old certificate sees a mismatch and renews once more).
  ONBOARD_CHECK(write_file_atomic(issuer.responder_key, key_pem.view(), 0600, Overwrite::replace));
  ONBOARD_CHECK(write_file_atomic(issuer.responder_cert, issued.pem, 0644, Overwrite::replace));
  return responder;
}

std::size_t ocsp_request_issuer(std::span<const OcspIssuer> issuers,
                                const ca::OcspRequest& request) {
  for (const auto& id : request.ids) {
    for (std::size_t i = 0; i < issuers.size(); ++i) {
      if (ca::ocsp_id_matches_issuer(id, issuers[i].cert)) return i;
    }
  }
  return 0;
}

// Decision per certificate ID, in this order:
//   1. names an issuer other than `issuer` (name or key hash), or an unknown hash: unknown
//   2. a serial no certificate can have: unknown
//   3. the registry has no certificate of that serial from `issuer`: unknown
//   4. the registry says revoked: revoked, with its time and reason
//   5. otherwise: good (an expired certificate too, RFC 6960 2.2)
// A registry that cannot answer makes the whole answer internalError, never "good".
std::string answer_ocsp(registry::Store& store, const OcspIssuer& issuer,
                        const ca::OcspResponder& responder, const ca::OcspRequest& request,
                        UnixTime now) {
  const std::string issuer_name = ca::describe_certificate(issuer.cert).subject;
  std::vector<ca::OcspAnswer> answers;
  for (const auto& id : request.ids) {
    ca::OcspAnswer answer;
    if (ca::ocsp_id_matches_issuer(id, issuer.cert) && !id.serial_hex.empty()) {
      auto found = store.find_certificate_by_serial(id.serial_hex);
      if (found.ok()) {
        if (found->issuer == issuer_name) {
          if (found->status == registry::CertificateStatus::revoked) {
            answer.status = ca::OcspStatus::revoked;
            answer.revoked_at = found->revoked_at.value_or(0);
            answer.reason = found->revocation_reason.value_or(RevocationReason::unspecified);
          } else {
            answer.status = ca::OcspStatus::good;
          }
        }
      } else if (found.error().code != Errc::not_found) {
        return ca::ocsp_error_response(ca::OcspError::internal_error);
      }
    }
    answers.push_back(answer);
  }
  auto response =
      ca::build_ocsp_response(request, answers, responder, now, now + kOcspResponseValidity);
  if (!response.ok()) return ca::ocsp_error_response(ca::OcspError::internal_error);
  return std::move(response).value();
}

}  // namespace onboard::ops
