#include "ops/provisioning.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/encoding.h"
#include "core/ossl.h"
#include "core/time.h"
#include "ops/credentials.h"
#include "ops/operations.h"
#include "ops/views.h"
#include "registry/id_pattern.h"

namespace onboard::ops {
namespace {

using nlohmann::json;

// Between two batches of the grace sweep: long enough for a waiting writer to take the turn.
constexpr std::chrono::milliseconds kBatchPause{2};

// The request's fields once read: the CSR, checked, and the device to record.
struct Checked {
  ossl::Ptr<EVP_PKEY> public_key;
  registry::NewDevice device;
  // A renewal's: the CSR's DER and the proof as sent (nullopt: none), checked by renew_checked.
  std::string csr_der{};
  std::optional<std::string> proof{};
};

enum class Kind { enrolment, renewal };

// A refusal, or the checked request. Order: size, JSON shape, CSR parse, key, signature, CN.
// An enrolment may carry `metadata`, a renewal `proof`.
std::variant<Checked, ProvisionAnswer> check_request(const EnrollRequest& request,
                                                     Kind kind = Kind::enrolment) {
  const bool metadata_allowed = kind == Kind::enrolment;
  if (request.payload.size() > kMaxProvisionRequestBytes) {
    return refusal(ProvisionCode::payload_too_large,
                   "the request is over " + std::to_string(kMaxProvisionRequestBytes) + " bytes");
  }
  const json body = json::parse(request.payload, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return refusal(ProvisionCode::malformed_request, "the request is not a JSON object");
  for (const auto& [key, value] : body.items()) {
    if (key != "csr" && (key != "metadata" || !metadata_allowed) &&
        (key != "proof" || kind != Kind::renewal))
      return refusal(ProvisionCode::malformed_request, "unknown field '" + key + "'");
  }
  auto csr = body.find("csr");
  if (csr == body.end() || !csr->is_string())
    return refusal(ProvisionCode::malformed_request, "csr: a PEM certificate request is required");
  Checked out;
  out.device.id = request.client_id;
  if (auto metadata = body.find("metadata"); metadata != body.end() && !metadata->is_null()) {
    if (!metadata->is_object())
      return refusal(ProvisionCode::malformed_request, "metadata must be a JSON object");
    if (nested_deeper_than(*metadata, registry::kMaxMetadataDepth)) {
      return refusal(ProvisionCode::malformed_request,
                     "metadata is nested more than " + std::to_string(registry::kMaxMetadataDepth) +
                         " levels deep");
    }
    out.device.metadata = metadata->dump();
  }
  auto req = ca::csr_from_pem(csr->get<std::string>());
  if (!req.ok()) return refusal(ProvisionCode::invalid_csr, "csr: not a PEM certificate request");
  const EVP_PKEY* key = X509_REQ_get0_pubkey(req->get());
  if (key == nullptr) return refusal(ProvisionCode::invalid_csr, "csr: no readable public key");
  if (auto acceptable = ca::check_acceptable_key(key); !acceptable.ok())
    return refusal(ProvisionCode::weak_key, "csr: " + acceptable.error().message);
  if (X509_REQ_verify(req->get(), const_cast<EVP_PKEY*>(key)) != 1) {
    ossl::clear_errors();
    return refusal(ProvisionCode::invalid_csr, "csr: its signature does not match its key");
  }
  // The key and signature passed, so what check_device_csr can still refuse is the subject.
  auto checked = ca::check_device_csr(req->get());
  if (!checked.ok()) return refusal(ProvisionCode::cn_mismatch, "csr: " + checked.error().message);
  if (checked->device_id != request.client_id) {
    return refusal(ProvisionCode::cn_mismatch,
                   "csr: its CN is not the client id '" + request.client_id + "'");
  }
  if (auto problem = check_new_device(out.device); !problem.ok())
    return refusal(ProvisionCode::malformed_request, problem.error().message);
  out.public_key = std::move(checked->public_key);
  if (kind == Kind::renewal) {
    if (auto proof = body.find("proof"); proof != body.end() && !proof->is_null()) {
      if (!proof->is_string())
        return refusal(ProvisionCode::malformed_request, "proof must be a base64 string");
      out.proof = proof->get<std::string>();
    }
    unsigned char* der = nullptr;
    const int length = i2d_X509_REQ(req->get(), &der);
    if (length <= 0 || der == nullptr) {
      ossl::clear_errors();
      return refusal(ProvisionCode::invalid_csr, "csr: cannot be encoded as DER");
    }
    out.csr_der.assign(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
  }
  return out;
}

// The active device certificate of `device_id` whose key is `key`: what a retry of an enrolment
// that went through is answered with. nullopt when there is none (the id is someone else's).
Result<std::optional<std::string>> issued_before(registry::Store& store, std::string_view device_id,
                                                 const EVP_PKEY* key) {
  ONBOARD_TRY(auto certificates, store.certificates_of(device_id));
  for (const auto& c : certificates) {
    if (c.kind != registry::CertificateKind::device ||
        c.status != registry::CertificateStatus::active)
      continue;
    auto cert = ca::certificate_from_pem(c.pem);
    if (!cert.ok()) continue;
    if (EVP_PKEY_eq(X509_get0_pubkey(cert->get()), key) == 1) return std::optional(c.pem);
  }
  ossl::clear_errors();
  return std::optional<std::string>();
}

ProvisionCode code_of(registry::EnrollRefusal refusal) {
  switch (refusal) {
    case registry::EnrollRefusal::claim_revoked:
    case registry::EnrollRefusal::claim_unknown:
      return ProvisionCode::claim_revoked;
    case registry::EnrollRefusal::claim_expired:
      return ProvisionCode::claim_expired;
    case registry::EnrollRefusal::claim_used_up:
      return ProvisionCode::claim_used_up;
    case registry::EnrollRefusal::id_not_allowed:
      return ProvisionCode::id_not_allowed;
    case registry::EnrollRefusal::id_taken:
      return ProvisionCode::id_taken;
    case registry::EnrollRefusal::none:
      break;
  }
  return ProvisionCode::internal_error;
}

ProvisionAnswer enrolled(std::string device_id, std::string pem, const ca::Authority& ca,
                         bool repeated) {
  ProvisionAnswer answer;
  answer.device_id = std::move(device_id);
  answer.certificate_pem = std::move(pem);
  answer.ca_chain_pem = ca.chain_pem();
  answer.repeated = repeated;
  return answer;
}

ProvisionAnswer enroll_checked(registry::Store& store, const ca::Authority& ca,
                               const EnrollRequest& request, Checked& checked,
                               const registry::Actor& actor, const RecordEnrolment& record,
                               const std::function<void(const std::string&)>& log) {
  auto internal = [&](const Error& e) {
    if (log) log("enrolment of '" + request.client_id + "': " + e.message);
    return refusal(ProvisionCode::internal_error, "the signer failed; try again later");
  };
  // Every check that costs no signature comes first; the transaction checks them all again.
  auto claim = store.get_claim(request.claim);
  if (!claim.ok()) {
    if (claim.error().code == Errc::not_found)
      return refusal(ProvisionCode::claim_revoked, "the claim does not exist");
    return internal(claim.error());
  }
  if (claim->status == registry::ClaimStatus::revoked)
    return refusal(ProvisionCode::claim_revoked, "the claim was revoked");
  if (actor.now >= claim->expires_at)
    return refusal(ProvisionCode::claim_expired, "the claim has expired");
  auto pattern = registry::IdPattern::compile(claim->id_pattern);
  if (!pattern.ok()) return internal(pattern.error());
  if (!pattern->matches(request.client_id))
    return refusal(ProvisionCode::id_not_allowed, "the client id is not allowed by the claim");
  auto answer_existing = [&]() -> std::optional<ProvisionAnswer> {
    auto device = store.get_device(request.client_id);
    if (!device.ok()) {
      if (device.error().code == Errc::not_found) return std::nullopt;
      return internal(device.error());
    }
    auto before = issued_before(store, request.client_id, checked.public_key.get());
    if (!before.ok()) return internal(before.error());
    if (!*before)
      return refusal(ProvisionCode::id_taken, "the id '" + request.client_id + "' is taken");
    return enrolled(request.client_id, std::move(**before), ca, true);
  };
  if (auto existing = answer_existing()) return std::move(*existing);
  if (claim->quota_used >= claim->quota)
    return refusal(ProvisionCode::claim_used_up, "the claim's quota is spent");

  auto issued = issue_device_certificate(ca, request.client_id, checked.public_key.get(),
                                         kEnrolledCertificateDays);
  if (!issued.ok()) return internal(issued.error());
  registry::EnrollItem item{request.claim, std::move(checked.device),
                            new_certificate(issued->info, issued->pem), actor};
  auto outcome =
      record ? record(item) : store.enroll_device(item.claim, item.device, item.certificate, actor);
  if (!outcome.ok()) return internal(outcome.error());
  if (outcome->refusal == registry::EnrollRefusal::id_taken) {
    // Another request for this id got in first: the same key's retry is answered as one.
    if (auto existing = answer_existing()) return std::move(*existing);
  }
  if (outcome->refusal != registry::EnrollRefusal::none) {
    return refusal(code_of(outcome->refusal), std::string(registry::to_string(outcome->refusal)));
  }
  return enrolled(request.client_id, std::move(issued->pem), ca, false);
}

bool holds_key(const registry::Certificate& c, const EVP_PKEY* key) {
  auto cert = ca::certificate_from_pem(c.pem);
  if (!cert.ok()) {
    ossl::clear_errors();
    return false;
  }
  const bool same = EVP_PKEY_eq(X509_get0_pubkey(cert->get()), key) == 1;
  ossl::clear_errors();
  return same;
}

ProvisionAnswer renew_checked(registry::Store& store, const ca::Authority& ca,
                              const RenewRequest& request, Checked& checked,
                              const registry::Actor& actor, const BeforeEnroll& before_record,
                              const std::function<void(const std::string&)>& log) {
  auto internal = [&](const Error& e) {
    if (log) log("renewal of '" + request.device_id + "': " + e.message);
    return refusal(ProvisionCode::internal_error, "the signer failed; try again later");
  };
  auto not_allowed = [](registry::RenewRefusal why) {
    return refusal(ProvisionCode::renewal_not_allowed, std::string(registry::to_string(why)));
  };
  const EVP_PKEY* key = checked.public_key.get();
  const registry::SameKey same_key = [key](const registry::Certificate& c) {
    return holds_key(c, key);
  };
  // Every check that costs no signature comes first (a retry is answered without one); the
  // transaction checks them all again.
  auto device = store.get_device(request.device_id);
  if (!device.ok()) {
    if (device.error().code == Errc::not_found)
      return not_allowed(registry::RenewRefusal::device_unknown);
    return internal(device.error());
  }
  if (device->status != registry::DeviceStatus::active)
    return not_allowed(registry::RenewRefusal::device_not_active);
  auto certificates = store.certificates_of(request.device_id);
  if (!certificates.ok()) return internal(certificates.error());
  const registry::Certificate* presented = nullptr;
  for (const auto& c : *certificates) {
    if (c.sha256_fingerprint == request.presented_sha256) presented = &c;
  }
  if (presented == nullptr || presented->kind != registry::CertificateKind::device ||
      presented->status != registry::CertificateStatus::active ||
      actor.now < presented->not_before || actor.now >= presented->not_after)
    return not_allowed(registry::RenewRefusal::certificate_not_current);
  // The device proves it holds the presented certificate's key, as the registry has the
  // certificate: the broker's word names the certificate, it does not stand for the device.
  if (!checked.proof) {
    return refusal(ProvisionCode::proof_invalid,
                   "proof: a signature by the current certificate's key over the CSR's DER is "
                   "required");
  }
  {
    auto presented_cert = ca::certificate_from_pem(presented->pem);
    if (!presented_cert.ok()) return internal(presented_cert.error());
    auto signature = base64_decode(*checked.proof);
    if (!signature || signature->empty())
      return refusal(ProvisionCode::proof_invalid, "proof: not standard base64");
    if (!renewal_proof_valid(X509_get0_pubkey(presented_cert->get()), checked.csr_der,
                             *signature)) {
      return refusal(ProvisionCode::proof_invalid,
                     "proof: not a signature over the CSR's DER by the key of the certificate "
                     "connected with");
    }
  }
  const UnixTime presented_issued = presented->not_before + kIssueBackdate;
  std::size_t others_active = 0;
  for (const auto& c : *certificates) {
    if (&c == presented) continue;
    if (c.kind != registry::CertificateKind::device ||
        c.status != registry::CertificateStatus::active)
      continue;
    ++others_active;
    // A retry is the same renewal asked again: an active certificate recorded as renewing the
    // presented one (certificates.renews) with the CSR's key, the rule renew_device applies in
    // its transaction. Any later certificate with that key would not do: a renewal of another
    // certificate of the device (a sibling the device asked for from the one before) or one an
    // operator issued for the key is not what this request asked for; answering with it would
    // hand the device a certificate whose connect supersedes what the registry links it to, not
    // the presented one, and mark as a retry (nothing recorded) what was a new request. The
    // store would answer such a request otherwise (a new certificate, or a refusal), so the
    // check that saves the signature must agree with it.
    if (c.renews == presented->sha256_fingerprint && same_key(c)) {
      auto answer = enrolled(request.device_id, c.pem, ca, true);
      answer.certificate_sha256 = c.sha256_fingerprint;
      return answer;
    }
  }
  // A certificate's not_before never changes: the transaction need not check this again.
  if (request.min_age > 0 && actor.now - presented_issued < request.min_age) {
    return refusal(ProvisionCode::renewal_too_soon,
                   "the certificate connected with is too new to renew; renew after " +
                       iso_time(presented_issued + request.min_age));
  }
  if (others_active >= registry::kMaxPendingRenewals)
    return not_allowed(registry::RenewRefusal::too_many_pending);

  auto issued = issue_device_certificate(ca, request.device_id, key, kEnrolledCertificateDays);
  if (!issued.ok()) return internal(issued.error());
  if (before_record) before_record();
  auto outcome = store.renew_device(request.device_id, request.presented_sha256,
                                    new_certificate(issued->info, issued->pem), same_key, actor);
  if (!outcome.ok()) return internal(outcome.error());
  if (outcome->refusal != registry::RenewRefusal::none) return not_allowed(outcome->refusal);
  // A retry that raced this one and got in first: its certificate is the answer.
  auto answer = outcome->repeated ? enrolled(request.device_id, outcome->certificate.pem, ca, true)
                                  : enrolled(request.device_id, std::move(issued->pem), ca, false);
  answer.certificate_sha256 = outcome->certificate.sha256_fingerprint;
  return answer;
}

}  // namespace

std::string_view to_string(ProvisionCode code) noexcept {
  switch (code) {
    case ProvisionCode::malformed_request:
      return "malformed_request";
    case ProvisionCode::payload_too_large:
      return "payload_too_large";
    case ProvisionCode::invalid_csr:
      return "invalid_csr";
    case ProvisionCode::cn_mismatch:
      return "cn_mismatch";
    case ProvisionCode::weak_key:
      return "weak_key";
    case ProvisionCode::id_not_allowed:
      return "id_not_allowed";
    case ProvisionCode::id_taken:
      return "id_taken";
    case ProvisionCode::claim_expired:
      return "claim_expired";
    case ProvisionCode::claim_revoked:
      return "claim_revoked";
    case ProvisionCode::claim_used_up:
      return "claim_used_up";
    case ProvisionCode::rate_limited:
      return "rate_limited";
    case ProvisionCode::signer_unavailable:
      return "signer_unavailable";
    case ProvisionCode::internal_error:
      return "internal_error";
    case ProvisionCode::renewal_not_allowed:
      return "renewal_not_allowed";
    case ProvisionCode::renewal_too_soon:
      return "renewal_too_soon";
    case ProvisionCode::proof_invalid:
      return "proof_invalid";
  }
  return "internal_error";
}

bool renewal_proof_valid(const EVP_PKEY* key, std::string_view csr_der,
                         std::string_view signature) {
  if (key == nullptr || csr_der.empty() || signature.empty()) {
    // No key: the caller's X509_get0_pubkey failed and left its reason on this thread's queue.
    ossl::clear_errors();
    return false;
  }
  ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  const EVP_MD* digest = EVP_PKEY_is_a(key, "ED25519") == 1 ? nullptr : EVP_sha256();
  const bool valid =
      ctx &&
      EVP_DigestVerifyInit(ctx.get(), nullptr, digest, nullptr, const_cast<EVP_PKEY*>(key)) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(csr_der.data()),
                       csr_der.size()) == 1;
  ossl::clear_errors();
  return valid;
}

bool retryable(ProvisionCode code) noexcept {
  return code == ProvisionCode::rate_limited || code == ProvisionCode::signer_unavailable ||
         code == ProvisionCode::internal_error;
}

ProvisionAnswer refusal(ProvisionCode code, std::string message) {
  ProvisionAnswer answer;
  answer.refused = code;
  answer.message = std::move(message);
  return answer;
}

std::string_view answer_topic_suffix(const ProvisionAnswer& answer) {
  return answer.refused ? "rejected" : "accepted";
}

std::string answer_payload(const ProvisionAnswer& answer) {
  if (answer.refused) {
    return json{{"code", to_string(*answer.refused)},
                {"message", answer.message},
                {"retryable", retryable(*answer.refused)}}
        .dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return json{{"device_id", answer.device_id},
              {"certificate", answer.certificate_pem},
              {"ca_chain", answer.ca_chain_pem}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

ProvisionAnswer enroll(registry::Store& store, const ca::Authority& ca,
                       const EnrollRequest& request, const registry::Actor& actor,
                       const RecordEnrolment& record,
                       const std::function<void(const std::string&)>& log) {
  try {
    auto checked = check_request(request);
    if (checked.index() == 1) return std::get<1>(std::move(checked));
    return enroll_checked(store, ca, request, std::get<0>(checked), actor, record, log);
  } catch (const std::exception& e) {
    if (log) log("enrolment of '" + request.client_id + "': " + e.what());
  } catch (...) {
    if (log) log("enrolment of '" + request.client_id + "': unknown exception");
  }
  return refusal(ProvisionCode::internal_error, "the signer failed; try again later");
}

ProvisionAnswer renew(registry::Store& store, const ca::Authority& ca, const RenewRequest& request,
                      const registry::Actor& actor, const BeforeEnroll& before_record,
                      const std::function<void(const std::string&)>& log) {
  try {
    auto checked =
        check_request(EnrollRequest{{}, request.device_id, request.payload}, Kind::renewal);
    if (checked.index() == 1) return std::get<1>(std::move(checked));
    return renew_checked(store, ca, request, std::get<0>(checked), actor, before_record, log);
  } catch (const std::exception& e) {
    if (log) log("renewal of '" + request.device_id + "': " + e.what());
  } catch (...) {
    if (log) log("renewal of '" + request.device_id + "': unknown exception");
  }
  return refusal(ProvisionCode::internal_error, "the signer failed; try again later");
}

namespace {

// Whether the CRL file lists every revoked certificate of the device it should (none, or no such
// device: true, without reading the file).
Result<bool> crl_lists_device(registry::Store& store, const ca::Authority& ca,
                              const std::filesystem::path& crl_path, std::string_view device_id) {
  auto certificates = store.certificates_of(device_id);
  if (!certificates.ok()) {
    if (certificates.error().code == Errc::not_found) return true;  // no such device
    return certificates.error();
  }
  const bool any_revoked =
      std::any_of(certificates->begin(), certificates->end(), [](const registry::Certificate& c) {
        return c.status == registry::CertificateStatus::revoked;
      });
  if (!any_revoked) return true;
  return crl_lists_revoked_of(store, ca, crl_path, device_id);
}

}  // namespace

Result<bool> supersede_due(registry::Store& store, const ca::Authority& ca,
                           const std::filesystem::path& crl_path, std::string_view device_id,
                           std::string_view current_sha256) {
  ONBOARD_TRY(const auto replaced, store.predecessors_of(device_id, current_sha256));
  if (!replaced.empty()) return true;
  ONBOARD_TRY(const bool listed, crl_lists_device(store, ca, crl_path, device_id));
  return !listed;
}

Result<Superseded> supersede(registry::Store& store, const ca::Authority& ca,
                             const std::filesystem::path& crl_path, std::string_view device_id,
                             std::string_view current_sha256, const registry::Actor& actor) {
  Superseded out;
  ONBOARD_TRY(out.serials, store.supersede_predecessors(device_id, current_sha256, actor));
  if (out.serials.empty()) {
    // Asked again after a supersession whose CRL rewrite failed (the plugin asks again at the
    // next connect): the rerun finishes it.
    auto listed = crl_lists_device(store, ca, crl_path, device_id);
    if (!listed.ok() || *listed) return out;
  }
  ONBOARD_TRY(out.crl_number,
              rewrite_crl(store, ca, crl_path,
                          "superseded the certificates of " + std::string(device_id), actor));
  return out;
}

Result<std::vector<registry::DueRenewal>> renewals_due(registry::Store& store, UnixTime grace,
                                                       UnixTime now) {
  return store.renewals_due(now - grace - kIssueBackdate);
}

Result<Superseded> supersede_expired(registry::Store& store, const ca::Authority& ca,
                                     const std::filesystem::path& crl_path,
                                     const std::vector<registry::DueRenewal>& due, UnixTime grace,
                                     const registry::Actor& actor, const WriteTurn& turn,
                                     std::size_t batch) {
  Superseded out;
  if (due.empty()) return out;
  batch = std::clamp<std::size_t>(batch, 1, registry::kSupersedeBatch);
  auto take_turn = [&turn] { return turn ? turn() : std::unique_lock<std::mutex>(); };
  std::vector<registry::DueRenewal> sorted = due;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.device_id < b.device_id; });
  for (std::size_t at = 0; at < sorted.size();) {
    // Whole devices while they fit (a device's candidates audited together), at least one.
    std::size_t end = at;
    while (end < sorted.size()) {
      std::size_t next = end;
      while (next < sorted.size() && sorted[next].device_id == sorted[end].device_id) ++next;
      if (end > at && next - at > batch) break;
      end = next;
    }
    end = std::min(end, at + batch);
    const std::vector<registry::DueRenewal> part(sorted.begin() + static_cast<std::ptrdiff_t>(at),
                                                 sorted.begin() + static_cast<std::ptrdiff_t>(end));
    {
      const auto held = take_turn();
      auto serials = store.supersede_renewed(part, actor.now - grace - kIssueBackdate, actor);
      if (serials.ok()) {
        out.serials.insert(out.serials.end(), serials->begin(), serials->end());
      } else {
        if (out.failed_batches++ == 0) out.first_failure = serials.error();
      }
    }
    at = end;
    // The write turn is a plain mutex, not a fair one: without a pause this thread could take it
    // again before a woken enrolment or renewal runs, and another process's writer (whose SQLite
    // busy handler sleeps in milliseconds) would hardly ever get in between the batches.
    if (at < sorted.size()) std::this_thread::sleep_for(kBatchPause);
  }
  if (out.serials.empty()) return out;
  const auto held = take_turn();
  ONBOARD_TRY(out.crl_number,
              rewrite_crl(store, ca, crl_path,
                          "superseded " + std::to_string(out.serials.size()) +
                              " certificate(s) whose renewal's grace period is over",
                          actor));
  return out;
}

}  // namespace onboard::ops
