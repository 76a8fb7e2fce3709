// ops/provisioning.h: ops::enroll, which the signer runs on what a device published to
// `$provision/<client id>/csr` (docs/provisioning.md), on a SQLite registry and a P-256 CA made
// once in a temporary directory, with one claim of the largest quota and any id. The input's first
// line is the client id, the rest the payload. Invariants: no exception; never `internal_error`
// (the registry and the CA work, so an internal error on bad input is a bug); the payload
// published back is a JSON object of the answer's shape on the topic its outcome names; a refusal
// records nothing and spends no unit; an enrolment answers with a certificate for the client id
// that the registry holds under that device, and spends exactly one unit unless it repeats an
// earlier answer. The same payload then goes through ops::renew as the device's renewal
// (check_renewal): a renewal is accepted only with a proof that verifies with the key of the
// certificate presented (checked by the target itself, with OpenSSL), and the fuzzer holds
// no device's key, so for the fixture's own device `fuzz-device` (whose key the target holds) a
// payload without `proof` is also renewed with the proof the target makes for its CSR: accepted,
// its retry must be the same certificate.
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "ca/authority.h"
#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/ossl.h"
#include "core/time.h"
#include "core/x509.h"
#include "fuzz/fuzz_scratch.h"
#include "ops/claims.h"
#include "ops/provisioning.h"
#include "registry/sqlite_store.h"

namespace {

using namespace onboard;
using nlohmann::json;

constexpr const char* kClaim = "fuzz-claim";
// A device the fixture enrolls with a key it keeps, so that renewals with a valid proof are
// reachable.
constexpr const char* kDevice = "fuzz-device";

using fuzz::fail;
using fuzz::need;

struct Fixture {
  std::unique_ptr<registry::Store> store;
  std::unique_ptr<ca::Authority> ca;
  registry::Actor actor{"provision:broker", 0};
  ossl::Ptr<EVP_PKEY> device_key;
};

Fixture& fixture() {
  static Fixture made = [] {
    const std::filesystem::path& dir = fuzz::scratch_directory();
    Fixture f;
    f.actor.now = unix_now();
    f.store = need(registry::open_sqlite_store(dir / "registry.db", registry::OpenMode::read_write),
                   "registry");
    ca::CaInitOptions options;
    options.common_name = "Fuzz Provisioning Root";
    options.root_key_alg = ca::KeyAlg::p256;
    f.ca = std::make_unique<ca::Authority>(
        need(ca::Authority::create(dir / "data", options, unix_now()), "CA"));
    ops::ClaimRequest claim;
    claim.claim = registry::NewClaim{kClaim, registry::kMaxClaimQuota, "", ""};
    claim.lifetime = 365 * 86400;
    claim.out = dir / "claim.zip";
    (void)need(ops::create_claim(*f.store, *f.ca, claim, f.actor), "claim");
    f.device_key = need(ca::generate_key(ca::KeyAlg::p256), "device key");
    const std::string csr =
        ca::csr_to_pem(need(ca::make_csr(f.device_key.get(), kDevice), "csr").get());
    const auto enrolled =
        ops::enroll(*f.store, *f.ca, {kClaim, kDevice, json{{"csr", csr}}.dump()}, f.actor);
    if (enrolled.refused) fail("the fixture's device: " + enrolled.message);
    return f;
  }();
  return made;
}

std::int64_t quota_used(Fixture& f) { return need(f.store->get_claim(kClaim), "claim").quota_used; }
std::int64_t device_count(Fixture& f) { return need(f.store->count_devices({}), "devices"); }

// The subject CN of a PEM certificate (empty when it does not parse).
std::string certificate_cn(const std::string& pem) {
  auto cert = ca::certificate_from_pem(pem);
  return cert.ok() ? subject_common_name(cert->get()) : std::string();
}

void check(Fixture& f, const ops::EnrollRequest& request) {
  const std::int64_t used_before = quota_used(f);
  const std::int64_t devices_before = device_count(f);
  ops::ProvisionAnswer answer;
  try {
    answer = ops::enroll(*f.store, *f.ca, request, f.actor);
  } catch (const std::exception& e) {
    fail(std::string("enroll threw: ") + e.what());
  }
  const json payload = json::parse(ops::answer_payload(answer), nullptr, false);
  if (!payload.is_object()) fail("the answer's payload is not a JSON object");
  if (answer.refused) {
    if (*answer.refused == ops::ProvisionCode::internal_error)
      fail("internal_error: " + answer.message);
    if (ops::answer_topic_suffix(answer) != "rejected" || !payload.contains("code") ||
        payload["code"] != std::string(ops::to_string(*answer.refused)))
      fail("a refusal's payload or topic");
    if (quota_used(f) != used_before || device_count(f) != devices_before)
      fail("a refusal recorded something");
    return;
  }
  if (ops::answer_topic_suffix(answer) != "accepted" || answer.device_id != request.client_id ||
      payload.value("device_id", "") != request.client_id ||
      payload.value("certificate", "") != answer.certificate_pem)
    fail("an enrolment's payload or topic");
  if (certificate_cn(answer.certificate_pem) != request.client_id)
    fail("the certificate is not for the client id");
  auto device = f.store->get_device(request.client_id);
  if (!device.ok()) fail("the enrolled device is not in the registry");
  const std::int64_t spent = quota_used(f) - used_before;
  if (spent != (answer.repeated ? 0 : 1)) fail("an enrolment spent " + std::to_string(spent));
}

// Whether `proof` (standard base64) is a signature over the DER of `csr_pem` by the key of
// `certificate_pem`, as docs/provisioning.md says a device makes it: checked here with OpenSSL
// directly, not with ops::renewal_proof_valid, so that a verifier that accepts a wrong signature
// is caught.
bool proof_verifies(const std::string& certificate_pem, const std::string& csr_pem,
                    const std::string& proof) {
  auto certificate = ca::certificate_from_pem(certificate_pem);
  auto req = ca::csr_from_pem(csr_pem);
  if (!certificate.ok() || !req.ok() || proof.empty() || proof.size() % 4 != 0) {
    ossl::clear_errors();
    return false;
  }
  std::string signature(proof.size() / 4 * 3, '\0');
  int decoded = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(signature.data()),
                                reinterpret_cast<const unsigned char*>(proof.data()),
                                static_cast<int>(proof.size()));
  // EVP_DecodeBlock counts the padding as zero bytes.
  for (std::size_t i = proof.size(); decoded > 0 && i > 0 && proof[i - 1] == '='; --i) --decoded;
  unsigned char* der = nullptr;
  const int der_length = i2d_X509_REQ(req->get(), &der);
  EVP_PKEY* key = X509_get0_pubkey(certificate->get());
  ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  const bool valid =
      decoded > 0 && der_length > 0 && der != nullptr && key != nullptr && ctx &&
      EVP_DigestVerifyInit(ctx.get(), nullptr,
                           EVP_PKEY_is_a(key, "ED25519") == 1 ? nullptr : EVP_sha256(), nullptr,
                           key) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       static_cast<std::size_t>(decoded), der,
                       static_cast<std::size_t>(der_length)) == 1;
  OPENSSL_free(der);
  ossl::clear_errors();
  return valid;
}

// The same payload as a renewal by the device of that id (when there is one), presenting its
// oldest active certificate: no exception, never internal_error; a refusal records nothing; an
// acceptance had a proof that verifies (proof_verifies), answers with a certificate for the id
// that the registry holds, active, under that device, and records one certificate unless it
// repeats an earlier answer.
ops::ProvisionAnswer check_renewal(Fixture& f, const std::string& device_id,
                                   const std::string& renewal_payload) {
  auto certificates = f.store->certificates_of(device_id);
  if (!certificates.ok()) return ops::refusal(ops::ProvisionCode::renewal_not_allowed, "");
  std::string presented, presented_pem;
  for (const auto& c : *certificates) {
    if (c.status == registry::CertificateStatus::active) {
      presented = c.sha256_fingerprint;
      presented_pem = c.pem;
      break;
    }
  }
  if (presented.empty()) return ops::refusal(ops::ProvisionCode::renewal_not_allowed, "");
  const std::size_t before = certificates->size();
  const ops::EnrollRequest enrolled{kClaim, device_id, renewal_payload};
  ops::ProvisionAnswer answer;
  try {
    answer =
        ops::renew(*f.store, *f.ca, {enrolled.client_id, presented, enrolled.payload}, f.actor);
  } catch (const std::exception& e) {
    fail(std::string("renew threw: ") + e.what());
  }
  const json payload = json::parse(ops::answer_payload(answer), nullptr, false);
  if (!payload.is_object()) fail("the renewal's payload is not a JSON object");
  const std::size_t after = need(f.store->certificates_of(enrolled.client_id), "certs").size();
  if (answer.refused) {
    if (*answer.refused == ops::ProvisionCode::internal_error)
      fail("renewal internal_error: " + answer.message);
    if (after != before) fail("a refused renewal recorded something");
    return answer;
  }
  const json request = json::parse(renewal_payload, nullptr, false);
  if (!request.is_object() || !request.contains("proof") || !request["proof"].is_string())
    fail("a renewal without a proof was accepted");
  if (!request.contains("csr") || !request["csr"].is_string() ||
      !proof_verifies(presented_pem, request["csr"].get<std::string>(),
                      request["proof"].get<std::string>()))
    fail("a renewal was accepted with a proof the presented certificate's key does not verify");
  if (ops::answer_topic_suffix(answer) != "accepted" || answer.device_id != enrolled.client_id ||
      payload.value("certificate", "") != answer.certificate_pem)
    fail("a renewal's payload or topic");
  if (certificate_cn(answer.certificate_pem) != enrolled.client_id)
    fail("the renewed certificate is not for the device");
  if (after != before + (answer.repeated ? 0 : 1))
    fail("a renewal recorded " + std::to_string(after - before) + " certificates");
  auto recorded = f.store->find_certificate_by_fingerprint(answer.certificate_sha256);
  if (!recorded.ok() || recorded->device_id != enrolled.client_id ||
      recorded->status != registry::CertificateStatus::active ||
      recorded->pem != answer.certificate_pem)
    fail("the renewed certificate is not the device's active one in the registry");
  return answer;
}

// The payload with the proof by the fixture device's key added (empty when it is no object with a
// CSR, or has a proof already).
std::string with_device_proof(Fixture& f, const std::string& payload) {
  json body = json::parse(payload, nullptr, false);
  if (!body.is_object() || body.contains("proof") || !body.contains("csr") ||
      !body["csr"].is_string())
    return {};
  auto req = ca::csr_from_pem(body["csr"].get<std::string>());
  if (!req.ok()) return {};
  unsigned char* der = nullptr;
  const int length = i2d_X509_REQ(req->get(), &der);
  if (length <= 0 || der == nullptr) {
    ossl::clear_errors();
    return {};
  }
  ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  std::size_t size = 0;
  std::string signature;
  if (ctx &&
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, f.device_key.get()) == 1 &&
      EVP_DigestSign(ctx.get(), nullptr, &size, der, static_cast<std::size_t>(length)) == 1) {
    signature.resize(size);
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size, der,
                       static_cast<std::size_t>(length)) == 1)
      signature.resize(size);
    else
      signature.clear();
  }
  OPENSSL_free(der);
  ossl::clear_errors();
  if (signature.empty()) fail("cannot sign the proof");
  std::string encoded(4 * ((signature.size() + 2) / 3) + 1, '\0');
  encoded.resize(static_cast<std::size_t>(
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                      reinterpret_cast<const unsigned char*>(signature.data()),
                      static_cast<int>(signature.size()))));
  body["proof"] = encoded;
  return body.dump();
}

// The fixture's device renewing with a valid proof: whatever the CSR, never internal_error; an
// acceptance's retry is the same certificate and records nothing; the new certificate is then
// revoked, so that the device keeps one active certificate and never runs out of renewals.
void check_device_renewal(Fixture& f, const std::string& payload) {
  const std::string proven = with_device_proof(f, payload);
  if (proven.empty()) return;
  const auto answer = check_renewal(f, kDevice, proven);
  if (answer.refused) return;
  const auto retry = check_renewal(f, kDevice, proven);
  if (retry.refused || !retry.repeated || retry.certificate_pem != answer.certificate_pem)
    fail("a renewal's retry is not the same certificate");
  (void)need(
      f.store->revoke_certificate(answer.certificate_sha256, RevocationReason::superseded, f.actor),
      "revoke the renewed certificate");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  if (newline == std::string_view::npos) return 0;
  ops::EnrollRequest request;
  request.claim = kClaim;
  request.client_id = std::string(input.substr(0, newline));
  request.payload = std::string(input.substr(newline + 1));
  check(fixture(), request);
  (void)check_renewal(fixture(), request.client_id, request.payload);
  if (request.client_id == kDevice) check_device_renewal(fixture(), request.payload);
  return 0;
}
