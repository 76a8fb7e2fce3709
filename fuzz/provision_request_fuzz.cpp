// ops/provisioning.h: ops::enroll, which the signer runs on what a device published to
// `$provision/<client id>/csr` (docs/provisioning.md), on a SQLite registry and a P-256 CA made
// once in a temporary directory, with one claim of the largest quota and any id. The input's first
// line is the client id, the rest the payload. Invariants: no exception; never `internal_error`
// (the registry and the CA work, so an internal error on bad input is a bug); the payload
// published back is a JSON object of the answer's shape on the topic its outcome names; a refusal
// records nothing and spends no unit; an enrolment answers with a certificate for the client id
// that the registry holds under that device, and spends exactly one unit unless it repeats an
// earlier answer. The same payload then goes through ops::renew as the device's renewal
// (check_renewal).
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

using fuzz::fail;
using fuzz::need;

struct Fixture {
  std::unique_ptr<registry::Store> store;
  std::unique_ptr<ca::Authority> ca;
  registry::Actor actor{"provision:broker", 0};
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

// The same payload as a renewal by the device of that id (when there is one), presenting its
// oldest active certificate: no exception, never internal_error; a refusal records nothing; an
// acceptance answers with a certificate for the id that the registry holds, active, under that
// device, and records one certificate unless it repeats an earlier answer.
void check_renewal(Fixture& f, const ops::EnrollRequest& enrolled) {
  auto certificates = f.store->certificates_of(enrolled.client_id);
  if (!certificates.ok()) return;  // no such device
  std::string presented;
  for (const auto& c : *certificates) {
    if (c.status == registry::CertificateStatus::active) {
      presented = c.sha256_fingerprint;
      break;
    }
  }
  if (presented.empty()) return;
  const std::size_t before = certificates->size();
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
    return;
  }
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
  check_renewal(fixture(), request);
  return 0;
}
