// Claims over REST (/v1/claims), against `onboardctl serve` as it runs for real: created, listed,
// shown and revoked; the credential delivered only through a one-time bundle link, never in a
// reply or the log; roles, validation, conflicts and audit rows; and a device enrolling with the
// claim through the signer route until the claim is revoked.
#include <openssl/bn.h>
#include <openssl/x509.h>

#include <SQLiteCpp/Database.h>
#include <httplib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "bundle/zip.h"
#include "ca/certificate.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/digest.h"
#include "core/files.h"
#include "core/x509.h"
#include "registry/sqlite_store.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using nlohmann::json;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;
constexpr const char* kProvisionSecret = "7c1e9a4b2d6f80135a7c9e1b3d5f7092";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

test::RunResult ctl(const std::filesystem::path& data, Args args) {
  args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data.string()});
  return test::run(args);
}

std::string new_token(const std::filesystem::path& data, const std::string& name,
                      const std::string& role) {
  auto r = ctl(data, {"token", "create", "--name", name, "--role", role});
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.size() > 1);
  return r.out.substr(0, r.out.size() - 1);
}

// A CA, an operator and a reader token, and the server running with the provisioning secret (so
// that the broker's route can be driven directly).
class Served {
 public:
  Served() {
    REQUIRE(ctl(data(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
    operator_token = new_token(data(), "ops", "operator");
    reader_token = new_token(data(), "viewer", "reader");
    const auto secret_file = dir / "provision.token";
    std::ofstream(secret_file) << kProvisionSecret << "\n";
    std::filesystem::permissions(
        secret_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    server = std::make_unique<test::ChildProcess>(
        Args{ONBOARDCTL_PATH, "--data-dir", data().string(), "serve", "--listen", "127.0.0.1:0",
             "--threads", "2", "--provision-token-file", secret_file.string()},
        dir / "serve.log");
    const std::string line = server->read_line();
    INFO(log());
    REQUIRE(line.starts_with("serving on http://127.0.0.1:"));
    port = std::stoi(line.substr(line.rfind(':') + 1));
  }
  std::filesystem::path data() const { return dir / "data"; }
  std::string log() const {
    auto text = read_file(dir / "serve.log");
    return text.ok() ? *text : "";
  }
  httplib::Client client(const std::string& token) const {
    httplib::Client c("127.0.0.1", port);
    if (!token.empty()) c.set_bearer_token_auth(token.c_str());
    c.set_read_timeout(20, 0);
    return c;
  }
  std::unique_ptr<registry::Store> store() const {
    auto s = registry::open_sqlite_store(data() / "registry.db", registry::OpenMode::read_write);
    REQUIRE(s.ok());
    return std::move(s).value();
  }

  TempDir dir;
  std::string operator_token, reader_token;
  std::unique_ptr<test::ChildProcess> server;
  int port = 0;
};

json body_of(const httplib::Result& r) {
  REQUIRE(r);
  INFO(r->body);
  json j = json::parse(r->body, nullptr, false);
  REQUIRE(!j.is_discarded());
  return j;
}

void check_error(const httplib::Result& r, int status, const std::string& code,
                 const std::string& message_part = "") {
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == status);
  json j = json::parse(r->body, nullptr, false);
  REQUIRE(j.is_object());
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["code"] == code);
  if (!message_part.empty())
    CHECK(contains(j["error"]["message"].get<std::string>(), message_part));
}

httplib::Result post_json(httplib::Client& c, const std::string& path, const json& body) {
  return c.Post(path.c_str(), body.dump(), "application/json");
}

json create(Served& s, const json& body) {
  auto c = s.client(s.operator_token);
  auto r = post_json(c, "/v1/claims", body);
  json j = body_of(r);
  REQUIRE(r->status == 201);
  return j;
}

// The audit rows of `action` on `subject`.
std::size_t audit_rows(Served& s, const std::string& action, const std::string& subject) {
  auto events = s.store()->audit_list(0);
  REQUIRE(events.ok());
  std::size_t n = 0;
  for (const auto& e : *events) n += e.action == action && e.subject == subject ? 1 : 0;
  return n;
}

std::size_t files_in(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return 0;
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) n += entry.is_regular_file();
  return n;
}

// What the broker's plugin hands the signer when a device publishes its CSR.
struct Enrolment {
  int status = 0;
  std::string result, code;
};
Enrolment enroll(Served& s, const std::string& claim, const std::string& client_id) {
  auto key = ca::generate_key(ca::KeyAlg::p256);
  REQUIRE(key.ok());
  auto csr = ca::make_csr(key->get(), client_id);
  REQUIRE(csr.ok());
  auto c = s.client(kProvisionSecret);
  auto r = c.Post(("/v1/provision/" + claim + "/" + client_id).c_str(),
                  json{{"csr", ca::csr_to_pem(csr->get())}}.dump(), "application/octet-stream");
  REQUIRE(r);
  INFO(r->body);
  return {r->status, r->get_header_value("X-Provision-Result"),
          r->get_header_value("X-Provision-Code")};
}

// The serials (upper-case hex) the served CRL lists.
std::set<std::string> crl_serials(Served& s) {
  auto r = s.client("").Get("/crl.pem");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  auto crl = ca::crl_from_pem(r->body);
  REQUIRE(crl.ok());
  std::set<std::string> serials;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl->get());
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    ossl::Ptr<BIGNUM> bn(ASN1_INTEGER_to_BN(
        X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i)), nullptr));
    char* hex = BN_bn2hex(bn.get());
    serials.insert(hex);
    OPENSSL_free(hex);
  }
  return serials;
}

}  // namespace

TEST_CASE("POST /v1/claims delivers the claim credential once through a one-time link") {
  Served s;
  const json created = create(s, json{{"name", "line-a"},
                                      {"quota", 3},
                                      {"expires", "7d"},
                                      {"type", "sensor"},
                                      {"id_pattern", "unit-[0-9]+"},
                                      {"link_ttl", "1h"}});
  CHECK(created["name"] == "line-a");
  CHECK(created["state"] == "active");
  CHECK(created["quota"] == 3);
  CHECK(created["quota_used"] == 0);
  CHECK(created["type"] == "sensor");
  CHECK(created["id_pattern"] == "unit-[0-9]+");
  CHECK(created["created_by"] == "rest:ops");
  const json bundle = created["bundle"];
  REQUIRE(bundle["password"].is_string());
  REQUIRE(bundle["link"].is_string());
  REQUIRE(bundle["link_expires_at"].is_string());
  const std::string password = bundle["password"];
  // Nothing of the credential in the reply: no PEM at all.
  const std::string reply_text = created.dump();
  CHECK_FALSE(contains(reply_text, "BEGIN"));

  // The link serves the zip once.
  httplib::Client anyone("127.0.0.1", s.port);
  auto download = anyone.Get(bundle["link"].get<std::string>().c_str());
  REQUIRE(download);
  REQUIRE(download->status == 200);
  CHECK(download->get_header_value("Content-Type") == "application/zip");
  CHECK(sha256_hex(download->body).value() == bundle["sha256"]);
  CHECK(download->body.size() == bundle["size"].get<std::size_t>());
  check_error(anyone.Get(bundle["link"].get<std::string>().c_str()), 410, "gone");

  // The zip holds a certificate whose public key is the key's, and it is the claim's certificate.
  const auto zip = s.dir / "claim.zip";
  REQUIRE(write_file_atomic(zip, download->body, 0600, Overwrite::refuse).ok());
  auto files = bundle::read_encrypted_zip(zip, Secret(password));
  REQUIRE(files.ok());
  std::map<std::string, std::string> by_name;
  for (const auto& f : *files) by_name[f.name] = std::string(f.content.view());
  REQUIRE(by_name.contains("claim.crt"));
  REQUIRE(by_name.contains("claim.key"));
  CHECK(by_name.contains("ca-chain.pem"));
  CHECK(json::parse(by_name["claim.json"])["claim"] == "line-a");
  auto cert = ca::certificate_from_pem(by_name["claim.crt"]);
  REQUIRE(cert.ok());
  auto key = ca::private_key_from_pem(by_name["claim.key"]);
  REQUIRE(key.ok());
  CHECK(X509_check_private_key(cert->get(), key->get()) == 1);
  auto other_key = ca::generate_key(ca::KeyAlg::p256);  // the check can fail: a control
  REQUIRE(other_key.ok());
  CHECK(X509_check_private_key(cert->get(), other_key->get()) != 1);
  CHECK(subject_common_name(cert->get()) == "line-a");
  CHECK(serial_hex(cert->get()) == created["serial"]);
  const std::string fingerprint = sha256_fingerprint(cert->get());
  CHECK(created["certificate_sha256"] == fingerprint);
  CHECK(s.store()->get_claim("line-a")->certificate_sha256 == fingerprint);
  json shown = body_of(s.client(s.reader_token).Get("/v1/claims/line-a"));
  CHECK(shown["certificate_sha256"] == fingerprint);

  // Neither the key, the certificate nor the password reached the log (the server's stderr: the
  // test of a bundle that cannot be recorded finds the server's line there).
  const std::string log = s.log();
  CHECK_FALSE(contains(log, password));
  CHECK_FALSE(contains(log, "BEGIN"));

  // Audited as `claim create` is, and the delivery as bundles are.
  const std::string bundle_id = bundle["id"];
  CHECK(audit_rows(s, "claim.create", "line-a") == 1);
  CHECK(audit_rows(s, "bundle.create", bundle_id) == 1);
  CHECK(audit_rows(s, "bundle.link", bundle_id) == 1);
  CHECK(audit_rows(s, "bundle.download", bundle_id) == 1);
  auto events = s.store()->audit_list(0);
  REQUIRE(events.ok());
  for (const auto& e : *events) {
    if (e.action == "claim.create") CHECK(e.actor == "rest:ops");
    if (e.action == "bundle.create" && e.subject == bundle_id)
      CHECK(json::parse(e.details)["claim"] == "line-a");
  }
}

TEST_CASE("claims are listed a page at a time and shown, to a reader too") {
  Served s;
  for (const char* name : {"c-3", "c-1", "c-2"})
    (void)create(s, json{{"name", name}, {"quota", 1}, {"expires", "1h"}});
  auto reader = s.client(s.reader_token);
  json all = body_of(reader.Get("/v1/claims"));
  REQUIRE(all["claims"].size() == 3);
  CHECK(all["claims"][0]["name"] == "c-1");
  CHECK(all["claims"][2]["name"] == "c-3");
  CHECK(all["next_after"].is_null());
  CHECK_FALSE(contains(all.dump(), "BEGIN"));

  json first = body_of(reader.Get("/v1/claims?limit=2"));
  REQUIRE(first["claims"].size() == 2);
  CHECK(first["next_after"] == "c-2");
  json rest = body_of(reader.Get("/v1/claims?limit=2&after=c-2"));
  REQUIRE(rest["claims"].size() == 1);
  CHECK(rest["claims"][0]["name"] == "c-3");
  CHECK(rest["next_after"].is_null());
  check_error(reader.Get("/v1/claims?limit=0"), 400, "invalid_input", "limit");

  json one = body_of(reader.Get("/v1/claims/c-2"));
  CHECK(one["name"] == "c-2");
  CHECK(one["status"] == "active");
  CHECK(one["revoked_at"].is_null());
  check_error(reader.Get("/v1/claims/c-9"), 404, "not_found");

  // The CLI reads the same claims with the same fields.
  auto listed = ctl(s.data(), {"claim", "show", "c-2", "--json"});
  REQUIRE(listed.exit_code == 0);
  json cli = json::parse(listed.out);
  cli.erase("state");  // depends on the moment; the rest must agree
  one.erase("state");
  CHECK(cli == one);

  httplib::Client anonymous("127.0.0.1", s.port);
  check_error(anonymous.Get("/v1/claims"), 401, "unauthorized");
  check_error(anonymous.Get("/v1/claims/c-1"), 401, "unauthorized");
}

TEST_CASE("POST /v1/claims refuses bad fields by name, a duplicate, a reader and no token") {
  Served s;
  const json good{{"name", "line-b"}, {"quota", 5}, {"expires", "2d"}};
  httplib::Client anonymous("127.0.0.1", s.port);
  check_error(post_json(anonymous, "/v1/claims", good), 401, "unauthorized");
  auto reader = s.client(s.reader_token);
  check_error(post_json(reader, "/v1/claims", good), 403, "forbidden");

  auto c = s.client(s.operator_token);
  auto with = [&good](const char* key, json value) {
    json body = good;
    if (value.is_null()) {
      body.erase(key);
    } else {
      body[key] = std::move(value);
    }
    return body;
  };
  check_error(post_json(c, "/v1/claims", json::object()), 400, "invalid_input", "name is required");
  check_error(post_json(c, "/v1/claims", with("name", "bad name")), 400, "invalid_input", "name");
  check_error(post_json(c, "/v1/claims", with("name", 7)), 400, "invalid_input",
              "name must be a string");
  check_error(post_json(c, "/v1/claims", with("quota", nullptr)), 400, "invalid_input",
              "quota is required");
  check_error(post_json(c, "/v1/claims", with("quota", 0)), 400, "invalid_input",
              "quota must be 1 to");
  check_error(post_json(c, "/v1/claims", with("quota", 10000001)), 400, "invalid_input",
              "quota must be 1 to");
  check_error(post_json(c, "/v1/claims", with("quota", "5")), 400, "invalid_input",
              "quota must be a whole number");
  check_error(post_json(c, "/v1/claims", with("expires", nullptr)), 400, "invalid_input",
              "expires is required");
  check_error(post_json(c, "/v1/claims", with("expires", "366d")), 400, "invalid_input", "expires");
  check_error(post_json(c, "/v1/claims", with("expires", "30s")), 400, "invalid_input", "expires");
  check_error(post_json(c, "/v1/claims", with("expires", "soon")), 400, "invalid_input", "expires");
  check_error(post_json(c, "/v1/claims", with("type", "a/b")), 400, "invalid_input", "type: ");
  check_error(post_json(c, "/v1/claims", with("id_pattern", "(a|b)")), 400, "invalid_input",
              "id_pattern: ");
  check_error(post_json(c, "/v1/claims", with("key_alg", "dsa")), 400, "invalid_input",
              "key_alg must be one of");
  check_error(post_json(c, "/v1/claims", with("link_ttl", "31d")), 400, "invalid_input",
              "link_ttl");
  check_error(post_json(c, "/v1/claims", with("out", "/tmp/x.zip")), 400, "invalid_input",
              "unknown field 'out'");
  check_error(post_json(c, "/v1/claims", with("certificate", "x")), 400, "invalid_input",
              "unknown field 'certificate'");
  // Nothing was made or recorded by any refusal.
  CHECK(s.store()->list_claims()->empty());
  CHECK(files_in(s.data() / "bundles") == 0);

  // The positive control, then the same name again: 409, and still one claim and one zip.
  (void)create(s, good);
  CHECK(files_in(s.data() / "bundles") == 1);
  check_error(post_json(c, "/v1/claims", good), 409, "conflict", "already exists");
  check_error(post_json(c, "/v1/claims", with("quota", 9)), 409, "conflict");
  CHECK(s.store()->list_claims()->size() == 1);
  CHECK(s.store()->get_claim("line-b")->quota == 5);
  CHECK(files_in(s.data() / "bundles") == 1);
  CHECK(audit_rows(s, "claim.create", "line-b") == 1);
}

TEST_CASE("a claim revoked over REST shows as revoked, again is a no-op, and enrols no device") {
  Served s;
  (void)create(s, json{{"name", "line-c"}, {"quota", 5}, {"expires", "1d"}, {"type", "meter"}});
  auto c = s.client(s.operator_token);

  // Before: a device enrols with the claim (the positive control).
  auto before = enroll(s, "line-c", "unit-1");
  CHECK(before.status == 200);
  CHECK(before.result == "accepted");
  CHECK(s.store()->get_device("unit-1").ok());
  CHECK(s.store()->get_claim("line-c")->quota_used == 1);

  // A reader and no token cannot revoke.
  auto reader = s.client(s.reader_token);
  check_error(post_json(reader, "/v1/claims/line-c/revoke", json::object()), 403, "forbidden");
  httplib::Client anonymous("127.0.0.1", s.port);
  check_error(post_json(anonymous, "/v1/claims/line-c/revoke", json::object()), 401,
              "unauthorized");
  check_error(post_json(c, "/v1/claims/line-c/revoke", json{{"reason", "bored"}}), 400,
              "invalid_input", "reason must be one of");
  check_error(post_json(c, "/v1/claims/line-9/revoke", json::object()), 404, "not_found");
  CHECK(s.store()->get_claim("line-c")->status == registry::ClaimStatus::active);

  const auto crl_before = crl_serials(s);
  // Revoked with no body at all, as `curl -X POST` sends.
  auto r = c.Post("/v1/claims/line-c/revoke");
  json revoked = body_of(r);
  REQUIRE(r->status == 200);
  CHECK(revoked["status"] == "revoked");
  CHECK(revoked["state"] == "revoked");
  CHECK(revoked["already_revoked"] == false);
  CHECK(revoked["crl_number"].is_number_integer());
  CHECK(revoked["revoked_at"].is_string());
  json shown = body_of(s.client(s.reader_token).Get("/v1/claims/line-c"));
  CHECK(shown["status"] == "revoked");
  CHECK(shown["revoked_at"].is_string());
  CHECK(audit_rows(s, "claim.revoke", "line-c") == 1);
  // Its certificate is on the CRL now, and was not before.
  const std::string serial = revoked["serial"];
  CHECK_FALSE(crl_before.contains(serial));
  CHECK(crl_serials(s).contains(serial));

  // Again: 200, already_revoked, and nothing written.
  json again = body_of(post_json(c, "/v1/claims/line-c/revoke", json{{"reason", "superseded"}}));
  CHECK(again["already_revoked"] == true);
  CHECK(again["crl_number"].is_null());
  CHECK(again["status"] == "revoked");
  CHECK(audit_rows(s, "claim.revoke", "line-c") == 1);

  // After: the signer refuses the revoked claim and records nothing.
  auto after = enroll(s, "line-c", "unit-2");
  CHECK(after.status == 200);
  CHECK(after.result == "rejected");
  CHECK(after.code == "claim_revoked");
  auto missing = s.store()->get_device("unit-2");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::not_found);
  CHECK(s.store()->get_claim("line-c")->quota_used == 1);
}

TEST_CASE("a connected notice that replaces nothing writes nothing and a renewal's connect does") {
  Served s;
  (void)create(s, json{{"name", "line-r"}, {"quota", 5}, {"expires", "1d"}});
  REQUIRE(enroll(s, "line-r", "unit-1").result == "accepted");
  const auto old_cert = s.store()->certificates_of("unit-1")->at(0);
  // A renewal waiting for its first connect (recorded as the signer records one).
  registry::NewCertificate next{"00AB12",
                                "CN=Renewal Test",
                                std::string(63, '0') + "9",
                                "CN=unit-1",
                                old_cert.not_before,
                                old_cert.not_after,
                                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                                ""};
  const registry::Actor at{"provision:secret", old_cert.not_before + 600};
  REQUIRE(s.store()
              ->renew_device(
                  "unit-1", old_cert.sha256_fingerprint, next,
                  [](const registry::Certificate&) { return false; }, at)
              ->refusal == registry::RenewRefusal::none);
  auto audit_size = [&] { return s.store()->audit_list(0)->size(); };
  auto crl_pem = [&] {
    auto r = s.client("").Get("/crl.pem");
    REQUIRE(r);
    return r->body;
  };
  auto notice = [&](const std::string& fingerprint) {
    httplib::Headers headers{{"X-Client-Certificate", fingerprint}};
    auto c = s.client(kProvisionSecret);
    return c.Post("/v1/renew/unit-1/connected", headers, "", "application/json");
  };
  const auto rows = audit_size();
  const auto crl = crl_pem();

  // The old certificate's connect while its renewal waits: nothing to revoke, nothing written.
  json none = body_of(notice(old_cert.sha256_fingerprint));
  CHECK(none == json{{"superseded", json::array()}, {"crl_number", nullptr}});
  // A malformed fingerprint: refused, nothing written.
  check_error(notice("not-a-fingerprint"), 400, "invalid_input");
  CHECK(audit_size() == rows);
  CHECK(crl_pem() == crl);
  CHECK(s.store()->find_certificate_by_fingerprint(old_cert.sha256_fingerprint)->status ==
        registry::CertificateStatus::active);

  // The renewal's connect (the positive control): the old certificate revoked, the CRL written.
  json done = body_of(notice(next.sha256_fingerprint));
  CHECK(done["superseded"] == json::array({old_cert.serial_hex}));
  CHECK(done["crl_number"].is_number_integer());
  CHECK(audit_rows(s, "certificate.supersede", "unit-1") == 1);
  CHECK(crl_serials(s).contains(old_cert.serial_hex));
  // Told again: nothing left to do.
  json again = body_of(notice(next.sha256_fingerprint));
  CHECK(again == json{{"superseded", json::array()}, {"crl_number", nullptr}});
  CHECK(audit_rows(s, "certificate.supersede", "unit-1") == 1);
}

TEST_CASE(
    "a claim whose bundle cannot be recorded is revoked, its zip removed, no password given") {
  Served s;
  {
    // The registry refuses every bundle from now on.
    SQLite::Database raw(s.data() / "registry.db", SQLite::OPEN_READWRITE);
    raw.exec(
        "CREATE TRIGGER no_bundles BEFORE INSERT ON bundles "
        "BEGIN SELECT RAISE(ABORT, 'no bundles today'); END");
  }
  auto c = s.client(s.operator_token);
  auto r = post_json(c, "/v1/claims", json{{"name", "line-d"}, {"quota", 1}, {"expires", "1h"}});
  check_error(r, 500, "internal");
  CHECK_FALSE(contains(r->body, "password"));
  // The claim was recorded first, and then revoked: nobody holds its credential.
  json shown = body_of(s.client(s.reader_token).Get("/v1/claims/line-d"));
  CHECK(shown["status"] == "revoked");
  CHECK(files_in(s.data() / "bundles") == 0);
  CHECK(contains(s.log(), "claim line-d was recorded but its bundle could not be"));
  CHECK(contains(s.log(), "it was revoked"));
  // The name stays taken.
  check_error(post_json(c, "/v1/claims", json{{"name", "line-d"}, {"quota", 1}, {"expires", "1h"}}),
              409, "conflict");

  // The positive control: once the registry takes bundles again, a claim is made and delivered.
  {
    SQLite::Database raw(s.data() / "registry.db", SQLite::OPEN_READWRITE);
    raw.exec("DROP TRIGGER no_bundles");
  }
  const json made = create(s, json{{"name", "line-e"}, {"quota", 1}, {"expires", "1h"}});
  CHECK(made["status"] == "active");
  CHECK(made["bundle"]["link"].is_string());
  CHECK(files_in(s.data() / "bundles") == 1);
}
