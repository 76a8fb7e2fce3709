#include "ca/csr.h"

#include <catch2/catch.hpp>

#include "tests/ca/fixtures.h"

using namespace onboard;
using namespace onboard::ca;
using namespace onboard::test;

namespace {

// Builds the subject by hand: OpenSSL's usual setters refuse a CN over 64 characters, but a
// device's CSR may come from anywhere.
std::string csr_pem(KeyAlg alg, const std::string& cn) {
  auto key = must(generate_key(alg));
  ossl::Ptr<X509_REQ> req(X509_REQ_new());
  REQUIRE(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", V_ASN1_UTF8STRING,
                                     reinterpret_cast<const unsigned char*>(cn.data()),
                                     static_cast<int>(cn.size()), -1, 0) == 1);
  REQUIRE(X509_REQ_set_pubkey(req.get(), key.get()) == 1);
  REQUIRE(X509_REQ_sign(req.get(), key.get(), signing_digest(key.get())) > 0);
  return csr_to_pem(req.get());
}

}  // namespace

TEST_CASE("a well-formed device CSR yields the device id and the device's public key") {
  auto key = must(generate_key(KeyAlg::p256));
  std::string pem = csr_to_pem(must(make_csr(key.get(), "sensor-001")).get());
  auto csr = must(read_device_csr(pem));
  CHECK(csr.device_id == "sensor-001");
  CHECK(same_public_key(csr.public_key.get(), key.get()));
}

TEST_CASE("CSRs with RSA-2048, P-384 and Ed25519 keys are accepted") {
  for (KeyAlg alg : {KeyAlg::rsa2048, KeyAlg::p384, KeyAlg::ed25519}) {
    CHECK(read_device_csr(csr_pem(alg, "dev")).ok());
  }
}

TEST_CASE("text that is not a CSR is refused as malformed") {
  auto none = read_device_csr("hello");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == Errc::invalid_input);
  CHECK(none.error().message.find("malformed CSR") != std::string::npos);

  auto garbage = read_device_csr(
      "-----BEGIN CERTIFICATE REQUEST-----\nnotbase64!!\n-----END CERTIFICATE REQUEST-----\n");
  REQUIRE_FALSE(garbage.ok());
  CHECK(garbage.error().message.find("malformed CSR") != std::string::npos);
}

TEST_CASE("a CSR whose signature does not match its key is refused") {
  auto key = must(generate_key(KeyAlg::p256));
  auto other = must(generate_key(KeyAlg::p256));
  auto req = must(make_csr(key.get(), "dev"));
  // Sign with a different key: the request claims `key` but was signed by `other`.
  REQUIRE(X509_REQ_sign(req.get(), other.get(), EVP_sha256()) > 0);
  auto result = read_device_csr(csr_to_pem(req.get()));
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().message == "CSR signature does not match its public key");
}

TEST_CASE("a CSR whose CN is not a valid device id is refused with the reason") {
  struct Case {
    std::string cn, reason;
  };
  for (const auto& c : std::vector<Case>{{"a/b", "'/'"},
                                         {"a+b", "'+'"},
                                         {"a#b", "'#'"},
                                         {"a b", "a space"},
                                         {std::string(65, 'a'), "65 characters"}}) {
    INFO(c.cn);
    auto result = read_device_csr(csr_pem(KeyAlg::p256, c.cn));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Errc::invalid_input);
    CHECK(result.error().message.find("not a valid device id") != std::string::npos);
    CHECK(result.error().message.find(c.reason) != std::string::npos);
  }
}

TEST_CASE("a CSR with an RSA-1024 key is refused as too weak") {
  ossl::Ptr<EVP_PKEY> weak(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024}));
  auto result = read_device_csr(csr_to_pem(must(make_csr(weak.get(), "dev")).get()));
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().message.find("too weak") != std::string::npos);
}

TEST_CASE("a CSR on an unaccepted curve is refused") {
  ossl::Ptr<EVP_PKEY> k1(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "secp256k1"));
  auto result = read_device_csr(csr_to_pem(must(make_csr(k1.get(), "dev")).get()));
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().message.find("not accepted") != std::string::npos);
}

TEST_CASE("a CSR without a CN, or with two, is refused") {
  auto key = must(generate_key(KeyAlg::p256));
  ossl::Ptr<X509_REQ> req(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Acme"), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  X509_REQ_sign(req.get(), key.get(), EVP_sha256());
  auto no_cn = read_device_csr(csr_to_pem(req.get()));
  REQUIRE_FALSE(no_cn.ok());
  CHECK(no_cn.error().message.find("no common name") != std::string::npos);

  for (const char* cn : {"dev-a", "dev-b"}) {
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  }
  X509_REQ_sign(req.get(), key.get(), EVP_sha256());
  auto two = read_device_csr(csr_to_pem(req.get()));
  REQUIRE_FALSE(two.ok());
  CHECK(two.error().message.find("more than one") != std::string::npos);
}
