// Enrolment over MQTT as the signer runs it (ops/provisioning.h), against a real SQLite registry
// and a real CA: what an enrolment records and spends, the answer to a retry, every refusal's
// code, and the quota under concurrent enrolments.
#include "ops/provisioning.h"

#include <SQLiteCpp/Database.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "ops/claims.h"
#include "ops/credentials.h"
#include "ops/operations.h"
#include "registry/sqlite_store.h"
#include "tests/ops/claim_site.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace onboard;
using nlohmann::json;
using onboard::test::must;
using onboard::test::TempDir;
using ops::ProvisionCode;

struct Site : test::ClaimSite {
  Site() : ClaimSite("Provisioning Test Root") {}
  ops::ProvisionAnswer enroll(const std::string& claim, const std::string& id,
                              const std::string& payload) {
    return ops::enroll(*store, *ca, {claim, id, payload}, actor);
  }
};

ossl::Ptr<EVP_PKEY> p256() { return must(ca::generate_key(ca::KeyAlg::p256)); }

std::string csr_for(const EVP_PKEY* key, const std::string& cn) {
  return ca::csr_to_pem(must(ca::make_csr(key, cn)).get());
}
std::string request_for(const EVP_PKEY* key, const std::string& cn) {
  return json{{"csr", csr_for(key, cn)}}.dump();
}

void require_refused(const ops::ProvisionAnswer& answer, ProvisionCode code) {
  INFO(answer.message);
  REQUIRE(answer.refused.has_value());
  CHECK(to_string(*answer.refused) == to_string(code));
  const json payload = json::parse(ops::answer_payload(answer));
  CHECK(payload["code"] == std::string(to_string(code)));
  CHECK(payload["retryable"] == ops::retryable(code));
  CHECK(ops::answer_topic_suffix(answer) == "rejected");
}

}  // namespace

TEST_CASE("an enrolment signs the CSR and records the device and a retry spends no second unit") {
  Site site;
  site.add_claim("factory-1", 5, "sensor-[0-9]{4}", "sensor");
  const auto key = p256();
  const std::string request =
      json{{"csr", csr_for(key.get(), "sensor-0001")}, {"metadata", {{"fw", "1.2"}}}}.dump();

  const auto first = site.enroll("factory-1", "sensor-0001", request);
  INFO(first.message);
  REQUIRE_FALSE(first.refused.has_value());
  CHECK_FALSE(first.repeated);
  CHECK(ops::answer_topic_suffix(first) == "accepted");
  const auto cert = must(ca::certificate_from_pem(first.certificate_pem));
  CHECK(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) == 1);
  CHECK(ca::describe_certificate(cert.get()).subject == "CN=sensor-0001");
  CHECK(first.ca_chain_pem == site.ca->chain_pem());
  const json payload = json::parse(ops::answer_payload(first));
  CHECK(payload["device_id"] == "sensor-0001");
  CHECK(payload["certificate"] == first.certificate_pem);
  CHECK(payload["ca_chain"] == first.ca_chain_pem);

  const auto device = must(site.store->get_device("sensor-0001"));
  CHECK(device.type == "sensor");
  CHECK(json::parse(device.metadata)["fw"] == "1.2");
  CHECK(site.quota_used("factory-1") == 1);
  const auto audit = must(site.store->audit_list(0, 0));
  CHECK(std::any_of(audit.begin(), audit.end(), [](const auto& e) {
    return e.action == "device.enroll" && e.subject == "sensor-0001";
  }));

  // The answer was lost and the device asks again with the same CSR: the same certificate, no
  // second unit.
  const auto again = site.enroll("factory-1", "sensor-0001", request);
  REQUIRE_FALSE(again.refused.has_value());
  CHECK(again.repeated);
  CHECK(again.certificate_pem == first.certificate_pem);
  CHECK(site.quota_used("factory-1") == 1);
  CHECK(must(site.store->certificates_of("sensor-0001")).size() == 1);

  // Another key for the same id: someone else's id.
  const auto other = p256();
  require_refused(site.enroll("factory-1", "sensor-0001", request_for(other.get(), "sensor-0001")),
                  ProvisionCode::id_taken);
  CHECK(site.quota_used("factory-1") == 1);
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("every bad request is refused with its code and records nothing") {
  Site site;
  site.add_claim("line-a", 2, "unit-[0-9]+");
  const auto key = p256();
  const std::string good = request_for(key.get(), "unit-1");

  require_refused(site.enroll("line-a", "unit-1", "not json"), ProvisionCode::malformed_request);
  require_refused(site.enroll("line-a", "unit-1", "[1,2]"), ProvisionCode::malformed_request);
  require_refused(site.enroll("line-a", "unit-1", "{}"), ProvisionCode::malformed_request);
  require_refused(site.enroll("line-a", "unit-1", R"({"csr": 5})"),
                  ProvisionCode::malformed_request);
  require_refused(site.enroll("line-a", "unit-1",
                              json{{"csr", csr_for(key.get(), "unit-1")}, {"extra", 1}}.dump()),
                  ProvisionCode::malformed_request);
  require_refused(
      site.enroll("line-a", "unit-1",
                  json{{"csr", csr_for(key.get(), "unit-1")}, {"metadata", "x"}}.dump()),
      ProvisionCode::malformed_request);
  // Metadata nested past the registry's 32 levels, within the size limit: refused before anything
  // serialises it (recursively).
  std::string deep = "{\"a\":1}";
  for (int i = 0; i < 5000; ++i) deep = "[" + deep + "]";
  const std::string csr_text = json(csr_for(key.get(), "unit-1")).dump();
  const auto too_deep = site.enroll("line-a", "unit-1",
                                    "{\"csr\":" + csr_text + ",\"metadata\":{\"x\":" + deep + "}}");
  require_refused(too_deep, ProvisionCode::malformed_request);
  CHECK(too_deep.message == "metadata is nested more than 32 levels deep");
  require_refused(site.enroll("line-a", "unit-1",
                              json{{"csr", csr_for(key.get(), "unit-1")},
                                   {"pad", std::string(ops::kMaxProvisionRequestBytes, 'x')}}
                                  .dump()),
                  ProvisionCode::payload_too_large);
  require_refused(
      site.enroll(
          "line-a", "unit-1",
          R"({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})"),
      ProvisionCode::invalid_csr);
  require_refused(site.enroll("line-a", "unit-1", request_for(key.get(), "unit-2")),
                  ProvisionCode::cn_mismatch);
  ossl::Ptr<EVP_PKEY> weak(EVP_RSA_gen(1024));
  REQUIRE(weak);
  require_refused(site.enroll("line-a", "unit-1", request_for(weak.get(), "unit-1")),
                  ProvisionCode::weak_key);
  require_refused(site.enroll("line-a", "other-1", request_for(key.get(), "other-1")),
                  ProvisionCode::id_not_allowed);
  CHECK(site.devices() == 0);
  CHECK(site.quota_used("line-a") == 0);

  // The quota: two devices, then used up.
  REQUIRE_FALSE(site.enroll("line-a", "unit-1", good).refused.has_value());
  const auto second = p256();
  REQUIRE_FALSE(site.enroll("line-a", "unit-2", request_for(second.get(), "unit-2")).refused);
  const auto third = p256();
  require_refused(site.enroll("line-a", "unit-3", request_for(third.get(), "unit-3")),
                  ProvisionCode::claim_used_up);
  // A retry of an enrolment that went through is still answered once the quota is spent.
  CHECK_FALSE(site.enroll("line-a", "unit-1", good).refused.has_value());

  // Expired and revoked claims.
  site.add_claim("line-b", 5);
  site.actor.now += 7200;
  require_refused(site.enroll("line-b", "unit-9", request_for(third.get(), "unit-9")),
                  ProvisionCode::claim_expired);
  site.actor.now -= 7200;
  must(ops::revoke_claim(*site.store, *site.ca, site.dir / "crl.pem", "line-b",
                         RevocationReason::unspecified, site.actor));
  require_refused(site.enroll("line-b", "unit-9", request_for(third.get(), "unit-9")),
                  ProvisionCode::claim_revoked);
  require_refused(site.enroll("no-such-claim", "unit-9", request_for(third.get(), "unit-9")),
                  ProvisionCode::claim_revoked);
  CHECK(site.devices() == 2);
  CHECK(site.quota_used("line-a") == 2);
  CHECK(site.quota_used("line-b") == 0);
}

TEST_CASE("the quota holds exactly when more devices than it allows enroll at once") {
  Site site;
  site.add_claim("burst", 5);
  constexpr int kDevices = 15;
  std::vector<ossl::Ptr<EVP_PKEY>> keys;
  for (int i = 0; i < kDevices; ++i) keys.push_back(p256());
  std::atomic<int> accepted{0}, used_up{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kDevices; ++i) {
    threads.emplace_back([&, i] {
      // One connection per thread, as the server's workers have: the store is the only referee.
      auto store =
          registry::open_sqlite_store(site.dir / "registry.db", registry::OpenMode::read_write);
      if (!store.ok()) {
        ++other;
        return;
      }
      const std::string id = "dev-" + std::to_string(i);
      const auto answer =
          ops::enroll(**store, *site.ca, {"burst", id, request_for(keys[i].get(), id)}, site.actor);
      if (!answer.refused)
        ++accepted;
      else if (*answer.refused == ProvisionCode::claim_used_up)
        ++used_up;
      else
        ++other;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(accepted == 5);
  CHECK(used_up == kDevices - 5);
  CHECK(other == 0);
  CHECK(site.quota_used("burst") == 5);
  CHECK(site.devices() == 5);
}

// ---- renewal --------------------------------------------------------------------------------

namespace {

// A device enrolled through a claim, with the key of its first certificate.
struct Enrolled {
  ossl::Ptr<EVP_PKEY> key;
  registry::Certificate certificate;
};
Enrolled enroll_device(Site& site, const std::string& claim, const std::string& id) {
  Enrolled out{p256(), {}};
  const auto answer = site.enroll(claim, id, request_for(out.key.get(), id));
  INFO(answer.message);
  REQUIRE_FALSE(answer.refused.has_value());
  out.certificate = must(site.store->certificates_of(id)).back();
  return out;
}

ops::ProvisionAnswer renew(Site& site, const std::string& id, const std::string& presented,
                           const std::string& payload) {
  return ops::renew(*site.store, *site.ca, {id, presented, payload}, site.actor);
}

// Standard base64, padded, as `openssl base64 -A` writes it.
std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// The CSR's DER, as `openssl req -outform DER` writes it.
std::string der_of(const std::string& csr_pem) {
  const auto req = must(ca::csr_from_pem(csr_pem));
  unsigned char* der = nullptr;
  const int length = i2d_X509_REQ(req.get(), &der);
  REQUIRE(length > 0);
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  return out;
}

// A signature of `data` by `key`, as `openssl dgst -sha256 -sign` makes it (Ed25519: over the
// data itself).
std::string signature_of(const EVP_PKEY* key, const std::string& data) {
  ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  const EVP_MD* digest = EVP_PKEY_is_a(key, "ED25519") == 1 ? nullptr : EVP_sha256();
  REQUIRE(EVP_DigestSignInit(ctx.get(), nullptr, digest, nullptr, const_cast<EVP_PKEY*>(key)) == 1);
  std::size_t size = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  REQUIRE(EVP_DigestSign(ctx.get(), nullptr, &size, in, data.size()) == 1);
  std::string out(size, '\0');
  REQUIRE(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &size, in,
                         data.size()) == 1);
  out.resize(size);
  return out;
}

// A renewal request for a new key `key`, its proof made with `old_key` (the key of the
// certificate the device connected with).
std::string renewal_for(const EVP_PKEY* key, const std::string& cn, const EVP_PKEY* old_key) {
  const std::string csr = csr_for(key, cn);
  return json{{"csr", csr}, {"proof", base64(signature_of(old_key, der_of(csr)))}}.dump();
}

}  // namespace

TEST_CASE("a renewal records a new certificate beside the presented one and a retry is the same") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  const auto key = p256();
  const std::string request = renewal_for(key.get(), "unit-1", device.key.get());

  const auto first = renew(site, "unit-1", device.certificate.sha256_fingerprint, request);
  INFO(first.message);
  REQUIRE_FALSE(first.refused.has_value());
  CHECK_FALSE(first.repeated);
  CHECK(ops::answer_topic_suffix(first) == "accepted");
  const auto cert = must(ca::certificate_from_pem(first.certificate_pem));
  CHECK(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) == 1);
  CHECK(ca::describe_certificate(cert.get()).subject == "CN=unit-1");
  CHECK(first.certificate_sha256 == ca::describe_certificate(cert.get()).sha256_fingerprint);
  auto certificates = must(site.store->certificates_of("unit-1"));
  REQUIRE(certificates.size() == 2);
  CHECK(certificates[0].status == registry::CertificateStatus::active);  // until the new connects
  CHECK(certificates[1].pem == first.certificate_pem);
  const auto audit = must(site.store->audit_list(0, 0));
  CHECK(std::any_of(audit.begin(), audit.end(), [](const auto& e) {
    return e.action == "certificate.renew" && e.subject == "unit-1";
  }));
  CHECK(site.quota_used("line-a") == 1);  // a renewal spends no claim unit

  // The answer was lost: the same CSR is the same certificate, and nothing new is recorded.
  const auto again = renew(site, "unit-1", device.certificate.sha256_fingerprint, request);
  REQUIRE_FALSE(again.refused.has_value());
  CHECK(again.repeated);
  CHECK(again.certificate_pem == first.certificate_pem);
  CHECK(again.certificate_sha256 == first.certificate_sha256);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 2);
  // Its old key again is a renewal too (a new certificate for the same key), not the old one.
  const auto same_key = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                              renewal_for(device.key.get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(same_key.refused.has_value());
  CHECK_FALSE(same_key.repeated);
  CHECK(same_key.certificate_pem != device.certificate.pem);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 3);
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("the new certificate's connect supersedes the older ones and writes the CRL") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  const auto key = p256();
  const auto renewed = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                             renewal_for(key.get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(renewed.refused.has_value());
  const auto crl = site.dir / "crl.pem";
  must(ops::rewrite_crl(*site.store, *site.ca, crl, "", site.actor));

  // The old certificate connecting again supersedes nothing (nothing is older than it).
  auto none = must(ops::supersede(*site.store, *site.ca, crl, "unit-1",
                                  device.certificate.sha256_fingerprint, site.actor));
  CHECK(none.serials.empty());
  CHECK_FALSE(none.crl_number.has_value());
  CHECK(must(site.store->certificates_of("unit-1"))[0].status ==
        registry::CertificateStatus::active);

  auto superseded = must(
      ops::supersede(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256, site.actor));
  CHECK(superseded.serials == std::vector<std::string>{device.certificate.serial_hex});
  CHECK(superseded.crl_number.has_value());
  CHECK(std::filesystem::exists(crl));
  const auto certificates = must(site.store->certificates_of("unit-1"));
  CHECK(certificates[0].status == registry::CertificateStatus::revoked);
  CHECK(certificates[0].revocation_reason == RevocationReason::superseded);
  CHECK(certificates[1].status == registry::CertificateStatus::active);
  // Twice is once.
  const auto twice = must(
      ops::supersede(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256, site.actor));
  CHECK(twice.serials.empty());
  CHECK_FALSE(twice.crl_number.has_value());
  // A supersession whose CRL rewrite was lost is finished when the plugin asks again.
  std::filesystem::remove(crl);
  const auto rerun = must(
      ops::supersede(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256, site.actor));
  CHECK(rerun.serials.empty());
  CHECK(rerun.crl_number.has_value());
  CHECK(must(ops::crl_lists_revoked_of(*site.store, *site.ca, crl, "unit-1")));
  // The superseded certificate can no longer renew.
  require_refused(renew(site, "unit-1", device.certificate.sha256_fingerprint,
                        renewal_for(p256().get(), "unit-1", device.key.get())),
                  ProvisionCode::renewal_not_allowed);
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("a renewal is refused for a device not active or a certificate not its own") {
  Site site;
  site.add_claim("line-a", 5);
  const auto one = enroll_device(site, "line-a", "unit-1");
  const auto two = enroll_device(site, "line-a", "unit-2");
  const std::string request = renewal_for(p256().get(), "unit-1", one.key.get());

  // Another device's certificate, an unknown one, a fingerprint that is none.
  require_refused(renew(site, "unit-1", two.certificate.sha256_fingerprint, request),
                  ProvisionCode::renewal_not_allowed);
  require_refused(renew(site, "unit-1", std::string(64, 'a'), request),
                  ProvisionCode::renewal_not_allowed);
  require_refused(renew(site, "unit-1", "not-a-fingerprint", request),
                  ProvisionCode::renewal_not_allowed);
  require_refused(renew(site, "unit-9", one.certificate.sha256_fingerprint,
                        renewal_for(p256().get(), "unit-9", one.key.get())),
                  ProvisionCode::renewal_not_allowed);
  // The CSR's CN must be the device's id; the request carries the CSR alone.
  require_refused(renew(site, "unit-1", one.certificate.sha256_fingerprint,
                        renewal_for(p256().get(), "unit-2", one.key.get())),
                  ProvisionCode::cn_mismatch);
  require_refused(
      renew(site, "unit-1", one.certificate.sha256_fingerprint,
            json{{"csr", csr_for(p256().get(), "unit-1")}, {"metadata", json::object()}}.dump()),
      ProvisionCode::malformed_request);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 1);

  // A disabled device may not renew; enabled again it may (the positive control).
  must(site.store->set_device_enabled("unit-1", false, site.actor));
  require_refused(renew(site, "unit-1", one.certificate.sha256_fingerprint, request),
                  ProvisionCode::renewal_not_allowed);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 1);
  must(site.store->set_device_enabled("unit-1", true, site.actor));
  CHECK_FALSE(renew(site, "unit-1", one.certificate.sha256_fingerprint, request).refused);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 2);
  CHECK(must(site.store->certificates_of("unit-2")).size() == 1);
}

TEST_CASE("a certificate younger than the renewal minimum age is not renewed") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  const auto next = p256();
  const std::string request = renewal_for(next.get(), "unit-1", device.key.get());
  const std::string& presented = device.certificate.sha256_fingerprint;
  constexpr UnixTime kMinAge = 3600;
  auto renew_aged = [&](UnixTime min_age) {
    return ops::renew(*site.store, *site.ca, {"unit-1", presented, request, min_age}, site.actor);
  };

  // Just enrolled, then a minute short of the minimum: refused, nothing signed or recorded.
  const auto young = renew_aged(kMinAge);
  require_refused(young, ProvisionCode::renewal_too_soon);
  CHECK_FALSE(ops::retryable(ProvisionCode::renewal_too_soon));
  site.actor.now += kMinAge - 60;
  require_refused(renew_aged(kMinAge), ProvisionCode::renewal_too_soon);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 1);
  // With no minimum the same request is renewed at once (the positive control, a fresh site).
  {
    Site other;
    other.add_claim("line-a", 5);
    const auto fresh = enroll_device(other, "line-a", "unit-1");
    CHECK_FALSE(ops::renew(*other.store, *other.ca,
                           {"unit-1", fresh.certificate.sha256_fingerprint,
                            renewal_for(p256().get(), "unit-1", fresh.key.get()), 0},
                           other.actor)
                    .refused);
  }
  // Old enough: renewed; its retry is still answered once the new certificate is the young one.
  site.actor.now += 120;
  const auto renewed = renew_aged(kMinAge);
  REQUIRE_FALSE(renewed.refused);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 2);
  const auto retry = renew_aged(kMinAge);
  REQUIRE_FALSE(retry.refused);
  CHECK(retry.repeated);
  // The new certificate itself is too young to renew in turn (issued by the real clock, so
  // looked at from the start again).
  site.actor.now -= kMinAge + 60;
  require_refused(ops::renew(*site.store, *site.ca,
                             {"unit-1", renewed.certificate_sha256,
                              renewal_for(p256().get(), "unit-1", next.get()), kMinAge},
                             site.actor),
                  ProvisionCode::renewal_too_soon);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 2);
}

TEST_CASE("a device with renewals waiting for their first connect may not renew again") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  std::vector<std::string> requests;
  for (std::size_t i = 0; i < registry::kMaxPendingRenewals; ++i) {
    requests.push_back(renewal_for(p256().get(), "unit-1", device.key.get()));
    REQUIRE_FALSE(
        renew(site, "unit-1", device.certificate.sha256_fingerprint, requests.back()).refused);
  }
  require_refused(renew(site, "unit-1", device.certificate.sha256_fingerprint,
                        renewal_for(p256().get(), "unit-1", device.key.get())),
                  ProvisionCode::renewal_not_allowed);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 1 + registry::kMaxPendingRenewals);
  // The retry of a pending one is still its certificate (the positive control).
  const auto retry = renew(site, "unit-1", device.certificate.sha256_fingerprint, requests[0]);
  REQUIRE_FALSE(retry.refused);
  CHECK(retry.repeated);
}

TEST_CASE("retries of one renewal racing each other record one certificate") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  const std::string request = renewal_for(p256().get(), "unit-1", device.key.get());
  constexpr int kRetries = 8;
  std::vector<std::string> answers(kRetries);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRetries; ++i) {
    threads.emplace_back([&, i] {
      auto store =
          registry::open_sqlite_store(site.dir / "registry.db", registry::OpenMode::read_write);
      if (!store.ok()) return;
      const auto answer =
          ops::renew(**store, *site.ca, {"unit-1", device.certificate.sha256_fingerprint, request},
                     site.actor);
      if (!answer.refused) answers[i] = answer.certificate_pem;
    });
  }
  for (auto& t : threads) t.join();
  const auto certificates = must(site.store->certificates_of("unit-1"));
  REQUIRE(certificates.size() == 2);
  for (const auto& pem : answers) CHECK(pem == certificates[1].pem);
}

TEST_CASE("a renewal's old certificate is superseded once its grace period is over") {
  Site site;
  site.add_claim("line-a", 5);
  const auto one = enroll_device(site, "line-a", "unit-1");
  const auto two = enroll_device(site, "line-a", "unit-2");
  REQUIRE_FALSE(renew(site, "unit-1", one.certificate.sha256_fingerprint,
                      renewal_for(p256().get(), "unit-1", one.key.get()))
                    .refused);
  const auto crl = site.dir / "crl.pem";
  constexpr UnixTime kGrace = 3600;

  // Within the grace period nothing goes (the negative), nor a device that never renewed.
  CHECK(must(ops::renewals_due(*site.store, kGrace, site.actor.now)).empty());
  auto early = must(ops::supersede_expired(*site.store, *site.ca, crl, {}, kGrace, site.actor));
  CHECK(early.serials.empty());
  CHECK_FALSE(std::filesystem::exists(crl));
  CHECK(must(site.store->certificates_of("unit-1"))[0].status ==
        registry::CertificateStatus::active);

  // Past it, the old certificate is revoked as superseded and the CRL written; the new one and
  // the other device's stay.
  registry::Actor later = site.actor;
  // The certificate was issued by the clock, a moment after site.actor.now.
  later.now += kGrace + 60;
  const auto due = must(ops::renewals_due(*site.store, kGrace, later.now));
  REQUIRE(due.size() == 1);
  CHECK(due[0].device_id == "unit-1");
  CHECK(due[0].sha256_fingerprint == one.certificate.sha256_fingerprint);
  auto late = must(ops::supersede_expired(*site.store, *site.ca, crl, due, kGrace, later));
  CHECK(late.serials == std::vector<std::string>{one.certificate.serial_hex});
  CHECK(late.crl_number.has_value());
  CHECK(std::filesystem::exists(crl));
  const auto certificates = must(site.store->certificates_of("unit-1"));
  REQUIRE(certificates.size() == 2);
  CHECK(certificates[0].revocation_reason == RevocationReason::superseded);
  CHECK(certificates[1].status == registry::CertificateStatus::active);
  CHECK(must(site.store->certificates_of("unit-2"))[0].status ==
        registry::CertificateStatus::active);
  // Once is enough: a second scan finds nothing, and the first scan's answer handed in again
  // revokes nothing twice and writes no CRL.
  CHECK(must(ops::renewals_due(*site.store, kGrace, later.now)).empty());
  const auto seq = must(site.store->change_seq());
  const auto again = must(ops::supersede_expired(*site.store, *site.ca, crl, due, kGrace, later));
  CHECK(again.serials.empty());
  CHECK_FALSE(again.crl_number.has_value());
  CHECK(must(site.store->change_seq()) == seq);
  CHECK(must(site.store->verify_audit()).ok());
  (void)two;
}

TEST_CASE("a certificate found due and changed before the sweep's write is left as it is") {
  Site site;
  site.add_claim("line-a", 5);
  const auto one = enroll_device(site, "line-a", "unit-1");
  const auto two = enroll_device(site, "line-a", "unit-2");
  const auto three = enroll_device(site, "line-a", "unit-3");
  std::vector<std::string> renewed;
  for (const auto& [id, device] :
       {std::pair{"unit-1", &one}, std::pair{"unit-2", &two}, std::pair{"unit-3", &three}}) {
    const auto answer = renew(site, id, device->certificate.sha256_fingerprint,
                              renewal_for(p256().get(), id, device->key.get()));
    REQUIRE_FALSE(answer.refused);
    renewed.push_back(answer.certificate_sha256);
  }
  const auto crl = site.dir / "crl.pem";
  constexpr UnixTime kGrace = 3600;
  registry::Actor later = site.actor;
  later.now += kGrace + 60;
  // The scan, outside the write turn: all three old certificates are due.
  const auto due = must(ops::renewals_due(*site.store, kGrace, later.now));
  REQUIRE(due.size() == 3);
  // Meanwhile unit-1's renewal connects (its old certificate revoked by that) and unit-2 is
  // disabled.
  CHECK(must(site.store->supersede_predecessors("unit-1", renewed[0], site.actor)) ==
        std::vector<std::string>{one.certificate.serial_hex});
  must(site.store->set_device_enabled("unit-2", false, site.actor));
  auto supersessions = [&] {
    const auto rows = must(site.store->audit_list(0));
    return std::count_if(rows.begin(), rows.end(), [](const registry::AuditEvent& row) {
      return row.action == "certificate.supersede";
    });
  };
  const auto supersessions_before = supersessions();

  // Only unit-3's (still due: the positive control) is revoked; unit-1's is not revoked twice and
  // unit-2's stays active.
  const auto swept = must(ops::supersede_expired(*site.store, *site.ca, crl, due, kGrace, later));
  CHECK(swept.serials == std::vector<std::string>{three.certificate.serial_hex});
  CHECK(swept.crl_number.has_value());
  CHECK(must(site.store->certificates_of("unit-2"))[0].status ==
        registry::CertificateStatus::active);
  const auto unit1 = must(site.store->certificates_of("unit-1"));
  CHECK(unit1[0].revoked_at == site.actor.now);  // revoked by the connect, not again
  CHECK(unit1[1].status == registry::CertificateStatus::active);
  CHECK(supersessions() == supersessions_before + 1);
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("a later certificate with the CSR's key that renews another one is no retry") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  // A renewed to B and, B's answer lost, to C with another key.
  const auto b_key = p256();
  const auto c_key = p256();
  const auto b = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                       renewal_for(b_key.get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(b.refused);
  const auto c = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                       renewal_for(c_key.get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(c.refused);
  const auto seq = must(site.store->change_seq());

  // Presenting B with C's key: C renews A, not B, so it is not the answer; what the registry
  // decides for a new renewal of B applies (two others active: refused), and nothing is written.
  const auto from_b =
      renew(site, "unit-1", b.certificate_sha256, renewal_for(c_key.get(), "unit-1", b_key.get()));
  CHECK(from_b.certificate_pem != c.certificate_pem);
  CHECK_FALSE(from_b.repeated);
  require_refused(from_b, ProvisionCode::renewal_not_allowed);
  CHECK(must(site.store->change_seq()) == seq);
  // The same key asked from A, which C renews, is C's retry (the positive control).
  const auto from_a = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                            renewal_for(c_key.get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(from_a.refused);
  CHECK(from_a.repeated);
  CHECK(from_a.certificate_pem == c.certificate_pem);
  CHECK(from_a.certificate_sha256 == c.certificate_sha256);
  CHECK(must(site.store->change_seq()) == seq);
}

TEST_CASE("a certificate an operator issued for the CSR's key is no retry of a renewal") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  // An operator issued the device a second certificate for a key (not a renewal of anything).
  const auto key = p256();
  auto issued = must(ops::issue_device_certificate(*site.ca, "unit-1", key.get(), 30));
  const auto other = must(site.store->add_certificate(
      "unit-1", ops::new_certificate(issued.info, issued.pem), false, site.actor));
  CHECK(other.certificate.renews.empty());

  // The device renews A with that key: a new certificate renewing A, not the operator's one.
  const auto renewed = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                             renewal_for(key.get(), "unit-1", device.key.get()));
  INFO(renewed.message);
  REQUIRE_FALSE(renewed.refused);
  CHECK_FALSE(renewed.repeated);
  CHECK(renewed.certificate_pem != issued.pem);
  const auto recorded =
      must(site.store->find_certificate_by_fingerprint(renewed.certificate_sha256));
  CHECK(recorded.renews == device.certificate.sha256_fingerprint);
  // Asked again, that renewal is the retry's answer (the positive control).
  const auto again = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                           renewal_for(key.get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(again.refused);
  CHECK(again.repeated);
  CHECK(again.certificate_pem == renewed.certificate_pem);
}

namespace {

// `devices` devices unit-1, unit-2, ... enrolled through one claim and each renewed once, the
// renewals never connected, and the grace period since over: what the sweep finds due at `later`.
struct Overdue {
  static constexpr UnixTime kGrace = 3600;
  explicit Overdue(int devices) {
    site.add_claim("line-a", devices + 3);
    for (int i = 1; i <= devices; ++i) {
      const std::string id = "unit-" + std::to_string(i);
      const auto device = enroll_device(site, "line-a", id);
      REQUIRE_FALSE(renew(site, id, device.certificate.sha256_fingerprint,
                          renewal_for(p256().get(), id, device.key.get()))
                        .refused);
      old_serials.push_back(device.certificate.serial_hex);
    }
    later.now += kGrace + 60;
    due = must(ops::renewals_due(*site.store, kGrace, later.now));
    REQUIRE(due.size() == static_cast<std::size_t>(devices));
  }
  Site site;
  std::vector<std::string> old_serials;  // the renewed certificates', in the devices' order
  std::filesystem::path crl = site.dir / "crl.pem";
  registry::Actor later = site.actor;
  std::vector<registry::DueRenewal> due;
};

}  // namespace

TEST_CASE("the grace sweep revokes in batches each under its own write turn") {
  constexpr int kDevices = 7;
  Overdue fleet(kDevices);
  auto& [site, old_serials, crl, later, due] = fleet;
  constexpr UnixTime kGrace = Overdue::kGrace;

  // Each time the turn is taken, what another connection reads: the batches before committed.
  auto reader =
      must(registry::open_sqlite_store(site.dir / "registry.db", registry::OpenMode::read_only));
  auto revoked_now = [&] {
    std::size_t n = 0;
    for (int i = 1; i <= kDevices; ++i) {
      const auto certificates = must(reader->certificates_of("unit-" + std::to_string(i)));
      n += static_cast<std::size_t>(std::count_if(
          certificates.begin(), certificates.end(),
          [](const auto& c) { return c.status == registry::CertificateStatus::revoked; }));
    }
    return n;
  };
  std::mutex turn;
  std::vector<std::size_t> seen;
  const ops::WriteTurn take = [&] {
    seen.push_back(revoked_now());
    return std::unique_lock<std::mutex>(turn);
  };
  const auto swept =
      must(ops::supersede_expired(*site.store, *site.ca, crl, due, kGrace, later, take, 3));
  // Three batches (3, 3, 1), then the CRL once, under a fourth turn.
  CHECK(seen == std::vector<std::size_t>{0, 3, 6, 7});
  auto sorted = swept.serials;
  std::sort(sorted.begin(), sorted.end());
  std::sort(old_serials.begin(), old_serials.end());
  CHECK(sorted == old_serials);
  CHECK(swept.crl_number.has_value());
  CHECK(must(ops::crl_lists_revoked_of(*site.store, *site.ca, crl, "unit-7")));
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("a batch the registry keeps refusing does not hold up the sweep's other batches") {
  constexpr int kDevices = 7;
  Overdue fleet(kDevices);
  auto& [site, old_serials, crl, later, due] = fleet;
  constexpr UnixTime kGrace = Overdue::kGrace;
  {
    // unit-2's certificates cannot be written any more: its batch (unit-1 to unit-3) fails whole.
    SQLite::Database raw((site.dir / "registry.db").string(), SQLite::OPEN_READWRITE);
    raw.exec(
        "CREATE TRIGGER stuck BEFORE UPDATE ON certificates WHEN OLD.device_id = 'unit-2' "
        "BEGIN SELECT RAISE(ABORT, 'unit-2 cannot be written'); END");
  }
  std::mutex turn;
  const ops::WriteTurn take = [&] { return std::unique_lock<std::mutex>(turn); };

  const auto swept =
      must(ops::supersede_expired(*site.store, *site.ca, crl, due, kGrace, later, take, 3));
  CHECK(swept.failed_batches == 1);
  REQUIRE(swept.first_failure.has_value());
  INFO(swept.first_failure->message);
  CHECK(swept.first_failure->message.starts_with("supersede renewed certificates"));
  // The two batches after it were revoked, and the CRL lists them.
  auto sorted = swept.serials;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> later_batches(old_serials.begin() + 3, old_serials.end());
  std::sort(later_batches.begin(), later_batches.end());
  CHECK(sorted == later_batches);
  CHECK(swept.crl_number.has_value());
  CHECK(must(ops::crl_lists_revoked_of(*site.store, *site.ca, crl, "unit-7")));
  // The failed batch was rolled back whole: its three devices are still due.
  const auto left = must(ops::renewals_due(*site.store, kGrace, later.now));
  CHECK(left.size() == 3);

  {
    SQLite::Database raw((site.dir / "registry.db").string(), SQLite::OPEN_READWRITE);
    raw.exec("DROP TRIGGER stuck");
  }
  const auto again =
      must(ops::supersede_expired(*site.store, *site.ca, crl, left, kGrace, later, take, 3));
  CHECK(again.failed_batches == 0);
  CHECK_FALSE(again.first_failure.has_value());
  CHECK(again.serials.size() == 3);
  CHECK(must(ops::renewals_due(*site.store, kGrace, later.now)).empty());
  CHECK(must(ops::crl_lists_revoked_of(*site.store, *site.ca, crl, "unit-2")));
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("a sweep of more renewed certificates than one batch takes more than one write") {
  Site site;
  constexpr std::size_t kDevices = registry::kSupersedeBatch + 1;
  const registry::Actor at{"alice", 1'700'000'000};
  for (std::size_t i = 0; i < kDevices; ++i) {
    const std::string id = "dev-" + std::to_string(i);
    auto fake = [&](std::size_t n) {
      char serial[33], fingerprint[65];
      std::snprintf(serial, sizeof serial, "%032zX", n);
      std::snprintf(fingerprint, sizeof fingerprint, "%064zx", n);
      return registry::NewCertificate{
          serial,
          "CN=Other Issuer",
          fingerprint,
          "CN=" + id,
          at.now - 600,
          at.now + 86400,
          "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
          ""};
    };
    registry::NewDevice device;
    device.id = id;
    const auto first = fake(2 * i + 1);
    must(site.store->register_device(device, first, at));
    REQUIRE(must(site.store->renew_device(
                     id, first.sha256_fingerprint, fake(2 * i + 2),
                     [](const registry::Certificate&) { return false; }, at))
                .refusal == registry::RenewRefusal::none);
  }
  registry::Actor later = at;
  later.now += 7200;
  const auto due = must(ops::renewals_due(*site.store, 3600, later.now));
  REQUIRE(due.size() == kDevices);
  std::mutex turn;
  int turns = 0;
  const ops::WriteTurn take = [&] {
    ++turns;
    return std::unique_lock<std::mutex>(turn);
  };
  const auto swept = must(
      ops::supersede_expired(*site.store, *site.ca, site.dir / "crl.pem", due, 3600, later, take));
  CHECK(swept.serials.size() == kDevices);
  CHECK(turns == 3);  // a full batch, the one left, the CRL
  CHECK(must(ops::renewals_due(*site.store, 3600, later.now)).empty());
}

TEST_CASE("a connected notice that revokes nothing is found by reads and writes no CRL") {
  Site site;
  site.add_claim("line-a", 5);
  const auto device = enroll_device(site, "line-a", "unit-1");
  const auto renewed = renew(site, "unit-1", device.certificate.sha256_fingerprint,
                             renewal_for(p256().get(), "unit-1", device.key.get()));
  REQUIRE_FALSE(renewed.refused);
  // No CRL file yet (the refresher's to write): a notice with nothing to finish leaves it so.
  const auto crl = site.dir / "crl.pem";
  const auto seq = must(site.store->change_seq());
  CHECK_FALSE(must(ops::supersede_due(*site.store, *site.ca, crl, "unit-1",
                                      device.certificate.sha256_fingerprint)));
  CHECK_FALSE(must(ops::supersede_due(*site.store, *site.ca, crl, "unit-9",
                                      device.certificate.sha256_fingerprint)));
  const auto none = must(ops::supersede(*site.store, *site.ca, crl, "unit-1",
                                        device.certificate.sha256_fingerprint, site.actor));
  CHECK(none.serials.empty());
  CHECK_FALSE(none.crl_number.has_value());
  CHECK_FALSE(std::filesystem::exists(crl));
  CHECK(must(site.store->change_seq()) == seq);
  // A bad fingerprint or id is refused before anything.
  CHECK(ops::supersede_due(*site.store, *site.ca, crl, "unit-1", "not hex").error().code ==
        Errc::invalid_input);
  CHECK(ops::supersede_due(*site.store, *site.ca, crl, "bad id!", renewed.certificate_sha256)
            .error()
            .code == Errc::invalid_input);

  // The renewal's connect is due (the positive control), and writes the CRL.
  CHECK(must(ops::supersede_due(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256)));
  const auto done = must(
      ops::supersede(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256, site.actor));
  CHECK(done.serials == std::vector<std::string>{device.certificate.serial_hex});
  CHECK(done.crl_number.has_value());
  CHECK_FALSE(
      must(ops::supersede_due(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256)));
  // The CRL lost after the supersession: the notice again is due, to finish it.
  std::filesystem::remove(crl);
  CHECK(must(ops::supersede_due(*site.store, *site.ca, crl, "unit-1", renewed.certificate_sha256)));
}

TEST_CASE("a renewal needs a proof by the key of the certificate it presents") {
  Site site;
  site.add_claim("line-a", 5);
  const auto one = enroll_device(site, "line-a", "unit-1");
  const auto two = enroll_device(site, "line-a", "unit-2");
  const std::string& presented = one.certificate.sha256_fingerprint;
  const auto next = p256();
  const std::string csr = csr_for(next.get(), "unit-1");
  const std::string right = base64(signature_of(one.key.get(), der_of(csr)));
  auto with_proof = [&](const json& proof) { return json{{"csr", csr}, {"proof", proof}}.dump(); };

  // No proof, a proof by another device's key, a proof by the new key, a proof over another CSR,
  // a proof of the CSR's PEM instead of its DER, one bit off, not base64: all proof_invalid.
  require_refused(renew(site, "unit-1", presented, json{{"csr", csr}}.dump()),
                  ProvisionCode::proof_invalid);
  require_refused(renew(site, "unit-1", presented, with_proof(nullptr)),
                  ProvisionCode::proof_invalid);
  require_refused(renew(site, "unit-1", presented,
                        with_proof(base64(signature_of(two.key.get(), der_of(csr))))),
                  ProvisionCode::proof_invalid);
  require_refused(
      renew(site, "unit-1", presented, with_proof(base64(signature_of(next.get(), der_of(csr))))),
      ProvisionCode::proof_invalid);
  const std::string other_csr = csr_for(p256().get(), "unit-1");
  require_refused(renew(site, "unit-1", presented,
                        with_proof(base64(signature_of(one.key.get(), der_of(other_csr))))),
                  ProvisionCode::proof_invalid);
  require_refused(
      renew(site, "unit-1", presented, with_proof(base64(signature_of(one.key.get(), csr)))),
      ProvisionCode::proof_invalid);
  std::string flipped = signature_of(one.key.get(), der_of(csr));
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x01);
  require_refused(renew(site, "unit-1", presented, with_proof(base64(flipped))),
                  ProvisionCode::proof_invalid);
  require_refused(renew(site, "unit-1", presented, with_proof("not base64!")),
                  ProvisionCode::proof_invalid);
  require_refused(renew(site, "unit-1", presented, with_proof(right.substr(0, right.size() - 4))),
                  ProvisionCode::proof_invalid);
  require_refused(renew(site, "unit-1", presented, with_proof(right + "\n")),
                  ProvisionCode::proof_invalid);
  CHECK_FALSE(ops::retryable(ProvisionCode::proof_invalid));
  // A proof of the wrong JSON type is a malformed request.
  require_refused(renew(site, "unit-1", presented, with_proof(42)),
                  ProvisionCode::malformed_request);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 1);

  // The same CSR with the right proof is renewed (the positive control) ...
  const auto renewed = renew(site, "unit-1", presented, with_proof(right));
  INFO(renewed.message);
  REQUIRE_FALSE(renewed.refused.has_value());
  CHECK(must(site.store->certificates_of("unit-1")).size() == 2);
  // ... its retry, which carries the same proof, is answered with the same certificate ...
  const auto retry = renew(site, "unit-1", presented, with_proof(right));
  REQUIRE_FALSE(retry.refused.has_value());
  CHECK(retry.repeated);
  CHECK(retry.certificate_pem == renewed.certificate_pem);
  // ... and a retry without it, or with another device's, is not: the certificate is not sent.
  require_refused(renew(site, "unit-1", presented, json{{"csr", csr}}.dump()),
                  ProvisionCode::proof_invalid);
  require_refused(renew(site, "unit-1", presented,
                        with_proof(base64(signature_of(two.key.get(), der_of(csr))))),
                  ProvisionCode::proof_invalid);
  CHECK(must(site.store->certificates_of("unit-1")).size() == 2);
  CHECK(must(site.store->certificates_of("unit-2")).size() == 1);
}

TEST_CASE("a renewal proof is checked for RSA P-384 and Ed25519 keys too") {
  for (const auto alg : {ca::KeyAlg::rsa2048, ca::KeyAlg::p384, ca::KeyAlg::ed25519}) {
    Site site;
    site.add_claim("line-a", 5);
    const auto old_key = must(ca::generate_key(alg));
    INFO(ca::describe_key(old_key.get()));
    REQUIRE_FALSE(site.enroll("line-a", "unit-1", request_for(old_key.get(), "unit-1")).refused);
    const std::string presented = must(site.store->certificates_of("unit-1"))[0].sha256_fingerprint;
    const auto next = p256();
    // A proof by another key of the same kind is refused; by the certificate's key, renewed.
    const auto stranger = must(ca::generate_key(alg));
    require_refused(
        renew(site, "unit-1", presented, renewal_for(next.get(), "unit-1", stranger.get())),
        ProvisionCode::proof_invalid);
    const auto renewed =
        renew(site, "unit-1", presented, renewal_for(next.get(), "unit-1", old_key.get()));
    INFO(renewed.message);
    CHECK_FALSE(renewed.refused.has_value());
  }
}

TEST_CASE("a proof check without a key leaves no OpenSSL error behind") {
  // A certificate whose key OpenSSL cannot read: X509_get0_pubkey fails and queues its reason.
  ossl::Ptr<X509> keyless(X509_new());
  REQUIRE(keyless);
  ossl::clear_errors();
  const EVP_PKEY* key = X509_get0_pubkey(keyless.get());
  CHECK(key == nullptr);
  CHECK(ERR_peek_error() != 0);  // the positive control: there is something to clear
  CHECK_FALSE(ops::renewal_proof_valid(key, "csr", "signature"));
  CHECK(ERR_peek_error() == 0);
  // A key and a wrong signature: refused, and cleared too.
  const auto real = p256();
  CHECK_FALSE(ops::renewal_proof_valid(real.get(), "csr", "not a signature"));
  CHECK(ERR_peek_error() == 0);
  // The right signature verifies (the positive control for the check itself).
  CHECK(ops::renewal_proof_valid(real.get(), "csr", signature_of(real.get(), "csr")));
  CHECK(ERR_peek_error() == 0);
}
