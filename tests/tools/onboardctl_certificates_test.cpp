// Every certificate the CA signs is recorded and revocable: `ca issue`, `ca issue-server`,
// `ca list`, `ca revoke`, and the root CRL that an issuing intermediate needs, checked with the
// real openssl binary as a relying party checks them.
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <SQLiteCpp/Database.h>
#include <httplib.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ca/certificate.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/files.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using nlohmann::json;
using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string slurp(const std::filesystem::path& path) { return read_file(path).value(); }

std::string device_csr(const std::string& cn) {
  auto key = generate_key(KeyAlg::p256);
  REQUIRE(key.ok());
  auto req = make_csr(key->get(), cn);
  REQUIRE(req.ok());
  return csr_to_pem(req->get());
}

std::uint64_t crl_number_of(const std::filesystem::path& path) {
  auto crl = crl_from_pem(slurp(path));
  REQUIRE(crl.ok());
  auto* number = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl->get(), NID_crl_number, nullptr, nullptr));
  REQUIRE(number != nullptr);
  const long value = ASN1_INTEGER_get(number);
  ASN1_INTEGER_free(number);
  return static_cast<std::uint64_t>(value);
}

// The CRL's nextUpdate minus its thisUpdate, in days.
long crl_lifetime_days(const std::filesystem::path& path) {
  auto crl = crl_from_pem(slurp(path));
  REQUIRE(crl.ok());
  auto last = to_unix_time(X509_CRL_get0_lastUpdate(crl->get()));
  auto next = to_unix_time(X509_CRL_get0_nextUpdate(crl->get()));
  REQUIRE(last.has_value());
  REQUIRE(next.has_value());
  return static_cast<long>((*next - *last) / 86400);
}

std::string serial_of(const std::filesystem::path& cert_path) {
  auto cert = certificate_from_pem(slurp(cert_path));
  REQUIRE(cert.ok());
  return serial_hex(cert->get());
}

// A data directory made by `onboardctl init`, and a directory for the operator's files.
struct Fleet {
  TempDir data, out;

  explicit Fleet(Args init_extra = {}) {
    Args args{"init", "--no-group", "--key-alg", "p256"};
    args.insert(args.end(), init_extra.begin(), init_extra.end());
    auto r = (*this)(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  RunResult operator()(Args args) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data.path().string()});
    return onboard::test::run(args);
  }
  std::string file(const std::string& name) const { return (out / name).string(); }
  // A registered device whose key and certificate land in out/ID.key and out/ID.crt.
  void register_device(const std::string& id) const {
    auto r = (*this)({"device", "register", id, "--key-alg", "p256", "--key-out", file(id + ".key"),
                      "--cert-out", file(id + ".crt")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
};

RunResult openssl_verify(Args args) {
  args.insert(args.begin(), {"/usr/bin/openssl", "verify"});
  return onboard::test::run(args);
}

}  // namespace

TEST_CASE("ca issue and ca issue-server record what they sign and ca list shows every kind") {
  Fleet fleet;
  fleet.register_device("dev-1");
  write(fleet.out / "other.csr", device_csr("tool-7"));
  auto issued = fleet(
      {"ca", "issue", "--csr", fleet.file("other.csr"), "--cert-out", fleet.file("other.crt")});
  INFO(issued.err);
  REQUIRE(issued.exit_code == 0);
  auto server =
      fleet({"ca", "issue-server", "--dns", "localhost", "--key-alg", "p256", "--cert-out",
             fleet.file("server.crt"), "--key-out", fleet.file("server.key")});
  INFO(server.err);
  REQUIRE(server.exit_code == 0);

  auto listed = fleet({"ca", "list"});
  INFO(listed.err);
  REQUIRE(listed.exit_code == 0);
  CHECK(contains(listed.out, serial_of(fleet.out / "dev-1.crt")));
  CHECK(contains(listed.out, serial_of(fleet.out / "other.crt")));
  CHECK(contains(listed.out, serial_of(fleet.out / "server.crt")));

  auto servers = fleet({"ca", "list", "--kind", "server", "--json"});
  REQUIRE(servers.exit_code == 0);
  const auto j = json::parse(servers.out);
  REQUIRE(j.size() == 1);
  CHECK(j[0]["kind"] == "server");
  CHECK(j[0]["device"].is_null());
  CHECK(j[0]["serial"] == serial_of(fleet.out / "server.crt"));
  CHECK(j[0]["status"] == "active");
  CHECK(j[0]["pem"] == slurp(fleet.out / "server.crt"));

  const auto others = json::parse(fleet({"ca", "list", "--kind", "other", "--json"}).out);
  REQUIRE(others.size() == 1);
  CHECK(others[0]["subject"] == "CN=tool-7");
  const auto devices = json::parse(fleet({"ca", "list", "--kind", "device", "--json"}).out);
  REQUIRE(devices.size() == 1);
  CHECK(devices[0]["device"] == "dev-1");

  auto bad_kind = fleet({"ca", "list", "--kind", "router"});
  CHECK(bad_kind.exit_code == 3);
  CHECK(contains(bad_kind.err, "device, server, other or claim"));

  // Audited like every registry change, and the chain still verifies.
  auto audit = fleet({"audit", "list", "--json"});
  REQUIRE(audit.exit_code == 0);
  int records = 0;
  for (const auto& e : json::parse(audit.out)) records += e["action"] == "certificate.record";
  CHECK(records == 2);
  CHECK(fleet({"audit", "verify"}).exit_code == 0);
}

TEST_CASE("without a registry ca issue and ca issue-server sign nothing and say why") {
  TempDir data, out;
  auto init = onboard::test::run(
      {ONBOARDCTL_PATH, "--data-dir", data.path().string(), "ca", "init", "--key-alg", "p256"});
  REQUIRE(init.exit_code == 0);
  write(out / "d.csr", device_csr("dev"));
  auto issue = onboard::test::run({ONBOARDCTL_PATH, "--data-dir", data.path().string(), "ca",
                                   "issue", "--csr", (out / "d.csr").string(), "--cert-out",
                                   (out / "d.crt").string()});
  CHECK(issue.exit_code == 4);
  CHECK(contains(issue.err, "records every certificate it signs"));
  CHECK(contains(issue.err, "onboardctl init"));
  auto server = onboard::test::run(
      {ONBOARDCTL_PATH, "--data-dir", data.path().string(), "ca", "issue-server", "--dns",
       "localhost", "--cert-out", (out / "s.crt").string(), "--key-out", (out / "s.key").string()});
  CHECK(server.exit_code == 4);
  CHECK_FALSE(std::filesystem::exists(out / "d.crt"));
  CHECK_FALSE(std::filesystem::exists(out / "s.crt"));
  CHECK_FALSE(std::filesystem::exists(out / "s.key"));
}

TEST_CASE("ca revoke puts a server certificate on the CRL and a second revoke is an answer") {
  Fleet fleet;
  auto server =
      fleet({"ca", "issue-server", "--dns", "localhost", "--key-alg", "p256", "--cert-out",
             fleet.file("server.crt"), "--key-out", fleet.file("server.key")});
  REQUIRE(server.exit_code == 0);
  const auto crl = fleet.data / "crl.pem";
  const auto chain = (fleet.data / "ca" / "chain.pem").string();
  auto check = [&] {
    return openssl_verify(
        {"-crl_check", "-CAfile", chain, "-CRLfile", crl.string(), fleet.file("server.crt")});
  };
  auto before = check();
  INFO(before.out << before.err);
  CHECK(before.exit_code == 0);  // the positive control: a good CRL, not yet listing it
  const auto number = crl_number_of(crl);

  auto revoke =
      fleet({"ca", "revoke", serial_of(fleet.out / "server.crt"), "--reason", "keyCompromise"});
  INFO(revoke.err);
  REQUIRE(revoke.exit_code == 0);
  CHECK(contains(revoke.out, "revoked server certificate"));
  CHECK(crl_number_of(crl) == number + 1);
  auto after = check();
  CHECK(after.exit_code != 0);
  CHECK(contains(after.out + after.err, "certificate revoked"));

  // By fingerprint, as `ca list --json` and `ca issue` print it: already revoked, nothing written.
  const auto listed = json::parse(fleet({"ca", "list", "--status", "revoked", "--json"}).out);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["revocation_reason"] == "keyCompromise");
  const std::string fingerprint = listed[0]["sha256_fingerprint"];
  auto again = fleet({"ca", "revoke", "sha256:" + fingerprint});
  CHECK(again.exit_code == 0);
  CHECK(contains(again.out, "already revoked"));
  CHECK(crl_number_of(crl) == number + 1);

  auto unknown = fleet({"ca", "revoke", "ABCDEF0123"});
  CHECK(unknown.exit_code == 4);
  auto bad_reason = fleet({"ca", "revoke", fingerprint, "--reason", "bored"});
  CHECK(bad_reason.exit_code == 3);

  auto help = fleet({"ca", "revoke", "--help"});
  CHECK(help.exit_code == 0);
  for (const char* word : {"CERT", "--reason", "--passphrase-env", "fingerprint"})
    CHECK(contains(help.out, word));
}

TEST_CASE("ca revoke of a device certificate is refused at openssl and keeps the device") {
  Fleet fleet;
  fleet.register_device("dev-1");
  auto revoke = fleet({"ca", "revoke", serial_of(fleet.out / "dev-1.crt")});
  INFO(revoke.err);
  REQUIRE(revoke.exit_code == 0);
  CHECK(contains(revoke.out, "revoked device certificate"));
  auto shown = json::parse(fleet({"device", "show", "dev-1", "--json"}).out);
  CHECK(shown["status"] == "active");
  CHECK(shown["certificates"][0]["status"] == "revoked");
  auto verify =
      openssl_verify({"-crl_check", "-CAfile", (fleet.data / "ca" / "chain.pem").string(),
                      "-CRLfile", (fleet.data / "crl.pem").string(), fleet.file("dev-1.crt")});
  CHECK(verify.exit_code != 0);
  CHECK(contains(verify.out + verify.err, "certificate revoked"));
}

TEST_CASE(
    "with an intermediate the root CRL lets openssl crl_check_all pass a good device and refuse a "
    "revoked one") {
  Fleet fleet({"--intermediate", "--crl-url", "http://127.0.0.1:8443/crl"});
  fleet.register_device("good");
  fleet.register_device("bad");
  auto revoke = fleet({"device", "revoke", "bad"});
  INFO(revoke.err);
  REQUIRE(revoke.exit_code == 0);

  const auto root = (fleet.data / "ca" / "root.crt").string();
  const auto issuing = (fleet.data / "ca" / "issuing.crt").string();
  const auto crl = (fleet.data / "crl.pem").string();
  const auto root_crl = (fleet.data / "root-crl.pem").string();
  REQUIRE(std::filesystem::exists(root_crl));
  auto verify = [&](const std::string& leaf) {
    return openssl_verify({"-crl_check_all", "-CAfile", root, "-untrusted", issuing, "-CRLfile",
                           crl, "-CRLfile", root_crl, fleet.file(leaf)});
  };
  auto good = verify("good.crt");
  INFO(good.out << good.err);
  CHECK(good.exit_code == 0);
  CHECK(contains(good.out, ": OK"));
  auto bad = verify("bad.crt");
  CHECK(bad.exit_code != 0);
  CHECK(contains(bad.out + bad.err, "certificate revoked"));

  // Without the root's CRL nothing says whether the intermediate is revoked: -crl_check_all
  // fails even for the good device. The root CRL is what makes it pass.
  auto no_root_crl = openssl_verify({"-crl_check_all", "-CAfile", root, "-untrusted", issuing,
                                     "-CRLfile", crl, fleet.file("good.crt")});
  CHECK(no_root_crl.exit_code != 0);
  CHECK(contains(no_root_crl.out + no_root_crl.err, "unable to get certificate CRL"));

  // The intermediate names where the root CRL is published, derived from --crl-url.
  auto text = onboard::test::run(
      {"/usr/bin/openssl", "x509", "-in", issuing, "-noout", "-ext", "crlDistributionPoints"});
  CHECK(contains(text.out, "URI:http://127.0.0.1:8443/root-crl"));
  // A year of validity, a number of its own; `onboardctl crl` rewrites both CRLs.
  CHECK(crl_lifetime_days(root_crl) == 365);
  CHECK(crl_lifetime_days(crl) == 7);
  const auto root_number = crl_number_of(root_crl);
  const auto number = crl_number_of(crl);
  auto rewrite = fleet({"crl"});
  INFO(rewrite.err);
  REQUIRE(rewrite.exit_code == 0);
  CHECK(contains(rewrite.out, "root CRL " + std::to_string(root_number + 1)));
  CHECK(crl_number_of(root_crl) == root_number + 1);
  CHECK(crl_number_of(crl) == number + 1);
  CHECK(verify("good.crt").exit_code == 0);
}

TEST_CASE(
    "revoking the intermediate puts it on the root CRL and every device then fails crl_check_all") {
  Fleet fleet({"--intermediate", "--root-crl-url", "http://127.0.0.1:8443/root.crl"});
  fleet.register_device("dev-1");
  const auto root = (fleet.data / "ca" / "root.crt").string();
  const auto issuing = fleet.data / "ca" / "issuing.crt";
  auto verify = [&] {
    return openssl_verify({"-crl_check_all", "-CAfile", root, "-untrusted", issuing.string(),
                           "-CRLfile", (fleet.data / "crl.pem").string(), "-CRLfile",
                           (fleet.data / "root-crl.pem").string(), fleet.file("dev-1.crt")});
  };
  REQUIRE(verify().exit_code == 0);  // the positive control

  // The root signed the intermediate: `init` recorded it, issued by the root.
  const auto others = json::parse(fleet({"ca", "list", "--kind", "other", "--json"}).out);
  REQUIRE(others.size() == 1);
  CHECK(others[0]["serial"] == serial_of(issuing));
  const auto crl_before = slurp(fleet.data / "crl.pem");

  auto revoke = fleet({"ca", "revoke", serial_of(issuing), "--reason", "caCompromise"});
  INFO(revoke.err);
  REQUIRE(revoke.exit_code == 0);
  CHECK(contains(revoke.out, "root CRL"));
  // The issuing CA's CRL lists only what the issuing CA signed: it was not rewritten.
  CHECK(slurp(fleet.data / "crl.pem") == crl_before);
  auto after = verify();
  CHECK(after.exit_code != 0);
  CHECK(contains(after.out + after.err, "certificate revoked"));

  auto text = onboard::test::run({"/usr/bin/openssl", "x509", "-in", issuing.string(), "-noout",
                                  "-ext", "crlDistributionPoints"});
  CHECK(contains(text.out, "URI:http://127.0.0.1:8443/root.crl"));
}

TEST_CASE(
    "onboardctl crl without the root key still writes the CRL and says the root CRL was not") {
  Fleet fleet({"--intermediate"});
  const auto root_crl = fleet.data / "root-crl.pem";
  const auto before = slurp(root_crl);
  std::filesystem::rename(fleet.data / "ca" / "root.key", fleet.out / "root.key");  // offline
  auto r = fleet({"crl"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "CRL 2 written"));
  CHECK(contains(r.out, "root CRL not written"));
  CHECK(slurp(root_crl) == before);
}

TEST_CASE("a root CRL URL without an intermediate is refused before anything is made") {
  TempDir data;
  auto r =
      onboard::test::run({ONBOARDCTL_PATH, "--data-dir", data.path().string(), "init", "--no-group",
                          "--key-alg", "p256", "--root-crl-url", "http://127.0.0.1/root-crl"});
  CHECK(r.exit_code == 3);
  CHECK(contains(r.err, "--intermediate"));
  CHECK_FALSE(std::filesystem::exists(data / "ca" / "root.crt"));
}

TEST_CASE("onboardctl serve publishes the root CRL next to the CRL without authentication") {
  Fleet fleet({"--intermediate"});
  Fleet plain;  // no intermediate: no root CRL
  for (const Fleet* f : {&fleet, &plain}) {
    test::ChildProcess server({ONBOARDCTL_PATH, "--data-dir", f->data.path().string(), "serve",
                               "--listen", "127.0.0.1:0", "--threads", "2"},
                              f->out / "serve.log");
    const std::string line = server.read_line();
    REQUIRE(line.starts_with("serving on http://127.0.0.1:"));
    httplib::Client anyone("127.0.0.1", std::stoi(line.substr(line.rfind(':') + 1)));
    anyone.set_read_timeout(20, 0);
    auto crl = anyone.Get("/crl");
    REQUIRE(crl);
    CHECK(crl->status == 200);  // the positive control
    auto der = anyone.Get("/root-crl");
    auto pem = anyone.Get("/root-crl.pem");
    REQUIRE(der);
    REQUIRE(pem);
    if (f == &plain) {
      CHECK(der->status == 404);
      CHECK(pem->status == 404);
      continue;
    }
    CHECK(der->status == 200);
    CHECK(der->get_header_value("Content-Type") == "application/pkix-crl");
    CHECK(pem->status == 200);
    CHECK(pem->body == slurp(f->data / "root-crl.pem"));
    auto parsed = crl_from_pem(pem->body);
    REQUIRE(parsed.ok());
    CHECK(crl_to_der(parsed->get()) == der->body);
    // Signed by the root, not by the issuing CA that signs /crl.
    auto root = certificate_from_pem(slurp(f->data / "ca" / "root.crt"));
    REQUIRE(root.ok());
    ossl::Ptr<EVP_PKEY> root_key(X509_get_pubkey(root->get()));
    CHECK(X509_CRL_verify(parsed->get(), root_key.get()) == 1);
    CHECK(der->body != crl->body);
  }
}

TEST_CASE("an intermediate a registry does not know yet is recorded when the root CRL is written") {
  Fleet fleet({"--intermediate"});
  {
    // As a registry from before version 3 has it: the intermediate is not recorded.
    SQLite::Database raw((fleet.data / "registry.db").string(), SQLite::OPEN_READWRITE);
    raw.exec("DELETE FROM certificates WHERE kind = 'other'");
  }
  REQUIRE(json::parse(fleet({"ca", "list", "--kind", "other", "--json"}).out).empty());
  auto r = fleet({"crl"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto others = json::parse(fleet({"ca", "list", "--kind", "other", "--json"}).out);
  REQUIRE(others.size() == 1);
  CHECK(others[0]["serial"] == serial_of(fleet.data / "ca" / "issuing.crt"));
  auto root = certificate_from_pem(slurp(fleet.data / "ca" / "root.crt"));
  REQUIRE(root.ok());
  CHECK(others[0]["issuer"] == describe_certificate(root->get()).subject);
}
