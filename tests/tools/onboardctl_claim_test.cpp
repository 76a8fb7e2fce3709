// `onboardctl claim` as an operator meets it: create (a short-lived claim certificate and key in
// an AES-256 zip), list, show, revoke (onto the CRL), and the refusals of bad input, each with its
// exit code and a message naming what is wrong. Real onboardctl processes on a real data
// directory.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bundle/zip.h"
#include "ca/certificate.h"
#include "core/files.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using nlohmann::json;
using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;

struct Site {
  TempDir data, out;
  Site() {
    auto r = (*this)({"init", "--key-alg", "p256", "--no-group"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  RunResult operator()(Args args) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data.path().string()});
    return onboard::test::run(args);
  }
  RunResult create(const std::string& name, Args extra) const {
    Args args{"claim",
              "create",
              name,
              "--out",
              (out / (name + ".zip")).string(),
              "--password-out",
              (out / (name + ".pw")).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return (*this)(args);
  }
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("claim create packages a short-lived claim certificate that list and show report") {
  Site site;
  auto r = site.create("factory-1", {"--quota", "500", "--expires", "7d", "--type", "sensors",
                                     "--id-pattern", "sensor-[0-9]{6}"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "claim factory-1"));
  CHECK_FALSE(contains(r.out, "password     "));  // it went to the file
  const auto password_file = site.out / "factory-1.pw";
  struct stat st {};
  REQUIRE(::stat(password_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::string password;
  std::getline(std::ifstream(password_file), password);

  auto files = bundle::read_encrypted_zip(site.out / "factory-1.zip", Secret(password));
  REQUIRE(files.ok());
  std::map<std::string, std::string> by_name;
  for (const auto& f : *files) by_name[f.name] = std::string(f.content.view());
  REQUIRE(by_name.count("claim.crt") == 1);
  CHECK(by_name.count("claim.key") == 1);
  CHECK(by_name.count("ca-chain.pem") == 1);
  const auto meta = json::parse(by_name["claim.json"]);
  CHECK(meta["claim"] == "factory-1");
  CHECK(meta["client_id_pattern"] == "sensor-[0-9]{6}");
  CHECK(meta["topics"]["request"] == "$provision/<client id>/csr");
  // The certificate lives exactly as long as the claim: seven days (and five minutes of skew).
  auto cert = ca::certificate_from_pem(by_name["claim.crt"]);
  REQUIRE(cert.ok());
  const auto info = ca::describe_certificate(cert->get());
  CHECK(info.subject_cn == "factory-1");
  CHECK(info.not_after - info.not_before == 7 * 86400 + 300);

  auto shown = site({"claim", "show", "factory-1", "--json"});
  REQUIRE(shown.exit_code == 0);
  const auto claim = json::parse(shown.out);
  CHECK(claim["state"] == "active");
  CHECK(claim["quota"] == 500);
  CHECK(claim["quota_used"] == 0);
  CHECK(claim["type"] == "sensors");
  CHECK(claim["certificate_sha256"] == info.sha256_fingerprint);
  auto listed = site({"claim", "list"});
  REQUIRE(listed.exit_code == 0);
  CHECK(contains(listed.out, "factory-1"));
  CHECK(contains(listed.out, "sensor-[0-9]{6}"));
  // Recorded as a claim certificate, and audited.
  CHECK(contains(site({"ca", "list"}).out, "claim"));
  CHECK(contains(site({"audit", "list"}).out, "claim.create"));
  CHECK(site({"audit", "verify"}).exit_code == 0);
}

TEST_CASE("claim revoke puts the claim certificate on the CRL and is final") {
  Site site;
  REQUIRE(site.create("factory-1", {"--quota", "5", "--expires", "1h"}).exit_code == 0);
  const auto claim = json::parse(site({"claim", "show", "factory-1", "--json"}).out);
  auto r = site({"claim", "revoke", "factory-1"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "revoked claim factory-1"));
  CHECK(json::parse(site({"claim", "show", "factory-1", "--json"}).out)["state"] == "revoked");
  // Its certificate is revoked, and the CRL lists its serial.
  std::string serial;
  for (const auto& c : json::parse(site({"ca", "list", "--json"}).out)) {
    if (c["sha256_fingerprint"] == claim["certificate_sha256"]) {
      CHECK(c["status"] == "revoked");
      serial = c["serial"];
    }
  }
  REQUIRE_FALSE(serial.empty());
  auto crl = onboard::test::run(
      {"/usr/bin/openssl", "crl", "-in", (site.data / "crl.pem").string(), "-noout", "-text"});
  REQUIRE(crl.exit_code == 0);
  CHECK(contains(crl.out, serial.substr(serial.find_first_not_of('0'))));
  auto again = site({"claim", "revoke", "factory-1"});
  CHECK(again.exit_code == 0);
  CHECK(contains(again.out, "already revoked"));
  CHECK(site({"audit", "verify"}).exit_code == 0);
}

TEST_CASE("claim create refuses bad input and a taken name and writes nothing") {
  Site site;
  struct Case {
    Args args;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--quota", "0", "--expires", "1h"}, 3, "--quota must be 1 to"},
      {{"--quota", "5", "--expires", "soon"}, 3, "--expires"},
      {{"--quota", "5", "--expires", "400d"}, 3, "--expires"},
      {{"--quota", "5", "--expires", "1h", "--id-pattern", "(a|b)+"},
       3,
       "--id-pattern: id pattern: '(' is not supported"},
      {{"--quota", "5", "--expires", "1h", "--id-pattern", "a**"}, 3, "quantifier"},
      {{"--quota", "5", "--expires", "1h", "--type", "bad type"}, 3, "type"},
  };
  for (const auto& c : cases) {
    auto r = site.create("factory-x", c.args);
    INFO(r.out << r.err);
    CHECK(r.exit_code == c.exit_code);
    CHECK(contains(r.err, c.message));
    CHECK_FALSE(std::filesystem::exists(site.out / "factory-x.zip"));
  }
  auto bad_name = site.create("factory/x", {"--quota", "5", "--expires", "1h"});
  CHECK(bad_name.exit_code == 3);
  CHECK(contains(bad_name.err, "claim name contains '/'"));

  REQUIRE(site.create("factory-1", {"--quota", "5", "--expires", "1h"}).exit_code == 0);
  std::filesystem::remove(site.out / "factory-1.pw");
  std::filesystem::remove(site.out / "factory-1.zip");
  auto dup = site.create("factory-1", {"--quota", "5", "--expires", "1h"});
  CHECK(dup.exit_code == 5);
  CHECK(contains(dup.err, "claim factory-1 already exists"));
  CHECK_FALSE(std::filesystem::exists(site.out / "factory-1.zip"));
  CHECK(json::parse(site({"claim", "list", "--json"}).out).size() == 1);

  auto missing = site({"claim", "show", "nobody"});
  CHECK(missing.exit_code == 4);
  CHECK(contains(missing.err, "claim nobody does not exist"));
  CHECK(site({"claim", "revoke", "nobody"}).exit_code == 4);
  // --help says what a claim may do, and who signs its CSRs.
  auto help = site({"claim", "create", "--help"});
  CHECK(contains(help.out, "$provision/<its client id>/csr"));
  CHECK(contains(help.out, "onboardctl serve --provision-token-file"));
  CHECK_FALSE(contains(help.out, "not implemented"));
}
