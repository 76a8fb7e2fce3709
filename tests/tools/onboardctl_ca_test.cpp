// onboardctl's CA commands run as a user runs them: a real process, real files, real exit codes.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "ca/authority.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "core/files.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using onboard::test::RunResult;
using onboard::test::TempDir;

using onboard::test::files_in;
using onboard::test::mode_of;

namespace {

RunResult onboardctl(const TempDir& data, std::vector<std::string> args,
                     const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data.path().string()});
  return onboard::test::run(args, {}, env);
}

// Fast CA keys for the suite; the defaults are exercised by the demo. The registry is made too
// (with the same passphrase options): the CA records every certificate it signs there.
RunResult init_ca(const TempDir& data, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"ca",  "init", "--key-alg", "p256", "--intermediate-key-alg",
                                "p256"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto made = onboardctl(data, args);
  if (made.exit_code != 0) return made;
  std::vector<std::string> registry{"init", "--no-group"};
  for (std::size_t i = 0; i + 1 < extra.size(); ++i) {
    if (extra[i].starts_with("--passphrase-"))
      registry.insert(registry.end(), {extra[i], extra[i + 1]});
  }
  auto init = onboardctl(data, registry);
  return init.exit_code != 0 ? init : made;
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string device_csr(const std::string& cn, KeyAlg alg = KeyAlg::p256) {
  auto key = generate_key(alg);
  REQUIRE(key.ok());
  auto req = make_csr(key->get(), cn);
  REQUIRE(req.ok());
  return csr_to_pem(req->get());
}

}  // namespace

TEST_CASE("ca init, issue from a CSR, and openssl verify accepts the certificate") {
  TempDir data, out;
  auto init = init_ca(data);
  INFO(init.err);
  REQUIRE(init.exit_code == 0);
  CHECK(init.out.find("created root CA") != std::string::npos);

  write(out / "dev.csr", device_csr("sensor-001"));
  auto issue = onboardctl(data, {"ca", "issue", "--csr", (out / "dev.csr").string(), "--cert-out",
                                 (out / "dev.crt").string()});
  INFO(issue.err);
  REQUIRE(issue.exit_code == 0);
  CHECK(issue.out.find("issued sensor-001") != std::string::npos);

  auto chain = onboardctl(data, {"ca", "cert"});
  REQUIRE(chain.exit_code == 0);
  write(out / "chain.pem", chain.out);
  auto verify =
      onboard::test::run({"/usr/bin/openssl", "verify", "-x509_strict", "-purpose", "sslclient",
                          "-CAfile", (out / "chain.pem").string(), (out / "dev.crt").string()});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(verify.out.find(": OK") != std::string::npos);

  auto own = onboardctl(data, {"ca", "verify", (out / "dev.crt").string()});
  CHECK(own.exit_code == 0);
}

TEST_CASE("openssl verify -crl_check refuses a revoked device and accepts the others") {
  TempDir data, out;
  REQUIRE(init_ca(data, {"--intermediate"}).exit_code == 0);
  for (const char* id : {"leaf-good", "leaf-revoked"}) {
    auto r = onboardctl(data, {"ca", "issue", "--device", id, "--key-alg", "p256", "--cert-out",
                               (out / (std::string(id) + ".crt")).string(), "--key-out",
                               (out / (std::string(id) + ".key")).string()});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  // Until the registry writes CRLs, build one from the CA library directly.
  auto ca = Authority::open(data.path());
  REQUIRE(ca.ok());
  REQUIRE(ca->load_signing_key(nullptr).ok());
  auto revoked = certificate_from_pem(read_file(out / "leaf-revoked.crt").value());
  REQUIRE(revoked.ok());
  RevokedEntry entry{describe_certificate(revoked->get()).serial_hex, unix_now() - 10,
                     RevocationReason::key_compromise};
  auto crl = build_crl(ca->issuer(), *ca->signer(), {&entry, 1},
                       CrlParams{1, unix_now() - 10, unix_now() + 86400});
  REQUIRE(crl.ok());
  write(out / "crl.pem", crl_to_pem(crl->get()));
  write(out / "chain.pem", ca->chain_pem());

  auto verify = [&](const char* leaf) {
    return onboard::test::run({"/usr/bin/openssl", "verify", "-crl_check", "-CAfile",
                               (out / "chain.pem").string(), "-CRLfile", (out / "crl.pem").string(),
                               (out / leaf).string()});
  };
  auto good = verify("leaf-good.crt");
  INFO(good.out << good.err);
  CHECK(good.exit_code == 0);
  auto bad = verify("leaf-revoked.crt");
  CHECK(bad.exit_code != 0);
  CHECK((bad.out + bad.err).find("certificate revoked") != std::string::npos);

  auto own = onboardctl(data, {"ca", "verify", (out / "leaf-revoked.crt").string(), "--crl",
                               (out / "crl.pem").string()});
  CHECK(own.exit_code == 3);
  CHECK(own.err.find("certificate revoked") != std::string::npos);
}

TEST_CASE("a key made by the tool is written 0600 and matches its certificate") {
  TempDir data, out;
  REQUIRE(init_ca(data).exit_code == 0);
  auto r =
      onboardctl(data, {"ca", "issue", "--device", "dev-1", "--key-alg", "ed25519", "--cert-out",
                        (out / "d.crt").string(), "--key-out", (out / "d.key").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(mode_of(out / "d.key") == 0600);
  auto key = private_key_from_pem(read_file(out / "d.key").value());
  auto cert = certificate_from_pem(read_file(out / "d.crt").value());
  REQUIRE(key.ok());
  REQUIRE(cert.ok());
  CHECK(X509_check_private_key(cert->get(), key->get()) == 1);
}

TEST_CASE(
    "the broker's server certificate names its host and address and verifies for TLS servers") {
  TempDir data, out;
  REQUIRE(init_ca(data).exit_code == 0);
  auto r = onboardctl(
      data, {"ca", "issue-server", "--dns", "localhost", "--ip", "127.0.0.1", "--cert-out",
             (out / "server.crt").string(), "--key-out", (out / "server.key").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  write(out / "chain.pem", onboardctl(data, {"ca", "cert"}).out);
  auto verify =
      onboard::test::run({"/usr/bin/openssl", "verify", "-purpose", "sslserver", "-verify_hostname",
                          "localhost", "-verify_ip", "127.0.0.1", "-CAfile",
                          (out / "chain.pem").string(), (out / "server.crt").string()});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(mode_of(out / "server.key") == 0600);
}

TEST_CASE("ca init refuses to overwrite an existing CA") {
  TempDir data;
  REQUIRE(init_ca(data).exit_code == 0);
  std::string key_before = read_file(data / "ca" / "root.key").value();
  auto again = init_ca(data);
  CHECK(again.exit_code == 5);
  CHECK(again.err.find("already initialised") != std::string::npos);
  CHECK(read_file(data / "ca" / "root.key").value() == key_before);
}

TEST_CASE("a passphrase-protected CA needs the passphrase to issue, and a wrong one is refused") {
  TempDir data, out;
  write(out / "pass", "a strong CA passphrase\n");
  REQUIRE(init_ca(data, {"--passphrase-file", (out / "pass").string()}).exit_code == 0);
  CHECK(read_file(data / "ca" / "root.key").value().find("BEGIN ENCRYPTED PRIVATE KEY") !=
        std::string::npos);

  std::vector<std::string> issue{"ca",         "issue",
                                 "--device",   "d",
                                 "--key-alg",  "p256",
                                 "--cert-out", (out / "d.crt").string(),
                                 "--key-out",  (out / "d.key").string()};
  auto none = onboardctl(data, issue);
  CHECK(none.exit_code == 7);
  CHECK(none.err.find("--passphrase-env") != std::string::npos);

  auto wrong_args = issue;
  wrong_args.insert(wrong_args.end(), {"--passphrase-env", "CA_PASS"});
  auto wrong = onboardctl(data, wrong_args, {{"CA_PASS", "not the passphrase"}});
  CHECK(wrong.exit_code == 7);
  CHECK(wrong.err.find("wrong passphrase") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out / "d.crt"));
  CHECK_FALSE(std::filesystem::exists(out / "d.key"));

  auto right = onboardctl(data, wrong_args, {{"CA_PASS", "a strong CA passphrase"}});
  INFO(right.err);
  CHECK(right.exit_code == 0);
}

TEST_CASE("bad CSRs are refused with a clear message, exit code 3 and no file written") {
  TempDir data, out;
  REQUIRE(init_ca(data).exit_code == 0);
  struct Case {
    std::string name, csr, message;
  };
  auto key = generate_key(KeyAlg::p256);
  auto other = generate_key(KeyAlg::p256);
  auto req = make_csr(key->get(), "dev");
  REQUIRE(X509_REQ_sign(req->get(), other->get(), EVP_sha256()) > 0);
  ossl::Ptr<EVP_PKEY> weak(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024}));
  std::vector<Case> cases{
      {"malformed", "this is not a CSR\n", "malformed CSR"},
      {"mismatched signature", csr_to_pem(req->get()), "signature does not match"},
      {"slash in CN", device_csr("a/b"), "'/'"},
      {"plus in CN", device_csr("a+b"), "'+'"},
      {"hash in CN", device_csr("a#b"), "'#'"},
      {"space in CN", device_csr("a b"), "a space"},
      {"RSA-1024", csr_to_pem(make_csr(weak.get(), "dev")->get()), "too weak"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    write(out / "in.csr", c.csr);
    auto r = onboardctl(data, {"ca", "issue", "--csr", (out / "in.csr").string(), "--cert-out",
                               (out / "out.crt").string()});
    CHECK(r.exit_code == 3);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);  // one line
    CHECK_FALSE(std::filesystem::exists(out / "out.crt"));
  }
}

TEST_CASE("missing or unreadable CA files are reported, not crashed on") {
  TempDir data, out;
  auto none = onboardctl(data, {"ca", "cert"});
  CHECK(none.exit_code == 4);
  CHECK(none.err.find("onboardctl ca init") != std::string::npos);

  REQUIRE(init_ca(data).exit_code == 0);
  std::filesystem::remove(data / "ca" / "root.key");
  auto no_key = onboardctl(data, {"ca", "issue", "--device", "d", "--cert-out",
                                  (out / "d.crt").string(), "--key-out", (out / "d.key").string()});
  CHECK(no_key.exit_code == 6);
  CHECK(no_key.err.find("root.key") != std::string::npos);
  CHECK(files_in(out.path()) == 0);
}

TEST_CASE("an output directory that does not exist or cannot be written fails cleanly") {
  TempDir data, out;
  REQUIRE(init_ca(data).exit_code == 0);
  auto r = onboardctl(
      data, {"ca", "issue", "--device", "d", "--key-alg", "p256", "--cert-out",
             (out / "missing" / "d.crt").string(), "--key-out", (out / "d.key").string()});
  CHECK(r.exit_code == 6);
  // The key was written first, then removed again when the certificate could not be.
  CHECK_FALSE(std::filesystem::exists(out / "d.key"));
  CHECK(files_in(out.path()) == 0);
}

TEST_CASE("existing output files are kept unless --force is given") {
  TempDir data, out;
  REQUIRE(init_ca(data).exit_code == 0);
  write(out / "d.crt", "keep me");
  std::vector<std::string> args{"ca",         "issue",
                                "--device",   "d",
                                "--key-alg",  "p256",
                                "--cert-out", (out / "d.crt").string(),
                                "--key-out",  (out / "d.key").string()};
  auto refused = onboardctl(data, args);
  CHECK(refused.exit_code == 5);
  CHECK(refused.err.find("--force") != std::string::npos);
  CHECK(read_file(out / "d.crt").value() == "keep me");
  CHECK_FALSE(std::filesystem::exists(out / "d.key"));
  args.push_back("--force");
  CHECK(onboardctl(data, args).exit_code == 0);
  CHECK(read_file(out / "d.crt").value().starts_with("-----BEGIN CERTIFICATE-----"));
}

TEST_CASE("usage errors exit 2 and point at --help, and --help tells every option") {
  TempDir data;
  auto unknown = onboardctl(data, {"ca", "frobnicate"});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("--help") != std::string::npos);
  auto bad_alg = onboardctl(data, {"ca", "init", "--key-alg", "rsa1024"});
  CHECK(bad_alg.exit_code == 3);
  CHECK(bad_alg.err.find("rsa2048|rsa3072|rsa4096|p256|p384|ed25519") != std::string::npos);
  auto help = onboardctl(data, {"ca", "issue", "--help"});
  CHECK(help.exit_code == 0);
  for (const char* option : {"--csr", "--device", "--key-alg", "--cert-out", "--key-out", "--days",
                             "--passphrase-env", "--passphrase-file", "--force"}) {
    CHECK(help.out.find(option) != std::string::npos);
  }
  auto both = onboardctl(data, {"ca", "issue", "--csr", "x", "--device", "y", "--cert-out", "z"});
  CHECK(both.exit_code == 2);
}

TEST_CASE("a passphrase is never accepted on the command line") {
  TempDir data;
  auto r = onboardctl(data, {"ca", "init", "--passphrase", "hunter2"});
  CHECK(r.exit_code == 2);
  CHECK_FALSE(std::filesystem::exists(data / "ca"));
}
