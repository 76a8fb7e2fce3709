// The OCSP responder of `onboardctl serve`, asked by real clients: OpenSSL's `openssl ocsp` and
// GnuTLS's `ocsptool`, against a CA with an issuing intermediate whose certificates carry the
// responder's URL. Statuses come from the registry, which the CLI changes while the server runs.
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>

#include <httplib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ca/ocsp.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/ossl.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A CA with an issuing intermediate, the server on it, the OCSP URL set to where it listens, and
// devices registered after that (so their certificates carry the URL).
struct Responder {
  explicit Responder(Args init_extra = {}) {
    Args init{"init", "--no-group", "--key-alg", "p256", "--intermediate"};
    init.insert(init.end(), init_extra.begin(), init_extra.end());
    REQUIRE(ctl(init).exit_code == 0);
    start();
  }
  // Starts the server (again: after 'ca rotate' it must be restarted) and points the OCSP URL of
  // certificates issued from now on at it.
  void start() {
    server.reset();
    server = std::make_unique<test::ChildProcess>(
        Args{ONBOARDCTL_PATH, "--data-dir", data().string(), "serve", "--listen", "127.0.0.1:0",
             "--threads", "2"},
        dir / "serve.log");
    const std::string line = server->read_line();
    REQUIRE(line.starts_with("serving on http://127.0.0.1:"));
    port = std::stoi(line.substr(line.rfind(':') + 1));
    url = "http://127.0.0.1:" + std::to_string(port) + "/ocsp";
    auto set = ctl({"ca", "set-ocsp-url", url});
    INFO(set.err);
    REQUIRE(set.exit_code == 0);
  }
  std::filesystem::path data() const { return dir / "data"; }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  RunResult ctl(Args args) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data().string()});
    return test::run(args);
  }
  void register_device(const std::string& id) const {
    auto r = ctl({"device", "register", id, "--key-alg", "p256", "--key-out", path(id + ".key"),
                  "--cert-out", path(id + ".crt")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  std::string issuer() const { return (data() / "ca" / "issuing.crt").string(); }
  std::string chain() const { return (data() / "ca" / "chain.pem").string(); }
  // `openssl ocsp` as an operator types it (it sends a nonce and checks the echo); stdout and
  // stderr together.
  std::string openssl_ocsp(const std::string& cert, Args extra = {}) const {
    return openssl_ocsp_under(issuer(), cert, std::move(extra));
  }
  std::string openssl_ocsp_under(const std::string& issuer_cert, const std::string& cert,
                                 Args extra = {}) const {
    Args args{"/usr/bin/openssl", "ocsp", "-issuer", issuer_cert, "-cert", cert, "-url", url,
              "-CAfile",          chain()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = test::run(args);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    return r.out + r.err;
  }
  std::string log() const {
    auto text = read_file(dir / "serve.log");
    return text.ok() ? *text : "";
  }

  TempDir dir;
  std::unique_ptr<test::ChildProcess> server;
  int port = 0;
  std::string url;
};

// The DER request `openssl ocsp -reqout` writes for one certificate.
std::string request_for(const Responder& r, const std::string& cert, bool nonce) {
  const std::string out = r.path("req.der");
  Args args{"/usr/bin/openssl", "ocsp", "-issuer", r.issuer(), "-cert", cert, "-reqout", out};
  if (!nonce) args.push_back("-no_nonce");
  REQUIRE(test::run(args).exit_code == 0);
  auto der = read_file(out);
  REQUIRE(der.ok());
  return *der;
}

ossl::Ptr<OCSP_RESPONSE> parse_response(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OCSP_RESPONSE* raw = d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size()));
  REQUIRE(raw != nullptr);
  return ossl::Ptr<OCSP_RESPONSE>(raw);
}

// Every character but letters and digits as %XX, so that '+', '/' and '=' travel escaped.
std::string url_encode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("openssl ocsp reports good revoked and unknown as the registry says, at once") {
  Responder r;
  r.register_device("ocsp-good");
  r.register_device("ocsp-doomed");
  // A URL that is not http(s) is refused and changes nothing.
  auto refused = r.ctl({"ca", "set-ocsp-url", "ftp://127.0.0.1/ocsp"});
  CHECK(refused.exit_code == 3);  // invalid input
  CHECK(contains(refused.err, "OCSP URL must start with http:// or https://"));
  // The certificates name the responder (Authority Information Access).
  auto aia = test::run(
      {"/usr/bin/openssl", "x509", "-in", r.path("ocsp-good.crt"), "-noout", "-ocsp_uri"});
  CHECK(aia.out == r.url + "\n");

  const std::string good = r.openssl_ocsp(r.path("ocsp-good.crt"));
  CHECK(contains(good, "Response verify OK"));
  CHECK(contains(good, r.path("ocsp-good.crt") + ": good"));
  CHECK(contains(good, "Next Update:"));
  CHECK_FALSE(contains(good, "WARNING: no nonce in response"));  // the nonce came back
  const std::string before = r.openssl_ocsp(r.path("ocsp-doomed.crt"));
  CHECK(contains(before, r.path("ocsp-doomed.crt") + ": good"));

  // Revoked with the CLI while the server runs: the very next answer says so.
  REQUIRE(r.ctl({"device", "revoke", "ocsp-doomed", "--reason", "keyCompromise"}).exit_code == 0);
  const std::string after = r.openssl_ocsp(r.path("ocsp-doomed.crt"));
  CHECK(contains(after, "Response verify OK"));
  CHECK(contains(after, r.path("ocsp-doomed.crt") + ": revoked"));
  CHECK(contains(after, "Reason: keyCompromise"));
  CHECK(contains(after, "Revocation Time:"));
  CHECK(contains(r.openssl_ocsp(r.path("ocsp-good.crt")), ": good"));  // the other is untouched

  // A certificate this CA never issued, though named under its issuer: unknown. The root's own
  // certificate asked about under the issuing CA is one (its serial is not the issuing CA's).
  const std::string unknown =
      r.openssl_ocsp(r.path("ocsp-good.crt"), {"-serial", "0x0123456789ABCDEF"});
  CHECK(contains(unknown, "Response verify OK"));
  CHECK(contains(unknown, "0x0123456789ABCDEF: unknown"));
  // And one issued by another CA: its issuer hashes are not ours.
  TempDir other;
  REQUIRE(test::run({ONBOARDCTL_PATH, "--data-dir", (other / "data").string(), "init", "--no-group",
                     "--key-alg", "p256"})
              .exit_code == 0);
  REQUIRE(test::run({ONBOARDCTL_PATH, "--data-dir", (other / "data").string(), "device", "register",
                     "stranger", "--key-alg", "p256", "--key-out", (other / "s.key").string(),
                     "--cert-out", (other / "s.crt").string()})
              .exit_code == 0);
  auto stranger = test::run({"/usr/bin/openssl", "ocsp", "-issuer",
                             (other / "data" / "ca" / "root.crt").string(), "-cert",
                             (other / "s.crt").string(), "-url", r.url, "-CAfile", r.chain()});
  CHECK(contains(stranger.out, "unknown"));

  // The responder certificate the server made is recorded like every certificate the CA signs.
  auto listed = r.ctl({"ca", "list", "--kind", "other"});
  CHECK(contains(listed.out, "OCSP Responder"));
  CHECK(test::mode_of(r.data() / "ca" / "ocsp.key") == 0600);
}

TEST_CASE("the OCSP responder answers GET and malformed requests the way OCSP clients expect") {
  Responder r;
  r.register_device("ocsp-get");
  httplib::Client client("127.0.0.1", r.port);
  client.set_read_timeout(20, 0);

  // GET /ocsp/{base64 of the DER}, URL-encoded ('+', '/' and '=' escaped) as RFC 6960 A.1 says.
  const std::string der = request_for(r, r.path("ocsp-get.crt"), /*nonce=*/true);
  const std::string encoded = url_encode(base64_encode(der));
  auto got = client.Get(("/ocsp/" + encoded).c_str());
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(got->get_header_value("Content-Type") == "application/ocsp-response");
  auto response = parse_response(got->body);
  REQUIRE(OCSP_response_status(response.get()) == OCSP_RESPONSE_STATUS_SUCCESSFUL);
  ossl::Ptr<OCSP_BASICRESP> basic(OCSP_response_get1_basic(response.get()));
  REQUIRE(basic);
  REQUIRE(OCSP_resp_count(basic.get()) == 1);
  int reason = 0;
  ASN1_GENERALIZEDTIME *revoked = nullptr, *this_update = nullptr, *next_update = nullptr;
  CHECK(OCSP_single_get0_status(OCSP_resp_get0(basic.get(), 0), &reason, &revoked, &this_update,
                                &next_update) == V_OCSP_CERTSTATUS_GOOD);
  // The nonce comes back exactly as sent.
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OCSP_REQUEST* request = d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size()));
  REQUIRE(request != nullptr);
  CHECK(OCSP_check_nonce(request, basic.get()) == 1);
  OCSP_REQUEST_free(request);

  // Without a nonce, POSTed by curl: still answered, with none.
  const std::string plain = request_for(r, r.path("ocsp-get.crt"), /*nonce=*/false);
  auto posted = client.Post("/ocsp", plain, "application/ocsp-request");
  REQUIRE(posted);
  CHECK(posted->status == 200);
  auto plain_response = parse_response(posted->body);
  ossl::Ptr<OCSP_BASICRESP> plain_basic(OCSP_response_get1_basic(plain_response.get()));
  REQUIRE(plain_basic);
  CHECK(OCSP_BASICRESP_get_ext_by_NID(plain_basic.get(), NID_id_pkix_OCSP_Nonce, -1) < 0);

  // Malformed, by POST and by GET: an OCSP malformedRequest, not an HTTP error page.
  auto is_malformed = [](const httplib::Result& res) {
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Content-Type") == "application/ocsp-response");
    return OCSP_response_status(parse_response(res->body).get()) ==
           OCSP_RESPONSE_STATUS_MALFORMEDREQUEST;
  };
  CHECK(is_malformed(client.Post("/ocsp", "this is not DER", "application/ocsp-request")));
  CHECK(is_malformed(
      client.Post("/ocsp", der.substr(0, der.size() - 2), "application/ocsp-request")));
  CHECK(is_malformed(client.Get("/ocsp/not*base64")));
  CHECK(is_malformed(client.Get("/ocsp/" + base64_encode("not DER either"))));
  // Larger than any OCSP request: malformed, without being parsed.
  CHECK(is_malformed(
      client.Post("/ocsp", std::string(20 * 1024, '\x30'), "application/ocsp-request")));
  // A body of another type is refused before it is read, as on every route.
  auto json = client.Post("/ocsp", "{}", "application/json");
  REQUIRE(json);
  CHECK(json->status == 415);
  // And the valid request still answers after all of that.
  auto again = client.Post("/ocsp", plain, "application/ocsp-request");
  REQUIRE(again);
  CHECK(OCSP_response_status(parse_response(again->body).get()) == OCSP_RESPONSE_STATUS_SUCCESSFUL);
}

TEST_CASE("GnuTLS ocsptool agrees with the registry on good and revoked") {
  Responder r;
  r.register_device("gnutls-good");
  r.register_device("gnutls-revoked");
  REQUIRE(r.ctl({"device", "revoke", "gnutls-revoked", "--reason", "superseded"}).exit_code == 0);
  auto ask = [&](const std::string& id) {
    // The URL from the certificate's Authority Information Access; the root as trust anchor, the
    // responder certificate and the issuing CA coming with the answer and the issuer.
    auto res = test::run({"/usr/bin/ocsptool", "--ask", "--load-cert", r.path(id + ".crt"),
                          "--load-issuer", r.issuer(), "--load-trust", r.chain(), "--nonce"});
    INFO(res.out << res.err);
    CHECK(contains(res.out + res.err, "Verifying OCSP Response: Success"));
    return res.out + res.err;
  };
  const std::string good = ask("gnutls-good");
  CHECK(contains(good, "Certificate Status: good"));
  CHECK(contains(good, "Nonce: "));  // sent with --nonce, echoed, checked
  CHECK(contains(ask("gnutls-revoked"), "Certificate Status: revoked"));
}

namespace {

// The serial of a certificate file, as openssl prints it (upper-case hex).
std::string serial_of(const std::string& cert) {
  auto r = test::run({"/usr/bin/openssl", "x509", "-in", cert, "-noout", "-serial"});
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.starts_with("serial="));
  return r.out.substr(7, r.out.size() - 8);
}

std::string crl_distribution_point(const std::string& cert) {
  auto r = test::run(
      {"/usr/bin/openssl", "x509", "-in", cert, "-noout", "-ext", "crlDistributionPoints"});
  const auto at = r.out.find("URI:");
  REQUIRE(at != std::string::npos);
  return r.out.substr(at + 4, r.out.find('\n', at) - at - 4);
}

}  // namespace

TEST_CASE("after ca rotate openssl ocsp gets answers for devices of both issuing CAs") {
  Responder r;
  r.register_device("old-good");
  r.register_device("old-doomed");
  const std::string old_issuer = r.path("old-issuing.crt");
  REQUIRE(std::filesystem::copy_file(r.issuer(), old_issuer));
  auto rotated = r.ctl({"ca", "rotate", "--key-alg", "p256"});
  INFO(rotated.out << rotated.err);
  REQUIRE(rotated.exit_code == 0);
  r.start();  // a rotation takes effect in a server at its restart
  r.register_device("new-good");
  r.register_device("new-doomed");
  REQUIRE(r.ctl({"device", "revoke", "old-doomed", "--reason", "keyCompromise"}).exit_code == 0);
  REQUIRE(r.ctl({"device", "revoke", "new-doomed", "--reason", "superseded"}).exit_code == 0);

  // Each certificate asked under its own issuer: the registry's status, from a responder that
  // issuer certified (openssl checks that: "Response verify OK").
  const std::string old_good = r.openssl_ocsp_under(old_issuer, r.path("old-good.crt"));
  CHECK(contains(old_good, "Response verify OK"));
  CHECK(contains(old_good, r.path("old-good.crt") + ": good"));
  const std::string old_doomed = r.openssl_ocsp_under(old_issuer, r.path("old-doomed.crt"));
  CHECK(contains(old_doomed, "Response verify OK"));
  CHECK(contains(old_doomed, r.path("old-doomed.crt") + ": revoked"));
  CHECK(contains(old_doomed, "Reason: keyCompromise"));
  const std::string new_good = r.openssl_ocsp(r.path("new-good.crt"));
  CHECK(contains(new_good, "Response verify OK"));
  CHECK(contains(new_good, r.path("new-good.crt") + ": good"));
  const std::string new_doomed = r.openssl_ocsp(r.path("new-doomed.crt"));
  CHECK(contains(new_doomed, "Response verify OK"));
  CHECK(contains(new_doomed, r.path("new-doomed.crt") + ": revoked"));

  // A certificate asked under the wrong issuer is not ours to vouch for: unknown, never good.
  const std::string new_serial = "0x" + serial_of(r.path("new-good.crt"));
  const std::string crossed =
      r.openssl_ocsp_under(old_issuer, r.path("old-good.crt"), {"-serial", new_serial});
  CHECK(contains(crossed, "Response verify OK"));
  CHECK(contains(crossed, new_serial + ": unknown"));

  // The responders: one per issuer, each issued by it and kept beside it.
  const auto ca_dir = r.data() / "ca";
  const std::string old_serial = serial_of(old_issuer);
  const auto kept_responder = (ca_dir / ("ocsp-" + old_serial + ".crt")).string();
  REQUIRE(std::filesystem::exists(kept_responder));
  CHECK(test::run(
            {"/usr/bin/openssl", "verify", "-partial_chain", "-CAfile", old_issuer, kept_responder})
            .exit_code == 0);
  CHECK(test::run(
            {"/usr/bin/openssl", "verify", "-partial_chain", "-CAfile", r.issuer(), kept_responder})
            .exit_code != 0);
  CHECK(test::run({"/usr/bin/openssl", "verify", "-partial_chain", "-CAfile", r.issuer(),
                   (ca_dir / "ocsp.crt").string()})
            .exit_code == 0);
  CHECK(test::mode_of(ca_dir / ("ocsp-" + old_serial + ".key")) == 0600);
}

TEST_CASE("after ca rotate each issuing CA's CRL is served at the URL its certificates name") {
  Responder r({"--crl-url", "http://ca.example/crl"});
  r.register_device("old-dev");
  const std::string old_issuer = r.path("old-issuing.crt");
  REQUIRE(std::filesystem::copy_file(r.issuer(), old_issuer));
  REQUIRE(r.ctl({"ca", "rotate", "--key-alg", "p256"}).exit_code == 0);
  r.start();
  r.register_device("new-dev");
  const std::string new_serial = serial_of(r.issuer());
  // The certificates of the first issuer name the plain URL; those of the new one (made while the
  // first is kept) the URL of their own issuer's CRL.
  CHECK(crl_distribution_point(r.path("old-dev.crt")) == "http://ca.example/crl");
  CHECK(crl_distribution_point(r.path("new-dev.crt")) == "http://ca.example/crl/" + new_serial);
  REQUIRE(r.ctl({"device", "revoke", "old-dev"}).exit_code == 0);
  REQUIRE(r.ctl({"device", "revoke", "new-dev"}).exit_code == 0);

  httplib::Client client("127.0.0.1", r.port);
  client.set_read_timeout(20, 0);
  // Fetches a DER CRL from `path` and checks a device certificate with it as a relying party
  // that follows the distribution point does: revoked means the CRL is that issuer's and lists it.
  auto check_with = [&](const std::string& path, const std::string& cert) {
    auto got = client.Get(path.c_str());
    REQUIRE(got);
    REQUIRE(got->status == 200);
    CHECK(got->get_header_value("Content-Type") == "application/pkix-crl");
    const std::string der = r.path("fetched.der"), pem = r.path("fetched.pem");
    REQUIRE(write_file_atomic(der, got->body, 0644, Overwrite::replace).ok());
    REQUIRE(test::run({"/usr/bin/openssl", "crl", "-inform", "DER", "-in", der, "-out", pem})
                .exit_code == 0);
    auto verified = test::run(
        {"/usr/bin/openssl", "verify", "-crl_check", "-CRLfile", pem, "-CAfile", r.chain(), cert});
    return verified.out + verified.err;
  };
  CHECK(contains(check_with("/crl", r.path("old-dev.crt")), "certificate revoked"));
  CHECK(contains(check_with("/crl/" + new_serial, r.path("new-dev.crt")), "certificate revoked"));
  // Each URL serves one issuer's CRL: the other issuer's device finds no CRL there.
  CHECK(contains(check_with("/crl", r.path("new-dev.crt")), "unable to get certificate CRL"));
  CHECK(contains(check_with("/crl/" + new_serial, r.path("old-dev.crt")),
                 "unable to get certificate CRL"));
  // The kept issuer's CRL by its serial too, and PEM on request.
  CHECK(contains(check_with("/crl/" + serial_of(old_issuer), r.path("old-dev.crt")),
                 "certificate revoked"));
  auto pem = client.Get(("/crl/" + new_serial).c_str(),
                        httplib::Headers{{"Accept", "application/x-pem-file"}});
  REQUIRE(pem);
  CHECK(pem->status == 200);
  CHECK(pem->body.starts_with("-----BEGIN X509 CRL-----"));
  CHECK(pem->body.find("BEGIN X509 CRL", 10) == std::string::npos);  // one CRL
  // A serial that is no issuer of this CA (the root's is not one either): 404.
  auto unknown = client.Get("/crl/0123456789ABCDEF");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  auto root = client.Get(("/crl/" + serial_of((r.data() / "ca" / "root.crt").string())).c_str());
  REQUIRE(root);
  CHECK(root->status == 404);
}
