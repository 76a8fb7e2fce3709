// Certificates that never expire by surprise: devices listed by certificate expiry, the CA's own
// certificates' expiry, and the rotation of the issuing CA with the old one still verifying and
// revoking its devices. The real onboardctl, certificates issued with short validity, and
// libfaketime where time must pass; openssl as the relying party.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using nlohmann::json;
using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The environment that runs a program `offset` ahead ("+20d") on the wall clock (libfaketime).
std::map<std::string, std::string> clock_ahead(const std::string& offset) {
  const char* asan = std::getenv("ASAN_OPTIONS");
  return {{"LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"},
          {"ASAN_OPTIONS", std::string(asan != nullptr ? asan : "") + ":verify_asan_link_order=0"},
          {"FAKETIME", offset},
          {"FAKETIME_DONT_FAKE_MONOTONIC", "1"},
          {"DONT_FAKE_MONOTONIC", "1"}};
}

struct Site {
  TempDir dir;
  std::filesystem::path data() const { return dir / "data"; }
  std::filesystem::path ca() const { return data() / "ca"; }
  // `ca_init`: options of `ca init` run before `init` (which then keeps that CA).
  explicit Site(Args ca_init = {}) {
    if (!ca_init.empty()) {
      ca_init.insert(ca_init.begin(), "ca");
      must(ctl(ca_init));
    }
    must(ctl({"init", "--no-group", "--key-alg", "p256"}));
  }
  RunResult ctl(Args args, const std::map<std::string, std::string>& env = {}) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data().string()});
    return onboard::test::run(args, {}, env);
  }
  static void must(const RunResult& r) {
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
  }
  std::filesystem::path cert(const std::string& id) const { return dir / (id + ".crt"); }
  void add_device(const std::string& id, int days = 365) const {
    must(ctl({"device", "register", id, "--key-alg", "p256", "--days", std::to_string(days),
              "--key-out", (dir / (id + ".key")).string(), "--cert-out", cert(id).string()}));
  }
  // openssl verify as a relying party with a CRL check, trusting the root only; the
  // intermediates come from chain.pem, the CRLs from crl.pem.
  RunResult openssl_verify(const std::string& id) const {
    return onboard::test::run({"/usr/bin/openssl", "verify", "-crl_check", "-CAfile",
                               (ca() / "root.crt").string(), "-untrusted",
                               (ca() / "chain.pem").string(), "-CRLfile",
                               (data() / "crl.pem").string(), cert(id).string()});
  }
  json status() const {
    auto r = ctl({"ca", "status", "--json"});
    must(r);
    return json::parse(r.out);
  }
};

std::string file_text(const std::filesystem::path& path) {
  auto text = read_file(path);
  REQUIRE(text.ok());
  return *text;
}

std::size_t count(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("device list --expiring lists the devices whose certificate expires within the window") {
  Site site;
  site.add_device("soon", 10);
  site.add_device("later", 365);

  auto all = site.ctl({"device", "list"});
  site.must(all);
  CHECK(contains(all.out, "CERT EXPIRES"));
  CHECK(contains(all.out, "soon"));
  CHECK(contains(all.out, "later"));

  auto within = site.ctl({"device", "list", "--expiring", "30d"});
  site.must(within);
  CHECK(contains(within.out, "soon"));
  CHECK_FALSE(contains(within.out, "later"));
  CHECK_FALSE(contains(within.out, "(expired)"));
  auto none = site.ctl({"device", "list", "--expiring", "9d"});
  site.must(none);
  CHECK_FALSE(contains(none.out, "soon"));

  auto shown = site.ctl({"device", "show", "soon"});
  site.must(shown);
  CHECK(contains(shown.out, "expires   "));
  // Ten days, less the seconds since it was issued.
  CHECK((contains(shown.out, "(in 9d 23h)") || contains(shown.out, "(in 10d)")));

  // Twenty days on, the short certificate has expired: still listed, and said so.
  const auto later = clock_ahead("+20d");
  auto expired = site.ctl({"device", "list", "--expiring", "30d"}, later);
  site.must(expired);
  CHECK(contains(expired.out, "soon"));
  CHECK(contains(expired.out, "(expired)"));
  CHECK_FALSE(contains(expired.out, "later"));
  auto as_json = site.ctl({"device", "list", "--expiring", "30d", "--json"}, later);
  site.must(as_json);
  json listed = json::parse(as_json.out);
  REQUIRE(listed["devices"].size() == 1);
  CHECK(listed["devices"][0]["id"] == "soon");
  CHECK(listed["devices"][0]["certificate_expired"] == true);
  CHECK(listed["devices"][0]["certificate_not_after"].is_string());
  auto shown_later = site.ctl({"device", "show", "soon"}, later);
  site.must(shown_later);
  CHECK(contains(shown_later.out, "(expired 10d ago)"));

  for (const char* bad : {"30", "month", "0d", "-1d", "99999d"}) {
    INFO(bad);
    auto r = site.ctl({"device", "list", "--expiring", bad});
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "--expiring must be a whole number and a unit"));
  }
}

TEST_CASE("ca status shows each CA certificate with its days left and warns about one that ends") {
  Site site({"init", "--intermediate", "--key-alg", "p256", "--intermediate-key-alg", "p256",
             "--days", "400", "--intermediate-days", "60"});
  auto text = site.ctl({"ca", "status"});
  site.must(text);
  CHECK(contains(text.out, "DAYS LEFT"));
  CHECK(contains(text.out, "mosquitto-onboard Root CA"));
  CHECK(contains(text.out, "mosquitto-onboard Issuing CA"));
  // Under the default 90 days: the issuing CA is warned about, the root (400 days) is not.
  CHECK(contains(text.err, "warning: the issuing CA"));
  CHECK_FALSE(contains(text.err, "warning: the root CA"));

  auto quiet = site.ctl({"ca", "status", "--warn-within", "30d"});
  site.must(quiet);
  CHECK_FALSE(contains(quiet.err, "warning"));

  json status = site.status();
  REQUIRE(status["certificates"].size() == 2);
  const auto& root = status["certificates"][0];
  const auto& issuing = status["certificates"][1];
  CHECK(root["role"] == "root");
  // Whole days left, rounded down: 400 within the second the CA was made, 399 after.
  CHECK((root["days_left"] == 399 || root["days_left"] == 400));
  CHECK(root["warning"].is_null());
  CHECK(issuing["role"] == "issuing");
  CHECK((issuing["days_left"] == 59 || issuing["days_left"] == 60));
  CHECK(issuing["warning"] == "expires within 90d");
  CHECK(issuing["serial"].get<std::string>().size() >= 16);
  CHECK(issuing["not_after"].is_string());

  // Past the issuing CA's end: expired, and said so.
  auto expired = site.ctl({"ca", "status"}, clock_ahead("+61d"));
  site.must(expired);
  CHECK(contains(expired.out, "EXPIRED"));
  CHECK(contains(expired.err, "the issuing CA mosquitto-onboard Issuing CA (serial"));

  auto bad = site.ctl({"ca", "status", "--warn-within", "soon"});
  CHECK(bad.exit_code == 3);
  CHECK(contains(bad.err, "--warn-within must be a whole number and a unit"));
}

TEST_CASE("ca rotate makes a new issuing CA while the old one still verifies and revokes devices") {
  Site site({"init", "--intermediate", "--key-alg", "p256", "--intermediate-key-alg", "p256"});
  site.add_device("dev-a");
  const std::string old_serial = site.status()["certificates"][1]["serial"];
  const std::string old_issuing = file_text(site.ca() / "issuing.crt");
  site.must(site.openssl_verify("dev-a"));

  auto rotated = site.ctl({"ca", "rotate", "--key-alg", "p256"});
  site.must(rotated);
  CHECK(contains(rotated.out, "restart the broker"));
  site.add_device("dev-b");

  // The old issuing CA is kept under its serial, certificate and key; a new one is current.
  CHECK(file_text(site.ca() / ("issuing-" + old_serial + ".crt")) == old_issuing);
  CHECK(std::filesystem::exists(site.ca() / ("issuing-" + old_serial + ".key")));
  CHECK(file_text(site.ca() / "issuing.crt") != old_issuing);
  json status = site.status();
  REQUIRE(status["certificates"].size() == 3);
  CHECK(status["certificates"][1]["role"] == "issuing");
  CHECK(status["certificates"][2]["role"] == "earlier issuing");
  CHECK(status["certificates"][2]["serial"] == old_serial);
  // chain.pem: both issuing CAs and the root; crl.pem: a CRL for each issuing CA.
  CHECK(count(file_text(site.ca() / "chain.pem"), "BEGIN CERTIFICATE") == 3);
  CHECK(count(file_text(site.data() / "crl.pem"), "BEGIN X509 CRL") == 2);
  auto issuer_a = onboard::test::run(
      {"/usr/bin/openssl", "x509", "-noout", "-issuer", "-in", site.cert("dev-a").string()});
  auto issuer_b = onboard::test::run(
      {"/usr/bin/openssl", "x509", "-noout", "-issuer", "-in", site.cert("dev-b").string()});
  CHECK(issuer_a.out != issuer_b.out);

  // A relying party with the chain and the CRL file accepts both; onboardctl too. With the new
  // issuer's CRL alone (the first in the file) the old issuer's device fails: no CRL of its own.
  auto first =
      onboard::test::run({"/usr/bin/openssl", "crl", "-in", (site.data() / "crl.pem").string(),
                          "-out", (site.dir / "first-crl.pem").string()});
  site.must(first);
  auto no_crl = onboard::test::run(
      {"/usr/bin/openssl", "verify", "-crl_check", "-CAfile", (site.ca() / "root.crt").string(),
       "-untrusted", (site.ca() / "chain.pem").string(), "-CRLfile",
       (site.dir / "first-crl.pem").string(), site.cert("dev-a").string()});
  CHECK(no_crl.exit_code != 0);
  CHECK(contains(no_crl.out + no_crl.err, "unable to get certificate CRL"));
  site.must(site.openssl_verify("dev-a"));
  site.must(site.openssl_verify("dev-b"));
  site.must(site.ctl({"ca", "verify", site.cert("dev-a").string()}));
  site.must(site.ctl({"ca", "verify", site.cert("dev-b").string()}));

  // Revoking a device of the old issuer puts it on that issuer's CRL, which the old key signs.
  site.must(site.ctl({"device", "revoke", "dev-a"}));
  auto refused = site.openssl_verify("dev-a");
  CHECK(refused.exit_code != 0);
  CHECK(contains(refused.out + refused.err, "certificate revoked"));
  site.must(site.openssl_verify("dev-b"));
  const std::string crl = (site.data() / "crl.pem").string();
  auto own_refused = site.ctl({"ca", "verify", site.cert("dev-a").string(), "--crl", crl});
  CHECK(own_refused.exit_code == 3);
  CHECK(contains(own_refused.err, "revoked"));
  site.must(site.ctl({"ca", "verify", site.cert("dev-b").string(), "--crl", crl}));

  // Rotating again the same day would repeat the default name: refused, nothing changed.
  const std::string current = file_text(site.ca() / "issuing.crt");
  auto same_name = site.ctl({"ca", "rotate", "--key-alg", "p256"});
  CHECK(same_name.exit_code == 3);
  CHECK(contains(same_name.err, "--name"));
  CHECK(file_text(site.ca() / "issuing.crt") == current);

  // Without the root key there, nothing rotates.
  std::filesystem::rename(site.ca() / "root.key", site.dir / "root.key.offline");
  auto offline = site.ctl({"ca", "rotate", "--name", "Issuing CA 3", "--key-alg", "p256"});
  CHECK(offline.exit_code == 4);
  CHECK(contains(offline.err, "rotation needs the root CA key"));
  CHECK(file_text(site.ca() / "issuing.crt") == current);
  CHECK(site.status()["certificates"].size() == 3);
}

TEST_CASE("ca rotate refuses a CA whose root signs devices itself and says why") {
  Site site;
  site.add_device("dev-a");
  const std::string root = file_text(site.ca() / "root.crt");
  auto r = site.ctl({"ca", "rotate"});
  CHECK(r.exit_code == 3);
  CHECK(contains(r.err, "no issuing intermediate"));
  CHECK(contains(r.err, "--intermediate"));
  CHECK(file_text(site.ca() / "root.crt") == root);
  CHECK_FALSE(std::filesystem::exists(site.ca() / "issuing.crt"));
}
