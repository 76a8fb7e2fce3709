// The pure parts of the OCSP responder: request parsing, certificate ID matching, the signed
// response, the responder certificate's profile and the OCSP URL in issued certificates. The
// responder over HTTP, with openssl ocsp and ocsptool, is tests/rest/ocsp_test.cpp.
#include "ca/ocsp.h"

#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <catch2/catch.hpp>

#include "ca/authority.h"
#include "core/encoding.h"
#include "core/x509.h"
#include "tests/ca/fixtures.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using namespace onboard::test;

namespace {

CaInitOptions fast_options() {
  CaInitOptions options;
  options.root_key_alg = KeyAlg::p256;
  options.intermediate_key_alg = KeyAlg::p256;
  return options;
}

// A request as OpenSSL's client builds it: one CertID per certificate, optionally a nonce.
std::string request_der(const std::vector<std::pair<const X509*, const X509*>>& subjects_issuers,
                        const EVP_MD* md = EVP_sha1(), bool nonce = false) {
  ossl::Ptr<OCSP_REQUEST> req(OCSP_REQUEST_new());
  REQUIRE(req);
  for (const auto& [subject, issuer] : subjects_issuers) {
    OCSP_CERTID* id = OCSP_cert_to_id(md, subject, issuer);
    REQUIRE(id != nullptr);
    REQUIRE(OCSP_request_add0_id(req.get(), id) != nullptr);
  }
  if (nonce) REQUIRE(OCSP_request_add1_nonce(req.get(), nullptr, 16) == 1);
  unsigned char* der = nullptr;
  const int len = i2d_OCSP_REQUEST(req.get(), &der);
  REQUIRE(len > 0);
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

ossl::Ptr<OCSP_RESPONSE> response_from(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ossl::Ptr<OCSP_RESPONSE> response(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
  REQUIRE(response);
  return response;
}

}  // namespace

TEST_CASE("an OCSP request parses to its certificate IDs which match their issuer only") {
  auto root = make_root("Root A");
  auto other = make_root("Root B");
  auto leaf = make_device(root, "sensor-1");
  const auto der =
      request_der({{leaf.cert.get(), root.cert.get()}, {leaf.cert.get(), other.cert.get()}});
  auto parsed = must(parse_ocsp_request(der));
  REQUIRE(parsed.ids.size() == 2);
  CHECK(parsed.ids[0].serial_hex == serial_hex(leaf.cert.get()));
  CHECK(ocsp_id_matches_issuer(parsed.ids[0], root.cert.get()));
  CHECK_FALSE(ocsp_id_matches_issuer(parsed.ids[0], other.cert.get()));
  // OpenSSL names the leaf's issuer (Root A) with Root B's key: the key hash tells them apart.
  CHECK_FALSE(ocsp_id_matches_issuer(parsed.ids[1], other.cert.get()));
  CHECK_FALSE(ocsp_id_matches_issuer(parsed.ids[1], root.cert.get()));
  auto from_b = must(parse_ocsp_request(request_der({{other.cert.get(), other.cert.get()}})));
  CHECK(ocsp_id_matches_issuer(from_b.ids[0], other.cert.get()));
  CHECK_FALSE(ocsp_id_matches_issuer(from_b.ids[0], root.cert.get()));

  // SHA-256 CertIDs as well as the usual SHA-1.
  auto sha256 =
      must(parse_ocsp_request(request_der({{leaf.cert.get(), root.cert.get()}}, EVP_sha256())));
  REQUIRE(sha256.ids.size() == 1);
  CHECK(ocsp_id_matches_issuer(sha256.ids[0], root.cert.get()));
  CHECK_FALSE(ocsp_id_matches_issuer(sha256.ids[0], other.cert.get()));
  // A hash this responder does not compute names no issuer of ours.
  auto md5 = must(parse_ocsp_request(request_der({{leaf.cert.get(), root.cert.get()}}, EVP_md5())));
  REQUIRE(md5.ids.size() == 1);
  CHECK(md5.ids[0].hash == nullptr);
  CHECK_FALSE(ocsp_id_matches_issuer(md5.ids[0], root.cert.get()));
}

TEST_CASE("malformed OCSP requests are refused and a valid one beside them is not") {
  auto root = make_root();
  auto leaf = make_device(root, "sensor-1");
  const auto good = request_der({{leaf.cert.get(), root.cert.get()}});
  REQUIRE(parse_ocsp_request(good).ok());  // the positive control

  auto refused = [](std::string_view der) {
    auto r = parse_ocsp_request(der);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_input);
    return r.error().message;
  };
  CHECK(refused("") == "empty OCSP request");
  CHECK(refused("not DER at all") == "not a DER OCSP request");
  CHECK(refused(good.substr(0, good.size() - 1)) == "not a DER OCSP request");
  CHECK(refused(good + '\0') == "bytes after the OCSP request");
  CHECK(refused(std::string(kMaxOcspRequestBytes + 1, '\x30')).find("larger than") !=
        std::string::npos);
  // SEQUENCE { SEQUENCE { SEQUENCE OF {} } }: a TBSRequest naming no certificate.
  CHECK(refused(std::string("\x30\x04\x30\x02\x30\x00", 6)) ==
        "the OCSP request names no certificate");
  // Found by the fuzz target: a certificate ID whose hash algorithm has parameters of universal
  // tag 0, which OpenSSL reads but cannot encode again, so no answer could be signed for it.
  const std::string unwritable_parameters(
      "\x30\x51\x30\x4f\x30\x4d\x30\x4b\x30\x49\x30\x09\x06\x05\x2b\x0e\x01\x00\x00\x20\x00\x04"
      "\x14\x26\xe7\x0d\xea\xfb\xd9\x7e\x3b\x76\xce\xea\xb3\xfd\x95\x27\xac\x71\x6c\x9b\xa0\x04"
      "\x14\x03\xd8\x3b\xab\xf0\x75\x10\xdf\xa9\x46\x5f\xc4\xd8\x9b\x03\x30\x60\x00\x00\xc0\x02"
      "\x10\xd0\x0f\xfd\x82\xc3\x62\x61\xdc\xf8\xf8\x6f\x26\x17\x28\xd8\xc8",
      83);
  CHECK(refused(unwritable_parameters) == "the OCSP request is not in DER");
  std::vector<std::pair<const X509*, const X509*>> many(kMaxOcspRequestIds + 1,
                                                        {leaf.cert.get(), root.cert.get()});
  CHECK(refused(request_der(many)).find("more than 16") != std::string::npos);
  many.pop_back();
  CHECK(must(parse_ocsp_request(request_der(many))).ids.size() == kMaxOcspRequestIds);
}

TEST_CASE("a GET path decodes from standard base64 with or without padding and from base64url") {
  // Bytes whose base64 has '+' and '/' (base64url '-' and '_') and needs padding.
  const std::string bytes("\xfb\xff\xfe\x01\x02", 5);
  const std::string standard = base64_encode(bytes);
  REQUIRE(standard == "+//+AQI=");
  CHECK(decode_ocsp_get_path(standard) == bytes);
  CHECK(decode_ocsp_get_path("+//+AQI") == bytes);
  CHECK(decode_ocsp_get_path("-__-AQI") == bytes);
  CHECK_FALSE(decode_ocsp_get_path("+//+AQI*").has_value());
  CHECK_FALSE(decode_ocsp_get_path("").has_value());
  CHECK_FALSE(decode_ocsp_get_path("A").has_value());
  CHECK_FALSE(decode_ocsp_get_path(std::string(kMaxOcspRequestBytes * 2, 'A')).has_value());
}

TEST_CASE("error responses carry their status and nothing else") {
  auto malformed = response_from(ocsp_error_response(OcspError::malformed_request));
  CHECK(OCSP_response_status(malformed.get()) == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  CHECK(OCSP_response_get1_basic(malformed.get()) == nullptr);
  ossl::clear_errors();
  auto later = response_from(ocsp_error_response(OcspError::try_later));
  CHECK(OCSP_response_status(later.get()) == OCSP_RESPONSE_STATUS_TRYLATER);
}

TEST_CASE("a responder certificate is delegated by the issuing CA and its answers verify") {
  TempDir dir;
  auto options = fast_options();
  options.intermediate = true;
  auto authority = must(Authority::create(dir.path(), options, unix_now()));
  const UnixTime now = unix_now();
  auto responder = must(issue_ocsp_responder(authority.issuer(), *authority.signer(), now, 7));

  // The profile: issued by the issuing CA (not the root), OCSPSigning, nocheck, not a CA.
  CHECK(X509_check_issued(const_cast<X509*>(authority.issuer()), responder.cert.get()) ==
        X509_V_OK);
  CHECK((X509_get_extended_key_usage(responder.cert.get()) & XKU_OCSP_SIGN) != 0);
  CHECK(has_extension(responder.cert.get(), NID_id_pkix_OCSP_noCheck));
  CHECK(X509_check_ca(responder.cert.get()) == 0);
  CHECK(*to_unix_time(X509_get0_notAfter(responder.cert.get())) == now + 7 * kDay);

  auto good_key = must(generate_key(KeyAlg::p256));
  auto good = must(authority.issue(device_request("good-1", good_key.get(), now - 60, now + kDay)));
  auto bad = must(authority.issue(device_request("bad-1", good_key.get(), now - 60, now + kDay)));
  auto parsed = must(parse_ocsp_request(request_der(
      {{good.cert.get(), authority.issuer()}, {bad.cert.get(), authority.issuer()}}, EVP_sha1(),
      /*nonce=*/true)));
  const UnixTime revoked_at = now - 3600;
  const OcspAnswer answers[] = {
      {OcspStatus::good, 0, RevocationReason::unspecified},
      {OcspStatus::revoked, revoked_at, RevocationReason::key_compromise}};
  auto der = must(build_ocsp_response(parsed, answers, responder, now, now + 3600));

  auto response = response_from(der);
  REQUIRE(OCSP_response_status(response.get()) == OCSP_RESPONSE_STATUS_SUCCESSFUL);
  ossl::Ptr<OCSP_BASICRESP> basic(OCSP_response_get1_basic(response.get()));
  REQUIRE(basic);
  // Verifies the way a client does: the responder's certificate comes with the answer and chains
  // to the trusted root through the issuing CA, which delegated OCSPSigning to it.
  ossl::Ptr<X509_STORE> trust(X509_STORE_new());
  REQUIRE(X509_STORE_add_cert(trust.get(), const_cast<X509*>(authority.root())) == 1);
  ossl::Ptr<STACK_OF(X509)> chain(sk_X509_new_null());
  X509_up_ref(const_cast<X509*>(authority.issuer()));
  sk_X509_push(chain.get(), const_cast<X509*>(authority.issuer()));
  CHECK(OCSP_basic_verify(basic.get(), chain.get(), trust.get(), 0) == 1);
  CHECK(OCSP_check_nonce(parsed.request.get(), basic.get()) == 1);

  auto status_of = [&](const X509* cert, int& reason, UnixTime& when) {
    ossl::Ptr<OCSP_CERTID> id(OCSP_cert_to_id(EVP_sha1(), cert, authority.issuer()));
    int status = -1;
    ASN1_GENERALIZEDTIME *rev = nullptr, *this_upd = nullptr, *next_upd = nullptr;
    REQUIRE(OCSP_resp_find_status(basic.get(), id.get(), &status, &reason, &rev, &this_upd,
                                  &next_upd) == 1);
    CHECK(to_unix_time(this_upd) == now);
    CHECK(to_unix_time(next_upd) == now + 3600);
    when = rev != nullptr ? to_unix_time(rev).value_or(-1) : 0;
    return status;
  };
  int reason = 0;
  UnixTime when = 0;
  CHECK(status_of(good.cert.get(), reason, when) == V_OCSP_CERTSTATUS_GOOD);
  CHECK(status_of(bad.cert.get(), reason, when) == V_OCSP_CERTSTATUS_REVOKED);
  CHECK(reason == OCSP_REVOKED_STATUS_KEYCOMPROMISE);
  CHECK(when == revoked_at);

  // Without a nonce in the request, none in the answer.
  auto plain = must(parse_ocsp_request(request_der({{good.cert.get(), authority.issuer()}})));
  const OcspAnswer one[] = {{OcspStatus::good, 0, RevocationReason::unspecified}};
  auto plain_response =
      response_from(must(build_ocsp_response(plain, one, responder, now, now + 60)));
  ossl::Ptr<OCSP_BASICRESP> plain_basic(OCSP_response_get1_basic(plain_response.get()));
  REQUIRE(plain_basic);
  CHECK(OCSP_BASICRESP_get_ext_by_NID(plain_basic.get(), NID_id_pkix_OCSP_Nonce, -1) < 0);
}

TEST_CASE("the OCSP URL goes into certificates issued after it is set and out after removal") {
  TempDir dir;
  auto options = fast_options();
  options.ocsp_url = "http://ca.example:8443/ocsp";
  auto key = must(generate_key(KeyAlg::p256));
  const UnixTime now = unix_now();
  auto ocsp_urls = [](const X509* cert) {
    std::vector<std::string> urls;
    STACK_OF(OPENSSL_STRING)* list = X509_get1_ocsp(const_cast<X509*>(cert));
    for (int i = 0; i < sk_OPENSSL_STRING_num(list); ++i)
      urls.emplace_back(sk_OPENSSL_STRING_value(list, i));
    X509_email_free(list);
    return urls;
  };
  {
    auto ca = must(Authority::create(dir.path(), options, now));
    auto issued = must(ca.issue(device_request("aia-1", key.get(), now - 60, now + kDay)));
    CHECK(ocsp_urls(issued.cert.get()) == std::vector<std::string>{"http://ca.example:8443/ocsp"});
    CHECK(ocsp_urls(ca.root()).empty());  // nobody answers for the root itself
  }
  must(Authority::set_ocsp_url(dir.path(), "https://other.example/ocsp"));
  {
    auto ca = must(Authority::open(dir.path()));
    must(ca.load_signing_key(nullptr));
    CHECK(ca.crl_url().empty());  // other settings kept
    auto issued = must(ca.issue(device_request("aia-2", key.get(), now - 60, now + kDay)));
    CHECK(ocsp_urls(issued.cert.get()) == std::vector<std::string>{"https://other.example/ocsp"});
  }
  must(Authority::set_ocsp_url(dir.path(), ""));
  {
    auto ca = must(Authority::open(dir.path()));
    must(ca.load_signing_key(nullptr));
    auto issued = must(ca.issue(device_request("aia-3", key.get(), now - 60, now + kDay)));
    CHECK(ocsp_urls(issued.cert.get()).empty());
    CHECK_FALSE(has_extension(issued.cert.get(), NID_info_access));
  }
  auto refused = Authority::set_ocsp_url(dir.path(), "ftp://ca.example/ocsp");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == Errc::invalid_input);
  CHECK(refused.error().message == "OCSP URL must start with http:// or https://");
}
