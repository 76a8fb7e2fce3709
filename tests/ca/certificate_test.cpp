#include "ca/certificate.h"

#include <catch2/catch.hpp>
#include <set>

#include "ca/verify.h"
#include "tests/ca/fixtures.h"

using namespace onboard;
using namespace onboard::ca;
using namespace onboard::test;

namespace {

VerifyOutcome verify_at(const X509* leaf, const TestCa& root, UnixTime at,
                        Purpose purpose = Purpose::tls_client, X509* intermediate = nullptr) {
  X509* roots[] = {root.cert.get()};
  std::vector<X509*> chain;
  if (intermediate != nullptr) chain.push_back(intermediate);
  VerifyOptions options;
  options.at = at;
  options.purpose = purpose;
  return verify_certificate(leaf, chain, roots, {}, options);
}

std::string extension_text(const X509* cert, int nid) {
  int index = X509_get_ext_by_NID(cert, nid, -1);
  if (index < 0) return {};
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  X509V3_EXT_print(bio.get(), X509_get_ext(cert, index), 0, 0);
  return ossl::mem_contents(bio.get());
}

}  // namespace

TEST_CASE("a device certificate chains to its root and carries the device profile") {
  auto root = make_root();
  auto leaf = make_device(root, "sensor-001");
  CHECK(verify_at(leaf.cert.get(), root, kNow).ok());

  auto info = describe_certificate(leaf.cert.get());
  CHECK(info.subject_cn == "sensor-001");
  CHECK(info.subject == "CN=sensor-001");
  CHECK(info.issuer == "CN=Test Root");
  CHECK(info.sha256_fingerprint.size() == 64);
  CHECK(X509_get_version(leaf.cert.get()) == X509_VERSION_3);

  CHECK(extension_is_critical(leaf.cert.get(), NID_basic_constraints));
  CHECK(extension_text(leaf.cert.get(), NID_basic_constraints).find("CA:FALSE") !=
        std::string::npos);
  CHECK(extension_is_critical(leaf.cert.get(), NID_key_usage));
  CHECK(extension_text(leaf.cert.get(), NID_key_usage) == "Digital Signature");
  CHECK(extension_text(leaf.cert.get(), NID_ext_key_usage) == "TLS Web Client Authentication");
  CHECK(has_extension(leaf.cert.get(), NID_subject_key_identifier));
  CHECK(has_extension(leaf.cert.get(), NID_authority_key_identifier));
  CHECK_FALSE(has_extension(leaf.cert.get(), NID_crl_distribution_points));
}

TEST_CASE("RSA device certificates also allow key encipherment and are signed with SHA-256") {
  auto root = make_root();
  auto leaf = make_device(root, "rsa-device", KeyAlg::rsa2048);
  CHECK(extension_text(leaf.cert.get(), NID_key_usage) == "Digital Signature, Key Encipherment");
  CHECK(describe_certificate(leaf.cert.get()).key == "RSA-2048");
  CHECK(verify_at(leaf.cert.get(), root, kNow).ok());
}

TEST_CASE("a device certificate is for TLS clients, not servers") {
  auto root = make_root();
  auto leaf = make_device(root, "dev");
  auto outcome = verify_at(leaf.cert.get(), root, kNow, Purpose::tls_server);
  CHECK(outcome.code == X509_V_ERR_INVALID_PURPOSE);
}

TEST_CASE("serial numbers are 128 random bits and differ between certificates") {
  auto root = make_root();
  std::set<std::string> serials;
  for (int i = 0; i < 20; ++i) {
    auto info = describe_certificate(make_device(root, "dev").cert.get());
    CHECK(info.serial_hex.size() >= 30);  // 128 bits; a leading zero nibble is dropped now and then
    CHECK(info.serial_hex.size() <= 32);
    serials.insert(info.serial_hex);
  }
  CHECK(serials.size() == 20);
}

TEST_CASE("an expired device certificate is refused by the verifier") {
  auto root = make_root();
  auto expired = make_device(root, "old", KeyAlg::p256, kNow - 30 * kDay, kNow - kDay);
  CHECK(verify_at(expired.cert.get(), root, kNow).code == X509_V_ERR_CERT_HAS_EXPIRED);
  auto future = make_device(root, "early", KeyAlg::p256, kNow + kDay, kNow + 30 * kDay);
  CHECK(verify_at(future.cert.get(), root, kNow).code == X509_V_ERR_CERT_NOT_YET_VALID);
}

TEST_CASE("a certificate from another CA is refused by the verifier") {
  auto root = make_root("Our Root");
  auto foreign = make_root("Foreign Root");
  auto wrong_issuer = make_device(foreign, "intruder");
  CHECK(verify_at(wrong_issuer.cert.get(), root, kNow).code ==
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

TEST_CASE("a device certificate issued by an intermediate chains through it to the root") {
  auto root = make_root();
  auto issuing = make_intermediate(root);
  auto leaf = make_device(issuing, "dev-7");
  CHECK(verify_at(leaf.cert.get(), root, kNow, Purpose::tls_client, issuing.cert.get()).ok());
  CHECK(verify_at(leaf.cert.get(), root, kNow).code ==
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  CHECK(extension_text(issuing.cert.get(), NID_basic_constraints).find("pathlen:0") !=
        std::string::npos);
  CHECK(extension_text(root.cert.get(), NID_key_usage) == "Certificate Sign, CRL Sign");
}

TEST_CASE("issuance refuses a device certificate whose CN is not a valid device id") {
  auto root = make_root();
  auto key = must(generate_key(KeyAlg::p256));
  for (const char* cn : {"a/b", "a+b", "a#b", "a b", "$SYS"}) {
    INFO(cn);
    auto result = issue_certificate(device_request(cn, key.get()), root.cert.get(), *root.signer);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Errc::invalid_input);
  }
  auto too_long = issue_certificate(device_request(std::string(65, 'x'), key.get()),
                                    root.cert.get(), *root.signer);
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.error().message.find("limit is 64") != std::string::npos);
}

TEST_CASE("issuance refuses an empty validity and one that outlives the issuing CA") {
  auto root = make_root();
  auto key = must(generate_key(KeyAlg::p256));
  auto empty =
      issue_certificate(device_request("d", key.get(), kNow, kNow), root.cert.get(), *root.signer);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().message == "the validity period is empty");
  auto too_long = issue_certificate(device_request("d", key.get(), kNow, kNow + 20000 * kDay),
                                    root.cert.get(), *root.signer);
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.error().message.find("outlive its issuing CA") != std::string::npos);
}

TEST_CASE("issuance refuses a signer whose key is not the issuer's") {
  auto root = make_root();
  auto other = make_root("Other");
  auto key = must(generate_key(KeyAlg::p256));
  auto result = issue_certificate(device_request("d", key.get()), root.cert.get(), *other.signer);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().message.find("does not belong") != std::string::npos);
}

TEST_CASE("a server certificate carries its DNS names and IP addresses and is for TLS servers") {
  auto root = make_root();
  auto key = must(generate_key(KeyAlg::p256));
  CertificateRequest request;
  request.profile = Profile::server;
  request.common_name = "broker.example.com";
  request.public_key = key.get();
  request.not_before = kNow - kDay;
  request.not_after = kNow + 100 * kDay;
  request.dns_names = {"broker.example.com", "localhost"};
  request.ip_addresses = {"127.0.0.1", "::1"};
  auto cert = must(issue_certificate(request, root.cert.get(), *root.signer));
  CHECK(extension_text(cert.get(), NID_subject_alt_name) ==
        "DNS:broker.example.com, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
  CHECK(extension_text(cert.get(), NID_ext_key_usage) == "TLS Web Server Authentication");
  CHECK(verify_at(cert.get(), root, kNow, Purpose::tls_server).ok());
  CHECK(X509_check_host(cert.get(), "localhost", 0, 0, nullptr) == 1);
  CHECK(X509_check_ip_asc(cert.get(), "127.0.0.1", 0) == 1);
}

TEST_CASE("a server certificate refuses names that could smuggle in other entries") {
  auto root = make_root();
  auto key = must(generate_key(KeyAlg::p256));
  CertificateRequest request;
  request.profile = Profile::server;
  request.common_name = "broker";
  request.public_key = key.get();
  request.not_before = kNow - kDay;
  request.not_after = kNow + 100 * kDay;
  request.dns_names = {"evil.com,IP:10.0.0.1"};
  CHECK_FALSE(issue_certificate(request, root.cert.get(), *root.signer).ok());
  request.dns_names = {};
  request.ip_addresses = {"300.1.1.1"};
  CHECK_FALSE(issue_certificate(request, root.cert.get(), *root.signer).ok());
  request.ip_addresses = {};
  auto none = issue_certificate(request, root.cert.get(), *root.signer);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().message.find("at least one DNS name or IP address") != std::string::npos);
}

TEST_CASE(
    "a CRL distribution point URL is written into the certificate, and a bad one is refused") {
  auto root = make_root();
  auto key = must(generate_key(KeyAlg::p256));
  auto request = device_request("dev", key.get());
  request.crl_url = "http://127.0.0.1:8080/crl";
  auto cert = must(issue_certificate(request, root.cert.get(), *root.signer));
  CHECK(extension_text(cert.get(), NID_crl_distribution_points)
            .find("URI:http://127.0.0.1:8080/crl") != std::string::npos);
  request.crl_url = "http://a/crl,URI:http://evil/";
  CHECK_FALSE(issue_certificate(request, root.cert.get(), *root.signer).ok());
  request.crl_url = "ftp://a/crl";
  CHECK_FALSE(issue_certificate(request, root.cert.get(), *root.signer).ok());
}

TEST_CASE("certificates round-trip through PEM") {
  auto root = make_root();
  auto leaf = make_device(root, "dev");
  std::string pem = certificate_to_pem(leaf.cert.get());
  auto back = must(certificate_from_pem(pem));
  CHECK(X509_cmp(back.get(), leaf.cert.get()) == 0);
  auto both = must(certificates_from_pem(pem + certificate_to_pem(root.cert.get())));
  CHECK(both.size() == 2);
  CHECK_FALSE(certificate_from_pem("not a certificate").ok());
  CHECK_FALSE(certificates_from_pem("").ok());
}

TEST_CASE("Ed25519 and P-384 CAs issue certificates that verify") {
  for (KeyAlg alg : {KeyAlg::ed25519, KeyAlg::p384}) {
    auto root = make_root("Root", alg);
    auto leaf = make_device(root, "dev", alg);
    CHECK(verify_at(leaf.cert.get(), root, kNow).ok());
  }
}
