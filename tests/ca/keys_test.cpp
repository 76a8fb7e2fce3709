#include "ca/keys.h"

#include <catch2/catch.hpp>

#include "tests/ca/fixtures.h"

using namespace onboard;
using namespace onboard::ca;
using onboard::test::must;

TEST_CASE("every key algorithm name parses and names itself back") {
  for (const char* name : {"rsa2048", "rsa3072", "rsa4096", "p256", "p384", "ed25519"}) {
    auto alg = parse_key_alg(name);
    REQUIRE(alg.has_value());
    CHECK(key_alg_name(*alg) == name);
  }
  CHECK_FALSE(parse_key_alg("rsa1024").has_value());
  CHECK_FALSE(parse_key_alg("P256").has_value());
}

TEST_CASE("generated keys have the requested type and size") {
  CHECK(describe_key(must(generate_key(KeyAlg::p256)).get()) == "EC P-256");
  CHECK(describe_key(must(generate_key(KeyAlg::p384)).get()) == "EC P-384");
  CHECK(describe_key(must(generate_key(KeyAlg::ed25519)).get()) == "Ed25519");
  CHECK(describe_key(must(generate_key(KeyAlg::rsa2048)).get()) == "RSA-2048");
}

TEST_CASE("RSA keys under 2048 bits are refused as too weak") {
  ossl::Ptr<EVP_PKEY> weak(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024}));
  REQUIRE(weak);
  auto status = check_acceptable_key(weak.get());
  REQUIRE_FALSE(status.ok());
  CHECK(status.error().code == Errc::invalid_input);
  CHECK(status.error().message.find("1024 bits is too weak") != std::string::npos);
}

TEST_CASE("EC keys on curves other than P-256 and P-384 are refused") {
  ossl::Ptr<EVP_PKEY> k1(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "secp256k1"));
  REQUIRE(k1);
  auto status = check_acceptable_key(k1.get());
  REQUIRE_FALSE(status.ok());
  CHECK(status.error().message.find("secp256k1") != std::string::npos);
  CHECK(check_acceptable_key(must(generate_key(KeyAlg::p384)).get()).ok());
}

TEST_CASE("a private key written with a passphrase reads back only with that passphrase") {
  auto key = must(generate_key(KeyAlg::p256));
  Secret passphrase("correct horse battery staple");
  Secret pem = must(private_key_to_pem(key.get(), &passphrase));
  CHECK(pem.view().find("BEGIN ENCRYPTED PRIVATE KEY") != std::string_view::npos);

  auto back = must(private_key_from_pem(pem.view(), &passphrase));
  CHECK(same_public_key(back.get(), key.get()));

  Secret wrong("Tr0ub4dor&3");
  auto bad = private_key_from_pem(pem.view(), &wrong);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == Errc::bad_passphrase);
  CHECK(bad.error().message == "wrong passphrase for the private key");

  auto none = private_key_from_pem(pem.view(), nullptr);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == Errc::bad_passphrase);
  CHECK(none.error().message.find("no passphrase") != std::string::npos);
}

TEST_CASE("a private key without a passphrase is plain PKCS#8") {
  auto key = must(generate_key(KeyAlg::ed25519));
  Secret pem = must(private_key_to_pem(key.get()));
  CHECK(pem.view().starts_with("-----BEGIN PRIVATE KEY-----"));
  CHECK(same_public_key(must(private_key_from_pem(pem.view())).get(), key.get()));
}

TEST_CASE("text that is not a PEM key is refused as invalid input") {
  auto bad = private_key_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == Errc::invalid_input);
}

TEST_CASE("P-384 keys sign with SHA-384, Ed25519 with no separate digest, others with SHA-256") {
  CHECK(signing_digest(must(generate_key(KeyAlg::p384)).get()) == EVP_sha384());
  CHECK(signing_digest(must(generate_key(KeyAlg::p256)).get()) == EVP_sha256());
  CHECK(signing_digest(must(generate_key(KeyAlg::ed25519)).get()) == nullptr);
}
