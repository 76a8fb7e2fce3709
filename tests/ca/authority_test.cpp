#include "ca/authority.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <openssl/x509v3.h>

#include "ca/crl.h"
#include "ca/verify.h"
#include "core/files.h"
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

IssuedCertificate issue_device(const Authority& ca, const std::string& id) {
  auto key = must(generate_key(KeyAlg::p256));
  const UnixTime now = unix_now();
  return must(ca.issue(device_request(id, key.get(), now - 60, now + 30 * kDay)));
}

}  // namespace

TEST_CASE("a new CA keeps its key 0600 and its certificate readable, and reopens with its key") {
  TempDir dir;
  auto ca = must(Authority::create(dir.path(), fast_options(), unix_now()));
  CHECK(mode_of(ca.paths().root_key) == 0600);
  CHECK(mode_of(ca.paths().root_cert) == 0644);
  CHECK(ca.can_sign());

  auto reopened = must(Authority::open(dir.path()));
  CHECK_FALSE(reopened.can_sign());
  must(reopened.load_signing_key(nullptr));
  auto issued = issue_device(reopened, "dev-1");
  X509* roots[] = {const_cast<X509*>(reopened.root())};
  CHECK(verify_certificate(issued.cert.get(), {}, roots, {}, {}).ok());
}

TEST_CASE("creating a CA where one exists is refused and leaves the existing CA intact") {
  TempDir dir;
  auto first = must(Authority::create(dir.path(), fast_options(), unix_now()));
  std::string before = read_file(first.paths().root_key).value();
  auto second = Authority::create(dir.path(), fast_options(), unix_now());
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == Errc::conflict);
  CHECK(second.error().message.find("already initialised") != std::string::npos);
  CHECK(read_file(first.paths().root_key).value() == before);
}

TEST_CASE("a CA with an intermediate signs devices with the intermediate and chains to the root") {
  TempDir dir;
  auto options = fast_options();
  options.intermediate = true;
  auto ca = must(Authority::create(dir.path(), options, unix_now()));
  CHECK(ca.has_intermediate());
  CHECK(mode_of(ca.paths().issuing_key) == 0600);
  auto issued = issue_device(ca, "dev-2");
  CHECK(issued.info.issuer == "CN=mosquitto-onboard Issuing CA");
  X509* roots[] = {const_cast<X509*>(ca.root())};
  X509* chain[] = {const_cast<X509*>(ca.issuer())};
  CHECK(verify_certificate(issued.cert.get(), chain, roots, {}, {}).ok());
  auto pems = must(certificates_from_pem(ca.chain_pem()));
  CHECK(pems.size() == 2);

  auto reopened = must(Authority::open(dir.path()));
  must(reopened.load_signing_key(nullptr));
  CHECK(issue_device(reopened, "dev-3").info.issuer == "CN=mosquitto-onboard Issuing CA");
}

TEST_CASE("an encrypted CA key opens only with its passphrase") {
  TempDir dir;
  Secret passphrase("a long passphrase for the CA");
  auto options = fast_options();
  options.passphrase = &passphrase;
  auto ca = must(Authority::create(dir.path(), options, unix_now()));
  CHECK(read_file(ca.paths().root_key).value().find("ENCRYPTED") != std::string::npos);

  auto reopened = must(Authority::open(dir.path()));
  auto none = reopened.load_signing_key(nullptr);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == Errc::bad_passphrase);
  CHECK(none.error().message.find("--passphrase-env") != std::string::npos);
  Secret wrong("not it");
  auto bad = reopened.load_signing_key(&wrong);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == Errc::bad_passphrase);
  CHECK(reopened.load_signing_key(&passphrase).ok());
}

TEST_CASE("opening a missing CA says to initialise one") {
  TempDir dir;
  auto result = Authority::open(dir.path());
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == Errc::not_found);
  CHECK(result.error().message.find("onboardctl ca init") != std::string::npos);
}

TEST_CASE("a damaged CA certificate or settings file is reported as corrupt") {
  TempDir dir;
  auto ca = must(Authority::create(dir.path(), fast_options(), unix_now()));
  REQUIRE(write_file_atomic(ca.paths().settings, "{not json", 0644, Overwrite::replace).ok());
  auto bad_settings = Authority::open(dir.path());
  REQUIRE_FALSE(bad_settings.ok());
  CHECK(bad_settings.error().code == Errc::corrupt);
  REQUIRE(write_file_atomic(ca.paths().root_cert, "garbage", 0644, Overwrite::replace).ok());
  auto bad_cert = Authority::open(dir.path());
  REQUIRE_FALSE(bad_cert.ok());
  CHECK(bad_cert.error().code == Errc::corrupt);
}

TEST_CASE("a CA key file that does not match the CA certificate is refused") {
  TempDir a, b;
  auto ca_a = must(Authority::create(a.path(), fast_options(), unix_now()));
  auto ca_b = must(Authority::create(b.path(), fast_options(), unix_now()));
  std::filesystem::copy_file(ca_b.paths().root_key, ca_a.paths().root_key,
                             std::filesystem::copy_options::overwrite_existing);
  auto reopened = must(Authority::open(a.path()));
  auto status = reopened.load_signing_key(nullptr);
  REQUIRE_FALSE(status.ok());
  CHECK(status.error().message.find("does not hold the key") != std::string::npos);
}

TEST_CASE("the configured CRL URL goes into issued certificates") {
  TempDir dir;
  auto options = fast_options();
  options.crl_url = "http://127.0.0.1:8443/crl";
  must(Authority::create(dir.path(), options, unix_now()));
  auto ca = must(Authority::open(dir.path()));
  CHECK(ca.crl_url() == "http://127.0.0.1:8443/crl");
  must(ca.load_signing_key(nullptr));
  CHECK(has_extension(issue_device(ca, "dev").cert.get(), NID_crl_distribution_points));
}

TEST_CASE("CA creation refuses a bad CRL URL and writes nothing") {
  TempDir dir;
  auto options = fast_options();
  options.crl_url = "not a url";
  auto result = Authority::create(dir.path(), options, unix_now());
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == Errc::invalid_input);
  CHECK_FALSE(std::filesystem::exists(dir / "ca" / "root.key"));
}

TEST_CASE("the root CRL URL is derived from the CRL URL's last path segment") {
  CHECK(derived_root_crl_url("http://127.0.0.1:8443/crl") == "http://127.0.0.1:8443/root-crl");
  CHECK(derived_root_crl_url("https://ca.example/pki/crl.pem") ==
        "https://ca.example/pki/root-crl.pem");
  CHECK(derived_root_crl_url("http://ca.example") == "http://ca.example/root-crl");
  CHECK(derived_root_crl_url("http://ca.example/") == "http://ca.example/root-crl");
  CHECK(derived_root_crl_url("").empty());
}

TEST_CASE("an intermediate names the root CRL URL and devices the CRL URL") {
  TempDir dir;
  auto options = fast_options();
  options.intermediate = true;
  options.crl_url = "http://127.0.0.1:8443/crl";
  must(Authority::create(dir.path(), options, unix_now()));
  auto ca = must(Authority::open(dir.path()));
  CHECK(ca.root_crl_url() == "http://127.0.0.1:8443/root-crl");  // kept in ca.json
  auto* points = static_cast<CRL_DIST_POINTS*>(
      X509_get_ext_d2i(ca.issuer(), NID_crl_distribution_points, nullptr, nullptr));
  REQUIRE(points != nullptr);
  const DIST_POINT* point = sk_DIST_POINT_value(points, 0);
  const GENERAL_NAME* name = sk_GENERAL_NAME_value(point->distpoint->name.fullname, 0);
  const auto* uri = name->d.uniformResourceIdentifier;
  CHECK(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                    static_cast<std::size_t>(ASN1_STRING_length(uri))) ==
        "http://127.0.0.1:8443/root-crl");
  CRL_DIST_POINTS_free(points);
  // The root's key signs the root CRL; it is the root's, not the intermediate's.
  auto signer = must(ca.load_root_signer(nullptr));
  must(ca.load_signing_key(nullptr));
  auto crl = must(build_crl(ca.root(), *signer, {}, CrlParams{1, unix_now(), unix_now() + kDay}));
  ossl::Ptr<EVP_PKEY> root_key(X509_get_pubkey(const_cast<X509*>(ca.root())));
  CHECK(X509_CRL_verify(crl.get(), root_key.get()) == 1);

  std::filesystem::remove(ca.paths().root_key);  // kept offline
  auto offline = ca.load_root_signer(nullptr);
  REQUIRE_FALSE(offline.ok());
  CHECK(offline.error().code == Errc::not_found);
  CHECK(offline.error().message.find("offline") != std::string::npos);
}

TEST_CASE("a root CRL URL without an intermediate is refused and writes nothing") {
  TempDir dir;
  auto options = fast_options();
  options.root_crl_url = "http://127.0.0.1/root-crl";
  auto result = Authority::create(dir.path(), options, unix_now());
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == Errc::invalid_input);
  CHECK_FALSE(std::filesystem::exists(dir / "ca" / "root.key"));
}
