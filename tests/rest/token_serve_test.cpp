// `onboardctl serve` with the CA keys in a PKCS#11 token (a throwaway SoftHSM token): a device
// registered over REST, revoked over REST, the CRL fetched and checked by `openssl crl` and
// `openssl verify`, its status asked with `openssl ocsp`; and a server that cannot reach the token
// or is refused its PIN says so, exits with the documented code and writes nothing.
#include <nlohmann/json.hpp>

#include <httplib.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ca/csr.h"
#include "ca/keys.h"
#include "core/files.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/softhsm.h"

using namespace onboard;
using nlohmann::json;
using onboard::test::RunResult;

namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Every file under `dir` with its size and contents: what "writes nothing" compares.
std::map<std::string, std::string> snapshot(const std::filesystem::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    auto text = read_file(entry.path(), 64 << 20);
    files[entry.path().string()] = text.ok() ? *text : "(unreadable)";
  }
  return files;
}

// A CA with an issuing intermediate whose keys are both in the token, and an operator's token.
struct TokenCa {
  test::SoftHsmToken token;
  std::string operator_token;

  TokenCa() {
    auto made = ctl({"init", "--no-group", "--key-alg", "p256", "--intermediate", "--ca-key",
                     "pkcs11:token=onboard-ca;object=serve-root", "--pkcs11-module",
                     test::kSoftHsmModule, "--passphrase-env", "CA_PIN"});
    INFO(made.out << made.err);
    REQUIRE(made.exit_code == 0);
    REQUIRE_FALSE(std::filesystem::exists(data() / "ca" / "issuing.key"));
    auto created = ctl({"token", "create", "--name", "ops", "--role", "operator"});
    REQUIRE(created.exit_code == 0);
    operator_token = created.out.substr(0, created.out.size() - 1);
  }
  std::filesystem::path data() const { return token.dir / "data"; }
  std::string path(const std::string& name) const { return (token.dir / name).string(); }
  std::string chain() const { return (data() / "ca" / "chain.pem").string(); }
  RunResult ctl(Args args, const Env& env_change = {}) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data().string()});
    Env env = token.env;
    for (const auto& [name, value] : env_change) env[name] = value;
    return test::run(args, {}, env);
  }
  Args serve_args(const std::string& pin_env) const {
    return {ONBOARDCTL_PATH, "--data-dir",       data().string(), "serve",     "--listen",
            "127.0.0.1:0",   "--passphrase-env", pin_env,         "--threads", "2"};
  }
};

std::string openssl_ocsp(const TokenCa& ca, const std::string& url, const std::string& cert) {
  auto r =
      test::run({"/usr/bin/openssl", "ocsp", "-issuer", (ca.data() / "ca" / "issuing.crt").string(),
                 "-cert", cert, "-url", url, "-CAfile", ca.chain()});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  return r.out + r.err;
}

}  // namespace

TEST_CASE("serve signs issues revokes and answers CRL and OCSP with the CA key in a token") {
  TokenCa ca;
  test::ChildProcess server(ca.serve_args("CA_PIN"), ca.token.dir / "serve.log", ca.token.env);
  const std::string line = server.read_line();
  auto log = read_file(ca.token.dir / "serve.log");
  INFO(line << (log.ok() ? *log : ""));
  REQUIRE(line.starts_with("serving on http://127.0.0.1:"));
  const int port = std::stoi(line.substr(line.rfind(':') + 1));
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  REQUIRE(ca.ctl({"ca", "set-ocsp-url", base + "/ocsp"}).exit_code == 0);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(20, 0);
  const httplib::Headers auth{{"Authorization", "Bearer " + ca.operator_token}};

  // Registered over REST: the server signs the certificate with the token's issuing key.
  auto key = ca::generate_key(ca::KeyAlg::p256);
  REQUIRE(key.ok());
  auto csr = ca::make_csr(key->get(), "hsm-dev");
  REQUIRE(csr.ok());
  auto registered = client.Post("/v1/devices", auth,
                                json{{"id", "hsm-dev"}, {"csr", ca::csr_to_pem(csr->get())}}.dump(),
                                "application/json");
  REQUIRE(registered);
  INFO(registered->body);
  REQUIRE(registered->status == 201);
  const json body = json::parse(registered->body);
  const std::string cert = ca.path("hsm-dev.crt");
  REQUIRE(write_file_atomic(cert, body["certificate"]["pem"].get<std::string>(), 0644,
                            Overwrite::replace)
              .ok());
  auto verified = test::run({"/usr/bin/openssl", "verify", "-CAfile", ca.chain(), cert});
  INFO(verified.out << verified.err);
  CHECK(verified.exit_code == 0);

  // OCSP before the revocation: good, from a responder the token's issuing key certified.
  const std::string url = base + "/ocsp";
  const std::string good = openssl_ocsp(ca, url, cert);
  CHECK(contains(good, "Response verify OK"));
  CHECK(contains(good, cert + ": good"));

  // Revoked over REST: the server signs the new CRL with the token key.
  auto revoked = client.Post("/v1/devices/hsm-dev/revoke", auth, R"({"reason": "keyCompromise"})",
                             "application/json");
  REQUIRE(revoked);
  INFO(revoked->body);
  REQUIRE(revoked->status == 200);

  // The CRL as a relying party fetches it (DER at /crl), checked by openssl against the chain.
  auto crl = client.Get("/crl");
  REQUIRE(crl);
  REQUIRE(crl->status == 200);
  CHECK(crl->get_header_value("Content-Type") == "application/pkix-crl");
  const std::string crl_der = ca.path("crl.der");
  REQUIRE(write_file_atomic(crl_der, crl->body, 0644, Overwrite::replace).ok());
  auto crl_checked = test::run({"/usr/bin/openssl", "crl", "-inform", "DER", "-in", crl_der,
                                "-CAfile", ca.chain(), "-noout", "-text"});
  INFO(crl_checked.out << crl_checked.err);
  CHECK(contains(crl_checked.err, "verify OK"));
  CHECK(contains(crl_checked.out, body["certificate"]["serial"].get<std::string>()));
  auto refused = test::run({"/usr/bin/openssl", "verify", "-crl_check", "-CRLfile",
                            (ca.data() / "crl.pem").string(), "-CAfile", ca.chain(), cert});
  CHECK(refused.exit_code != 0);
  CHECK(contains(refused.out + refused.err, "certificate revoked"));

  // OCSP after: revoked, at once, with the reason.
  const std::string after = openssl_ocsp(ca, url, cert);
  CHECK(contains(after, "Response verify OK"));
  CHECK(contains(after, cert + ": revoked"));
  CHECK(contains(after, "Reason: keyCompromise"));
}

TEST_CASE(
    "serve refuses a wrong PIN with exit 7 and a missing token with exit 4 and writes "
    "nothing") {
  TokenCa ca;
  const auto before = snapshot(ca.data());

  auto wrong = test::run(ca.serve_args("WRONG_PIN"), {}, ca.token.env);
  CHECK(wrong.exit_code == 7);
  CHECK(contains(wrong.err, "wrong PIN for the PKCS#11 token 'onboard-ca'"));
  CHECK_FALSE(contains(wrong.out, "serving on"));
  CHECK(snapshot(ca.data()) == before);

  auto missing = test::run(ca.serve_args("CA_PIN"), {}, ca.token.env_without_token());
  CHECK(missing.exit_code == 4);
  CHECK(contains(missing.err, "no PKCS#11 token labelled 'onboard-ca'"));
  CHECK_FALSE(contains(missing.out, "serving on"));
  CHECK(snapshot(ca.data()) == before);

  // The positive control: the same data directory, the right PIN and the token: it serves.
  test::ChildProcess server(ca.serve_args("CA_PIN"), ca.token.dir / "serve.log", ca.token.env);
  CHECK(server.read_line().starts_with("serving on http://127.0.0.1:"));
  CHECK(server.stop(SIGTERM) == 0);
}
