// The CA key in a PKCS#11 token: a throwaway SoftHSM token per test, onboardctl generating the key
// in it and signing certificates and CRLs through it, and the failures an operator meets (a wrong
// PIN, a missing token or module) refused before anything changes.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/files.h"
#include "tests/support/run.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"

using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

constexpr const char* kModule = onboard::test::kSoftHsmModule;
constexpr const char* kPin = onboard::test::kSoftHsmPin;
constexpr const char* kKeyUri = "pkcs11:token=onboard-ca;object=ca-root";

// A throwaway token with a data directory beside it.
struct Token : onboard::test::SoftHsmToken {
  std::filesystem::path data() const { return dir / "data"; }
  RunResult ctl(Args args, const Env& extra = {}) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data().string()});
    Env all = env;
    for (const auto& [name, value] : extra) all[name] = value;
    return onboard::test::run(args, {}, all);
  }
  RunResult init(Args extra = {}, const std::string& pin_env = "CA_PIN") const {
    Args args{
        "init",  "--no-group",       "--key-alg", "p256", "--ca-key", kKeyUri, "--pkcs11-module",
        kModule, "--passphrase-env", pin_env};
    args.insert(args.end(), extra.begin(), extra.end());
    return ctl(args);
  }
  RunResult register_device(const std::string& id, const std::string& pin_env = "CA_PIN",
                            const Env& extra = {}) const {
    return ctl(
        {"device", "register", id, "--key-alg", "p256", "--key-out", (dir / (id + ".key")).string(),
         "--cert-out", (dir / (id + ".crt")).string(), "--passphrase-env", pin_env},
        extra);
  }
};

RunResult openssl(Args args) {
  args.insert(args.begin(), "/usr/bin/openssl");
  return onboard::test::run(args);
}

std::string read(const std::filesystem::path& path) {
  auto text = onboard::read_file(path);
  REQUIRE(text.ok());
  return *text;
}

}  // namespace

TEST_CASE("A CA key generated in a PKCS#11 token signs device certificates and the CRL") {
  Token token;
  auto init = token.init();
  INFO(init.out << init.err);
  REQUIRE(init.exit_code == 0);
  const auto ca = token.data() / "ca";
  // No key file: the key is in the token, ca.json says where, and never holds the PIN.
  CHECK_FALSE(std::filesystem::exists(ca / "root.key"));
  const std::string settings = read(ca / "ca.json");
  CHECK(settings.find("pkcs11:token=onboard-ca;") != std::string::npos);
  CHECK(settings.find(kModule) != std::string::npos);
  CHECK(settings.find(kPin) == std::string::npos);
  // The CRL init wrote is the token's work too.
  CHECK(openssl({"crl", "-in", (token.data() / "crl.pem").string(), "-CAfile",
                 (ca / "root.crt").string(), "-noout"})
            .err.find("verify OK") != std::string::npos);

  auto dev = token.register_device("dev-1");
  INFO(dev.out << dev.err);
  REQUIRE(dev.exit_code == 0);
  const auto cert = (token.dir / "dev-1.crt").string();
  auto verified = openssl({"verify", "-CAfile", (ca / "root.crt").string(), cert});
  INFO(verified.out << verified.err);
  CHECK(verified.exit_code == 0);

  SECTION("a wrong or missing PIN is exit 7 and registers nothing") {
    auto wrong = token.register_device("dev-2", "WRONG_PIN");
    CHECK(wrong.exit_code == 7);
    CHECK(wrong.err.find("wrong PIN") != std::string::npos);
    auto none = token.ctl({"device", "register", "dev-2", "--key-alg", "p256", "--key-out",
                           (token.dir / "dev-2.key").string()});
    CHECK(none.exit_code == 7);
    CHECK(none.err.find("PIN") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(token.dir / "dev-2.key"));
    auto list = token.ctl({"device", "list"});
    CHECK(list.out.find("dev-1") != std::string::npos);  // the listing works and shows devices
    CHECK(list.out.find("dev-2") == std::string::npos);
  }

  SECTION("a missing token or module is exit 4 and registers nothing") {
    TempDir empty;
    std::ofstream(empty / "softhsm2.conf")
        << "directories.tokendir = " << empty.path().string() << "\nobjectstore.backend = file\n";
    auto no_token =
        token.register_device("dev-3", "CA_PIN", {{"SOFTHSM2_CONF", (empty / "softhsm2.conf")}});
    CHECK(no_token.exit_code == 4);
    CHECK(no_token.err.find("no PKCS#11 token labelled 'onboard-ca'") != std::string::npos);
    auto no_module =
        token.register_device("dev-3", "CA_PIN", {{"ONBOARD_PKCS11_MODULE", "/nonexistent.so"}});
    CHECK(no_module.exit_code == 4);
    CHECK(no_module.err.find("/nonexistent.so") != std::string::npos);
    CHECK(token.ctl({"device", "list"}).out.find("dev-3") == std::string::npos);
  }

  SECTION("revoking signs a CRL with the token key that lists the certificate") {
    auto revoked = token.ctl({"device", "revoke", "dev-1", "--passphrase-env", "CA_PIN"});
    INFO(revoked.out << revoked.err);
    REQUIRE(revoked.exit_code == 0);
    const auto crl = (token.data() / "crl.pem").string();
    CHECK(openssl({"crl", "-in", crl, "-CAfile", (ca / "root.crt").string(), "-noout"})
              .err.find("verify OK") != std::string::npos);
    auto checked = openssl(
        {"verify", "-crl_check", "-CRLfile", crl, "-CAfile", (ca / "root.crt").string(), cert});
    CHECK(checked.exit_code != 0);
    CHECK((checked.out + checked.err).find("certificate revoked") != std::string::npos);
  }
}

TEST_CASE("init with a bad PKCS#11 token leaves nothing behind") {
  Token token;
  auto wrong = token.init({}, "WRONG_PIN");
  CHECK(wrong.exit_code == 7);
  CHECK(wrong.err.find("wrong PIN for the PKCS#11 token 'onboard-ca'") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(token.data()));

  auto missing = token.ctl({"init", "--no-group", "--key-alg", "p256", "--ca-key",
                            "pkcs11:token=no-such-token;object=ca-root", "--pkcs11-module", kModule,
                            "--passphrase-env", "CA_PIN"});
  CHECK(missing.exit_code == 4);
  CHECK(missing.err.find("no PKCS#11 token labelled 'no-such-token'") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(token.data()));

  auto no_module = token.ctl({"init", "--no-group", "--ca-key", kKeyUri, "--pkcs11-module",
                              "/nonexistent.so", "--passphrase-env", "CA_PIN"});
  CHECK(no_module.exit_code == 4);
  CHECK_FALSE(std::filesystem::exists(token.data()));

  auto pin_on_command_line =
      token.ctl({"init", "--no-group", "--ca-key", std::string(kKeyUri) + "?pin-value=" + kPin,
                 "--pkcs11-module", kModule});
  CHECK(pin_on_command_line.exit_code == 3);
  CHECK_FALSE(std::filesystem::exists(token.data()));

  // The positive control: the same token, the right PIN, with an intermediate whose key goes
  // into the token too (and no key of the failed attempts is in the way).
  auto made = token.init({"--intermediate"});
  INFO(made.out << made.err);
  REQUIRE(made.exit_code == 0);
  const auto ca = token.data() / "ca";
  CHECK_FALSE(std::filesystem::exists(ca / "issuing.key"));
  CHECK(read(ca / "ca.json").find("object=ca-root-issuing") != std::string::npos);
  // The root's own CRL is signed by the root key in the token.
  CHECK(made.out.find("root CRL") != std::string::npos);
  CHECK(openssl({"crl", "-in", (token.data() / "root-crl.pem").string(), "-CAfile",
                 (ca / "root.crt").string(), "-noout"})
            .err.find("verify OK") != std::string::npos);
  REQUIRE(token.register_device("dev-1").exit_code == 0);
  auto verified = openssl({"verify", "-CAfile", (ca / "root.crt").string(), "-untrusted",
                           (ca / "issuing.crt").string(), (token.dir / "dev-1.crt").string()});
  INFO(verified.out << verified.err);
  CHECK(verified.exit_code == 0);
  // Asking for the same key label again is refused: the token's key is never replaced.
  TempDir other;
  auto again = onboard::test::run(
      {ONBOARDCTL_PATH, "--data-dir", (other / "data").string(), "init", "--no-group", "--key-alg",
       "p256", "--ca-key", kKeyUri, "--pkcs11-module", kModule, "--passphrase-env", "CA_PIN"},
      {}, token.env);
  CHECK(again.exit_code == 5);
  CHECK(again.err.find("already holds a key labelled 'ca-root'") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(other / "data"));
}

TEST_CASE("ca rotate of a CA whose keys are in a token makes the new issuing key in the token") {
  Token token;
  REQUIRE(token.init({"--intermediate"}).exit_code == 0);
  REQUIRE(token.register_device("dev-old").exit_code == 0);
  const auto ca = token.data() / "ca";
  auto ca_files = [&] {
    std::map<std::string, std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(ca))
      files[entry.path().filename().string()] = read(entry.path());
    return files;
  };
  const auto before = ca_files();
  std::string old_serial =
      openssl({"x509", "-in", (ca / "issuing.crt").string(), "-noout", "-serial"}).out;
  REQUIRE(old_serial.starts_with("serial="));
  old_serial = old_serial.substr(7, old_serial.size() - 8);  // without "serial=" and the newline

  // A wrong PIN is refused before anything is made: the CA directory is as it was.
  auto wrong = token.ctl({"ca", "rotate", "--key-alg", "p256", "--passphrase-env", "WRONG_PIN"});
  CHECK(wrong.exit_code == 7);
  CHECK(wrong.err.find("wrong PIN") != std::string::npos);
  CHECK(ca_files() == before);

  auto rotated = token.ctl({"ca", "rotate", "--key-alg", "p256", "--passphrase-env", "CA_PIN"});
  INFO(rotated.out << rotated.err);
  REQUIRE(rotated.exit_code == 0);
  // No key file anywhere: the new issuing key was made in the token, the old one stays there.
  for (const auto& [name, text] : ca_files()) {
    CHECK_FALSE(name.ends_with(".key"));
    CHECK(text.find("PRIVATE KEY") == std::string::npos);
  }
  const std::string settings = read(ca / "ca.json");
  CHECK(settings.find("object=ca-root-issuing-") != std::string::npos);
  CHECK(settings.find("\"kept\"") != std::string::npos);
  CHECK(settings.find("\"" + old_serial + "\": \"pkcs11:") != std::string::npos);
  CHECK(settings.find(kPin) == std::string::npos);

  // The new issuing CA signs new devices with its token key; both issuers' devices verify.
  REQUIRE(token.register_device("dev-new").exit_code == 0);
  const std::string chain = (ca / "chain.pem").string();
  auto new_issued = openssl({"verify", "-partial_chain", "-CAfile", (ca / "issuing.crt").string(),
                             (token.dir / "dev-new.crt").string()});
  INFO(new_issued.out << new_issued.err);
  CHECK(new_issued.exit_code == 0);
  CHECK(openssl({"verify", "-CAfile", chain, (token.dir / "dev-old.crt").string()}).exit_code == 0);

  // Revoking the old device signs the kept issuer's CRL with its key, still in the token.
  auto revoked = token.ctl({"device", "revoke", "dev-old", "--passphrase-env", "CA_PIN"});
  INFO(revoked.out << revoked.err);
  REQUIRE(revoked.exit_code == 0);
  const std::string crl = (token.data() / "crl.pem").string();
  auto old_checked = openssl({"verify", "-crl_check", "-CRLfile", crl, "-CAfile", chain,
                              (token.dir / "dev-old.crt").string()});
  CHECK(old_checked.exit_code != 0);
  CHECK((old_checked.out + old_checked.err).find("certificate revoked") != std::string::npos);
  auto new_checked = openssl({"verify", "-crl_check", "-CRLfile", crl, "-CAfile", chain,
                              (token.dir / "dev-new.crt").string()});
  INFO(new_checked.out << new_checked.err);
  CHECK(new_checked.exit_code == 0);
}
