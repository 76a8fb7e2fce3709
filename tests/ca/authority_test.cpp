#include "ca/authority.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "ca/files.h"
#include "ca/verify.h"
#include "tests/ca/fixtures.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
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
