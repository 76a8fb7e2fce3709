#include "ca/crl.h"

#include <catch2/catch.hpp>

#include "ca/verify.h"
#include "tests/ca/fixtures.h"

using namespace onboard;
using namespace onboard::ca;
using namespace onboard::test;

namespace {

CrlParams params(std::uint64_t number) { return CrlParams{number, kNow, kNow + 7 * kDay}; }

VerifyOutcome verify_with_crl(const X509* leaf, const TestCa& root, X509_CRL* crl,
                              UnixTime at = kNow) {
  X509* roots[] = {root.cert.get()};
  X509_CRL* crls[] = {crl};
  VerifyOptions options;
  options.at = at;
  options.purpose = Purpose::tls_client;
  options.check_crl = true;
  return verify_certificate(leaf, {}, roots, crls, options);
}

}  // namespace

TEST_CASE(
    "a revoked device certificate is refused with the revocation error, others still verify") {
  auto root = make_root();
  auto good = make_device(root, "leaf-good");
  auto revoked = make_device(root, "leaf-revoked");
  RevokedEntry entry{describe_certificate(revoked.cert.get()).serial_hex, kNow - 60,
                     RevocationReason::key_compromise};
  auto crl = must(build_crl(root.cert.get(), *root.signer, {&entry, 1}, params(1)));

  CHECK(verify_with_crl(good.cert.get(), root, crl.get()).ok());
  auto outcome = verify_with_crl(revoked.cert.get(), root, crl.get());
  CHECK(outcome.code == X509_V_ERR_CERT_REVOKED);
  CHECK(outcome.message == "certificate revoked");
}

TEST_CASE("a CRL carries its number, its issuer's key id, its dates and each entry's reason") {
  auto root = make_root();
  std::vector<RevokedEntry> entries{{"0A", kNow - 100, RevocationReason::superseded},
                                    {"01", kNow - 200, RevocationReason::unspecified}};
  auto crl = must(build_crl(root.cert.get(), *root.signer, entries, params(42)));

  CHECK(X509_CRL_get_version(crl.get()) == X509_CRL_VERSION_2);
  ossl::Ptr<ASN1_INTEGER> number(static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr)));
  REQUIRE(number);
  CHECK(ASN1_INTEGER_get(number.get()) == 42);
  CHECK(X509_CRL_get_ext_by_NID(crl.get(), NID_authority_key_identifier, -1) >= 0);
  CHECK(to_unix_time(X509_CRL_get0_lastUpdate(crl.get())) == kNow);
  CHECK(to_unix_time(X509_CRL_get0_nextUpdate(crl.get())) == kNow + 7 * kDay);
  CHECK(X509_CRL_verify(crl.get(), X509_get0_pubkey(root.cert.get())) == 1);

  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  REQUIRE(sk_X509_REVOKED_num(revoked) == 2);
  // Sorted by serial: 01 first, and an unspecified reason is left out as RFC 5280 asks.
  const X509_REVOKED* first = sk_X509_REVOKED_value(revoked, 0);
  const X509_REVOKED* second = sk_X509_REVOKED_value(revoked, 1);
  CHECK(ASN1_INTEGER_get(X509_REVOKED_get0_serialNumber(first)) == 1);
  CHECK(X509_REVOKED_get_ext_by_NID(first, NID_crl_reason, -1) < 0);
  ossl::Ptr<ASN1_ENUMERATED> reason(static_cast<ASN1_ENUMERATED*>(
      X509_REVOKED_get_ext_d2i(second, NID_crl_reason, nullptr, nullptr)));
  REQUIRE(reason);
  CHECK(ASN1_ENUMERATED_get(reason.get()) == 4);  // superseded
  CHECK(to_unix_time(X509_REVOKED_get0_revocationDate(second)) == kNow - 100);
}

TEST_CASE("an empty CRL is valid and revokes nothing") {
  auto root = make_root();
  auto leaf = make_device(root, "dev");
  auto crl = must(build_crl(root.cert.get(), *root.signer, {}, params(1)));
  CHECK(verify_with_crl(leaf.cert.get(), root, crl.get()).ok());
}

TEST_CASE("a CRL past its next update makes verification with CRL checking fail") {
  auto root = make_root();
  auto leaf = make_device(root, "dev");
  auto crl = must(build_crl(root.cert.get(), *root.signer, {}, params(1)));
  CHECK(verify_with_crl(leaf.cert.get(), root, crl.get(), kNow + 8 * kDay).code ==
        X509_V_ERR_CRL_HAS_EXPIRED);
}

TEST_CASE("a CRL from another CA does not count for this one") {
  auto root = make_root("Our Root");
  auto foreign = make_root("Foreign Root");
  auto leaf = make_device(root, "dev");
  auto crl = must(build_crl(foreign.cert.get(), *foreign.signer, {}, params(1)));
  CHECK(verify_with_crl(leaf.cert.get(), root, crl.get()).code == X509_V_ERR_UNABLE_TO_GET_CRL);
}

TEST_CASE("CRL building refuses bad serials, inverted dates and a foreign signing key") {
  auto root = make_root();
  auto other = make_root("Other");
  RevokedEntry bad{"XYZ", kNow, RevocationReason::unspecified};
  auto bad_serial = build_crl(root.cert.get(), *root.signer, {&bad, 1}, params(1));
  REQUIRE_FALSE(bad_serial.ok());
  CHECK(bad_serial.error().message == "bad serial number 'XYZ'");
  CHECK_FALSE(build_crl(root.cert.get(), *root.signer, {}, CrlParams{1, kNow, kNow}).ok());
  CHECK_FALSE(build_crl(root.cert.get(), *other.signer, {}, params(1)).ok());
}

TEST_CASE("a CRL round-trips through PEM and DER") {
  auto root = make_root();
  auto crl = must(build_crl(root.cert.get(), *root.signer, {}, params(7)));
  std::string pem = crl_to_pem(crl.get());
  CHECK(pem.starts_with("-----BEGIN X509 CRL-----"));
  auto back = must(crl_from_pem(pem));
  CHECK(crl_to_der(back.get()) == crl_to_der(crl.get()));
  CHECK_FALSE(crl_from_pem("nope").ok());
}

TEST_CASE("revocation reason names parse and name themselves back") {
  for (const char* name : {"unspecified", "keyCompromise", "caCompromise", "affiliationChanged",
                           "superseded", "cessationOfOperation", "privilegeWithdrawn"}) {
    auto reason = parse_revocation_reason(name);
    REQUIRE(reason.has_value());
    CHECK(revocation_reason_name(*reason) == name);
  }
  CHECK_FALSE(parse_revocation_reason("certificateHold").has_value());
}
