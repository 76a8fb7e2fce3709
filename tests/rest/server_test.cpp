// `onboardctl serve` as it runs for real: a separate process on a free loopback port, driven over
// HTTP by httplib's client and by curl, checked by status, JSON error shape and by what the
// registry holds afterwards.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <httplib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "bundle/link_token.h"
#include "bundle/manifest.h"
#include "bundle/zip.h"
#include "ca/authority.h"
#include "ca/certificate.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/digest.h"
#include "core/files.h"
#include "ops/operations.h"
#include "registry/sqlite_store.h"
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
constexpr const char* kHoldPassphrase = "kettle-orbit-7Qz-harbor-lantern";

RunResult onboardctl_in(const std::filesystem::path& data_dir, Args args,
                        const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data_dir.string()});
  return onboard::test::run(args, {}, env);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string new_token(const std::filesystem::path& data, const std::string& name,
                      const std::string& role) {
  auto r = onboardctl_in(data, {"token", "create", "--name", name, "--role", role});
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.size() > 1);
  return r.out.substr(0, r.out.size() - 1);  // the token alone, then a newline
}

std::string device_csr(const std::string& cn) {
  auto key = generate_key(KeyAlg::p256);
  REQUIRE(key.ok());
  auto req = make_csr(key->get(), cn);
  REQUIRE(req.ok());
  return csr_to_pem(req->get());
}

// A data directory with a CA, an operator and a reader token, and the server running on it.
class Served {
 public:
  explicit Served(bool hold_keys = false, Args extra = {}) {
    REQUIRE(onboardctl_in(data(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
    operator_token = new_token(data(), "ops", "operator");
    reader_token = new_token(data(), "viewer", "reader");
    Args args{ONBOARDCTL_PATH, "--data-dir",  data().string(), "serve",
              "--listen",      "127.0.0.1:0", "--threads",     "4"};
    if (hold_keys) args.insert(args.end(), {"--hold-passphrase-env", "HOLD_PASS"});
    args.insert(args.end(), extra.begin(), extra.end());
    server = std::make_unique<test::ChildProcess>(
        args, dir / "serve.log",
        std::map<std::string, std::string>{{"HOLD_PASS", kHoldPassphrase}});
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
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port); }
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
  json j = json::parse(r->body, nullptr, false);
  INFO(r->body);
  REQUIRE(!j.is_discarded());
  return j;
}

// Every refusal has the same shape: {"error": {"code": ..., "message": ...}}.
void check_error(const httplib::Result& r, int status, const std::string& code,
                 const std::string& message_part = "") {
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == status);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  json j = json::parse(r->body, nullptr, false);
  REQUIRE(j.is_object());
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["code"] == code);
  CHECK(j["error"]["message"].is_string());
  if (!message_part.empty())
    CHECK(contains(j["error"]["message"].get<std::string>(), message_part));
}

httplib::Result post_json(httplib::Client& c, const std::string& path, const json& body) {
  return c.Post(path.c_str(), body.dump(), "application/json");
}

std::string register_with_csr(const Served& s, const std::string& id) {
  auto c = s.client(s.operator_token);
  auto r = post_json(c, "/v1/devices", json{{"id", id}, {"type", "temp"}, {"csr", device_csr(id)}});
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  return body_of(r)["certificate"]["serial"];
}

// curl as a user types it, printing the body, a newline and the status. --max-time: a server that
// waits for a body that never comes fails the test rather than hanging it (its body timeout is
// 30 s).
struct CurlReply {
  int status = 0;
  json body;
};
CurlReply curl(Args args) {
  args.insert(args.begin(), {"/usr/bin/curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"});
  auto r = test::run(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto newline = r.out.rfind('\n');
  REQUIRE(newline != std::string::npos);
  CurlReply reply{std::stoi(r.out.substr(newline + 1)), json()};
  if (newline > 0) reply.body = json::parse(r.out.substr(0, newline), nullptr, false);
  return reply;
}

// The serials (upper-case hex) a PEM CRL lists, and its CRL number.
std::pair<std::set<std::string>, long> crl_contents(const std::string& pem) {
  auto crl = crl_from_pem(pem);
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
  auto* number = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl->get(), NID_crl_number, nullptr, nullptr));
  REQUIRE(number != nullptr);
  const long n = ASN1_INTEGER_get(number);
  ASN1_INTEGER_free(number);
  return {serials, n};
}

// A plain HTTP/1.1 connection to the server, for what httplib's client cannot do: send a
// request's headers and wait before (or instead of) its body. Every receive waits at most 5 s,
// so a server that waits for a body fails the test rather than hanging it.
struct RawResponse {
  int status = 0;  // 0: the connection ended or stayed silent before a whole response came
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    timeval timeout{5, 0};
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  ~RawConnection() { ::close(fd_); }

  void send(const std::string& bytes) {
    REQUIRE(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }
  RawResponse read_response() {
    RawResponse response;
    std::size_t end = 0;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos)
      if (!receive()) return response;
    std::istringstream head(buffer_.substr(0, end));
    std::string line;
    std::getline(head, line);
    std::istringstream status_line(line);
    std::string version;
    int status = 0;
    status_line >> version >> status;
    while (std::getline(head, line)) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      if (!value.empty() && value.back() == '\r') value.pop_back();
      response.headers[name] = value;
    }
    const std::size_t length = response.headers.contains("content-length")
                                   ? std::stoul(response.headers["content-length"])
                                   : 0;
    buffer_.erase(0, end + 4);
    while (buffer_.size() < length)
      if (!receive()) return response;
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    response.status = status;
    return response;
  }
  // Whether the server ended the connection within 2 s (rather than sending more or staying
  // silent): well before it would close an idle kept-alive connection (5 s).
  bool closed_by_server() {
    if (!buffer_.empty()) return false;
    timeval timeout{2, 0};
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0);
    char c = 0;
    const ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  bool receive() {
    char chunk[4096];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  int fd_;
  std::string buffer_;
};

// A request line and headers, ended by the empty line; `extra` are whole header lines.
std::string request_head(const std::string& method, const std::string& path,
                         std::initializer_list<std::string> extra) {
  std::string head = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& line : extra) head += line + "\r\n";
  return head + "\r\n";
}

std::string bearer(const std::string& token) { return "Authorization: Bearer " + token; }

// A refusal the server sent without reading the body the headers announced.
// `unread` is sent after the reply, as a client that sends its body late would: the server must
// not take it for the next request.
void check_refused_before_body(RawConnection& connection, int status, const std::string& code,
                               const std::string& unread = "") {
  RawResponse r = connection.read_response();
  INFO("a status of 0 means no reply within 5 s: the server waited for the body");
  REQUIRE(r.status == status);
  CHECK(json::parse(r.body, nullptr, false)["error"]["code"] == code);
  CHECK(r.headers["connection"] == "close");
  CHECK_FALSE(r.headers.contains("keep-alive"));
  if (!unread.empty()) connection.send(unread);
  CHECK(connection.closed_by_server());
}

// The two ways a request announces a large body it has not sent.
const std::vector<std::string> kLargeBodyFramings{"Transfer-Encoding: chunked",
                                                  "Content-Length: 100000000"};
}  // namespace

TEST_CASE("the original three endpoints keep their field names: register, device, revoke") {
  Served s;
  auto c = s.client(s.operator_token);
  json request{{"name", "sensor-001"},
               {"type", "temp"},
               {"location", "lab"},
               {"firmware", "1.0.0"},
               {"csr", device_csr("sensor-001")}};
  auto r = post_json(c, "/register", request);
  json created = body_of(r);
  REQUIRE(r->status == 201);
  // The id comes from the name when the name is a valid device id.
  CHECK(created["id"] == "sensor-001");
  for (const char* field : {"name", "type", "location", "firmware"})
    CHECK(created[field] == request[field]);
  CHECK(created["status"] == "active");
  CHECK(created["key"] == "held_by_device");
  CHECK(r->get_header_value("Location") == "/v1/devices/sensor-001");
  auto cert = certificate_from_pem(created["certificate"]["pem"].get<std::string>());
  REQUIRE(cert.ok());
  CHECK(subject_common_name(cert->get()) == "sensor-001");
  CHECK(created["certificate"]["serial"] == serial_hex(cert->get()));

  auto reader = s.client(s.reader_token);
  auto got = reader.Get("/device/sensor-001");
  json device = body_of(got);
  CHECK(got->status == 200);
  CHECK(device["id"] == "sensor-001");
  for (const char* field : {"name", "type", "location", "firmware"})
    CHECK(device[field] == request[field]);
  REQUIRE(device["certificates"].size() == 1);
  CHECK(device["certificates"][0]["serial"] == created["certificate"]["serial"]);
  CHECK(device["server_key_copy"].is_null());

  auto revoked = c.Post("/revoke/sensor-001", "", "application/json");
  json outcome = body_of(revoked);
  CHECK(revoked->status == 200);
  CHECK(outcome["status"] == "revoked");
  CHECK(outcome["already_revoked"] == false);
  CHECK(outcome["revoked_serials"] == json::array({created["certificate"]["serial"]}));
  CHECK(outcome["crl_number"].is_number_integer());
  auto again = c.Post("/revoke/sensor-001", "", "application/json");
  CHECK(body_of(again)["already_revoked"] == true);
  CHECK(body_of(reader.Get("/device/sensor-001"))["status"] == "revoked");

  // The device id rule: an explicit id wins; a name that is no device id gets a generated one.
  auto named =
      post_json(c, "/register",
                json{{"name", "Boiler Room #2"}, {"csr", device_csr("boiler")}, {"id", "boiler"}});
  CHECK(body_of(named)["id"] == "boiler");
  CHECK(body_of(named)["name"] == "Boiler Room #2");
  // Without a CSR the server would have to make and hold the key, which it cannot here.
  check_error(post_json(c, "/register", json{{"name", "Not an id!"}}), 409, "cannot_hold_keys");
}

TEST_CASE("the CRL is served as DER, or PEM on request, and lists a revoked certificate") {
  Served s;
  const std::string serial = register_with_csr(s, "dev-1");
  auto c = s.client(s.operator_token);
  REQUIRE(c.Post("/v1/devices/dev-1/revoke", json{{"reason", "keyCompromise"}}.dump(),
                 "application/json")
              ->status == 200);
  httplib::Client anyone("127.0.0.1", s.port);
  auto der = anyone.Get("/crl");
  REQUIRE(der);
  CHECK(der->status == 200);
  CHECK(der->get_header_value("Content-Type") == "application/pkix-crl");
  const auto* p = reinterpret_cast<const unsigned char*>(der->body.data());
  ossl::Ptr<X509_CRL> crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der->body.size())));
  REQUIRE(crl);
  bool listed = false;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    ossl::Ptr<BIGNUM> bn(ASN1_INTEGER_to_BN(
        X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i)), nullptr));
    char* hex = BN_bn2hex(bn.get());
    listed |= serial == std::string(hex);
    OPENSSL_free(hex);
  }
  CHECK(listed);
  for (bool by_accept : {false, true}) {
    auto pem = by_accept
                   ? anyone.Get("/crl", httplib::Headers{{"Accept", "application/x-pem-file"}})
                   : anyone.Get("/crl.pem");
    REQUIRE(pem);
    CHECK(pem->status == 200);
    CHECK(pem->get_header_value("Content-Type") == "application/x-pem-file");
    auto parsed = crl_from_pem(pem->body);
    REQUIRE(parsed.ok());
    CHECK(crl_to_der(parsed->get()) == der->body);
  }
  auto health = anyone.Get("/healthz");
  CHECK(body_of(health)["status"] == "ok");
}

TEST_CASE("requests without a known, unrevoked token are 401, and a reader cannot write (403)") {
  Served s;
  httplib::Client anonymous("127.0.0.1", s.port);
  auto none = anonymous.Get("/v1/devices");
  check_error(none, 401, "unauthorized");
  CHECK(contains(none->get_header_value("WWW-Authenticate"), "Bearer"));
  auto basic =
      anonymous.Get("/v1/devices", httplib::Headers{{"Authorization", "Basic b3BzOm9wcw=="}});
  check_error(basic, 401, "unauthorized");
  auto forged = s.client("onb_" + std::string(43, 'A')).Get("/v1/devices");
  check_error(forged, 401, "unauthorized");
  CHECK(contains(forged->get_header_value("WWW-Authenticate"), "invalid_token"));
  auto garbage = s.client("x").Get("/v1/devices");
  check_error(garbage, 401, "unauthorized");

  auto reader = s.client(s.reader_token);
  CHECK(reader.Get("/v1/devices")->status == 200);
  check_error(post_json(reader, "/v1/devices", json{{"id", "d"}, {"csr", device_csr("d")}}), 403,
              "forbidden");
  check_error(reader.Post("/revoke/d", "", "application/json"), 403, "forbidden");
  check_error(reader.Delete("/v1/devices/d/acl/1"), 403, "forbidden");
  // The bearer scheme is case-insensitive (RFC 7235).
  auto lower =
      anonymous.Get("/v1/devices", httplib::Headers{{"Authorization", "bearer " + s.reader_token}});
  CHECK(lower->status == 200);

  // Revoked with the CLI while the server runs: refused at the next request.
  REQUIRE(onboardctl_in(s.data(), {"token", "revoke", "viewer"}).exit_code == 0);
  check_error(reader.Get("/v1/devices"), 401, "unauthorized");
}

TEST_CASE("bad requests get the right status and a JSON error, never a stack trace or SQL") {
  Served s;
  auto c = s.client(s.operator_token);
  check_error(c.Post("/v1/devices", "{\"id\": ", "application/json"), 400, "invalid_input",
              "not valid JSON");
  check_error(c.Post("/v1/devices", "[1,2]", "application/json"), 400, "invalid_input",
              "JSON object");
  check_error(post_json(c, "/v1/devices", json{{"id", 5}}), 400, "invalid_input",
              "id must be a string");
  check_error(post_json(c, "/v1/devices", json{{"id", "a/b"}, {"csr", device_csr("a")}}), 400,
              "invalid_input", "id:");
  check_error(post_json(c, "/v1/devices", json{{"id", "d1"}, {"csrr", device_csr("d1")}}), 400,
              "invalid_input", "unknown field 'csrr'");
  check_error(post_json(c, "/v1/devices", json{{"id", "d1"}, {"csr", "not a csr"}}), 400,
              "invalid_input", "csr:");
  check_error(post_json(c, "/v1/devices", json{{"id", "d1"}, {"csr", device_csr("other")}}), 400,
              "invalid_input", "the CSR's CN is 'other'");
  check_error(
      post_json(c, "/v1/devices", json{{"id", "d1"}, {"type", "a b"}, {"csr", device_csr("d1")}}),
      400, "invalid_input", "type:");
  check_error(
      post_json(c, "/v1/devices", json{{"id", "d1"}, {"metadata", "x"}, {"csr", device_csr("d1")}}),
      400, "invalid_input", "metadata");
  check_error(c.Post("/v1/devices", "id=d1", "application/x-www-form-urlencoded"), 415,
              "unsupported_media_type");
  // No body is {}: no csr, so the server would have to hold a key, which this one cannot.
  check_error(c.Post("/v1/devices", "", "application/json"), 409, "cannot_hold_keys");
  // Larger than --max-body (256 KiB by default).
  check_error(
      post_json(c, "/v1/devices", json{{"id", "d1"}, {"csr", std::string(300 * 1024, 'A')}}), 413,
      "payload_too_large");
  check_error(c.Get("/v1/devices/ghost"), 404, "not_found", "ghost");
  check_error(c.Get("/v1/nothing-here"), 404, "not_found");
  check_error(c.Get("/v1/devices?limit=0"), 400, "invalid_input", "limit");
  check_error(c.Get("/v1/devices?status=sleeping"), 400, "invalid_input", "status");

  register_with_csr(s, "d1");
  auto duplicate = post_json(c, "/v1/devices", json{{"id", "d1"}, {"csr", device_csr("d1")}});
  check_error(duplicate, 409, "conflict", "already exists");
  // No error body anywhere mentioned SQL or a source file.
  auto ghost = c.Get("/v1/devices/ghost");
  for (const auto* r : {&duplicate, &ghost}) {
    CHECK_FALSE(contains((*r)->body, "SQL"));
    CHECK_FALSE(contains((*r)->body, ".cpp"));
  }
}

TEST_CASE(
    "a server without a hold passphrase refuses to make keys, and with one it holds them "
    "encrypted and never returns them") {
  {
    Served s;
    auto c = s.client(s.operator_token);
    check_error(post_json(c, "/v1/devices", json{{"id", "d1"}}), 409, "cannot_hold_keys",
                "cannot hold device keys");
    CHECK(c.Get("/v1/devices/d1")->status == 404);  // nothing was registered
  }
  Served s(true);
  auto c = s.client(s.operator_token);
  auto r = post_json(c, "/register", json{{"name", "held-1"}, {"key_alg", "p256"}});
  json created = body_of(r);
  REQUIRE(r->status == 201);
  CHECK(created["key"] == "held_by_server_encrypted");
  CHECK_FALSE(contains(r->body, "PRIVATE KEY"));
  auto held = s.store()->held_key("held-1");
  REQUIRE(held.ok());
  REQUIRE(held->has_value());
  CHECK((*held)->encrypted_pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
  CHECK((*held)->certificate_sha256 == created["certificate"]["sha256_fingerprint"]);
  // The key opens with the hold passphrase and matches the certificate.
  Secret pass(kHoldPassphrase);
  auto key = private_key_from_pem((*held)->encrypted_pem, &pass);
  REQUIRE(key.ok());
  auto cert = certificate_from_pem(created["certificate"]["pem"].get<std::string>());
  REQUIRE(cert.ok());
  CHECK(same_public_key(key->get(), X509_get0_pubkey(cert->get())));

  // A name that is no device id gets a generated id ("dev-" and 16 hex digits).
  json anonymous =
      body_of(post_json(c, "/register", json{{"name", "Not an id!"}, {"key_alg", "p256"}}));
  CHECK(anonymous["name"] == "Not an id!");
  CHECK(anonymous["id"].get<std::string>().starts_with("dev-"));
  CHECK(anonymous["id"].get<std::string>().size() == 20);

  json shown = body_of(c.Get("/v1/devices/held-1"));
  REQUIRE(shown["server_key_copy"].is_object());
  CHECK(shown["server_key_copy"]["encrypted"] == true);
  auto cli = onboardctl_in(s.data(), {"device", "show", "held-1"});
  CHECK(contains(cli.out, "server key copy: held, encrypted, since "));
  CHECK(contains(cli.out, "(wiped when bundled)"));

  // Renewal through the API holds the new key in place of the old one.
  auto renewed = c.Post("/v1/devices/held-1/certificates", "{}", "application/json");
  json renewal = body_of(renewed);
  CHECK(renewed->status == 201);
  CHECK(renewal["key"] == "held_by_server_encrypted");
  CHECK_FALSE(contains(renewed->body, "PRIVATE KEY"));
  auto held_after = s.store()->held_key("held-1");
  REQUIRE(held_after.ok());
  REQUIRE(held_after->has_value());
  CHECK((*held_after)->certificate_sha256 == renewal["certificate"]["sha256_fingerprint"]);
}

TEST_CASE("/v1/devices lists with paging and filters, and PATCH enables and disables") {
  Served s;
  for (const char* id : {"a-1", "a-2", "a-3", "b-1"}) register_with_csr(s, id);
  auto c = s.client(s.operator_token);
  json first = body_of(c.Get("/v1/devices?limit=2"));
  REQUIRE(first["devices"].size() == 2);
  CHECK(first["devices"][0]["id"] == "a-1");
  CHECK(first["next_after"] == "a-2");
  json second = body_of(c.Get("/v1/devices?limit=2&after=a-2"));
  REQUIRE(second["devices"].size() == 2);
  CHECK(second["devices"][0]["id"] == "a-3");
  json rest = body_of(c.Get("/v1/devices?limit=10&after=a-3"));
  CHECK(rest["devices"].size() == 1);
  CHECK(rest["next_after"].is_null());

  auto patched =
      c.Patch("/v1/devices/a-2", json{{"status", "disabled"}}.dump(), "application/json");
  CHECK(body_of(patched)["status"] == "disabled");
  json disabled = body_of(c.Get("/v1/devices?status=disabled"));
  REQUIRE(disabled["devices"].size() == 1);
  CHECK(disabled["devices"][0]["id"] == "a-2");
  CHECK(body_of(c.Get("/v1/devices?type=temp"))["devices"].size() == 4);
  CHECK(body_of(c.Get("/v1/devices?type=other"))["devices"].empty());
  auto enabled = c.Patch("/v1/devices/a-2", json{{"status", "active"}}.dump(), "application/json");
  CHECK(body_of(enabled)["status"] == "active");
  check_error(c.Patch("/v1/devices/a-2", json{{"status", "revoked"}}.dump(), "application/json"),
              400, "invalid_input", "revoke");
  check_error(c.Patch("/v1/devices/a-2", json{{"status", 1}}.dump(), "application/json"), 400,
              "invalid_input");
  check_error(c.Patch("/v1/devices/ghost", json{{"status", "active"}}.dump(), "application/json"),
              404, "not_found");
  REQUIRE(c.Post("/v1/devices/b-1/revoke", "", "application/json")->status == 200);
  check_error(c.Patch("/v1/devices/b-1", json{{"status", "active"}}.dump(), "application/json"),
              409, "conflict");
  check_error(c.Post("/v1/devices/ghost/revoke", "", "application/json"), 404, "not_found");
  check_error(
      c.Post("/v1/devices/b-1/revoke", json{{"reason", "bored"}}.dump(), "application/json"), 400,
      "invalid_input", "reason");
}

TEST_CASE("/v1/devices?expiring=30d lists the devices whose certificate expires within 30 days") {
  Served s;
  auto c = s.client(s.reader_token);
  auto op = s.client(s.operator_token);
  for (const auto& [id, days] : {std::pair{"soon", 10}, std::pair{"later", 365}}) {
    auto r =
        post_json(op, "/v1/devices", json{{"id", id}, {"csr", device_csr(id)}, {"days", days}});
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 201);
  }
  // Both listed without the filter, each with its certificate's expiry.
  json all = body_of(c.Get("/v1/devices"));
  REQUIRE(all["devices"].size() == 2);
  for (const auto& d : all["devices"]) {
    CHECK(d["certificate_not_after"].is_string());
    CHECK(d["certificate_expired"] == false);
  }
  json within = body_of(c.Get("/v1/devices?expiring=30d"));
  REQUIRE(within["devices"].size() == 1);
  CHECK(within["devices"][0]["id"] == "soon");
  CHECK(body_of(c.Get("/v1/devices?expiring=9d"))["devices"].empty());
  CHECK(body_of(c.Get("/v1/devices?expiring=400d"))["devices"].size() == 2);
  // A revoked device has no current certificate: nothing to renew, never listed as expiring.
  REQUIRE(op.Post("/v1/devices/soon/revoke", "", "application/json")->status == 200);
  CHECK(body_of(c.Get("/v1/devices?expiring=30d"))["devices"].empty());
  json revoked = body_of(c.Get("/v1/devices?status=revoked"));
  REQUIRE(revoked["devices"].size() == 1);
  CHECK(revoked["devices"][0]["certificate_not_after"].is_null());
  for (const char* bad : {"30", "thirty", "0d", "-5d", "30y", "99999d"})
    check_error(c.Get(std::string("/v1/devices?expiring=") + bad), 400, "invalid_input",
                "expiring must be a whole number and a unit");
}

TEST_CASE("certificates are listed and renewed from a CSR, and a revoked device gets none") {
  Served s;
  const std::string first = register_with_csr(s, "dev-1");
  auto c = s.client(s.operator_token);
  auto renewed = post_json(c, "/v1/devices/dev-1/certificates", json{{"csr", device_csr("dev-1")}});
  json renewal = body_of(renewed);
  CHECK(renewed->status == 201);
  CHECK(renewal["key"] == "held_by_device");
  CHECK(renewal["superseded_serials"] == json::array({first}));
  json listed = body_of(c.Get("/v1/devices/dev-1/certificates"));
  REQUIRE(listed["certificates"].size() == 2);
  std::set<std::string> statuses;
  for (const auto& cert : listed["certificates"])
    statuses.insert(cert["status"].get<std::string>());
  CHECK(statuses == std::set<std::string>{"active", "revoked"});
  check_error(post_json(c, "/v1/devices/dev-1/certificates", json{{"csr", device_csr("dev-2")}}),
              400, "invalid_input", "CN");
  check_error(c.Get("/v1/devices/ghost/certificates"), 404, "not_found");
  REQUIRE(c.Post("/v1/devices/dev-1/revoke", "", "application/json")->status == 200);
  check_error(post_json(c, "/v1/devices/dev-1/certificates", json{{"csr", device_csr("dev-1")}}),
              409, "conflict", "revoked");
}

TEST_CASE("ACL rules of devices and groups are read, added and removed, and decisions explained") {
  Served s;
  register_with_csr(s, "dev-1");
  auto c = s.client(s.operator_token);
  auto added = post_json(c, "/v1/devices/dev-1/acl",
                         json{{"access", "publish"}, {"topic", "alerts/%d"}, {"priority", 5}});
  json rule = body_of(added);
  REQUIRE(added->status == 201);
  CHECK(rule["effect"] == "allow");
  CHECK(rule["subject"] == "dev-1");
  const std::int64_t rule_id = rule["id"];
  json rules = body_of(c.Get("/v1/devices/dev-1/acl"));
  REQUIRE(rules["rules"].size() == 1);
  CHECK(rules["rules"][0]["pattern"] == "alerts/%d");

  json allow = body_of(c.Get("/v1/acl/check?device=dev-1&access=publish&topic=alerts/dev-1"));
  CHECK(allow["decision"] == "allow");
  CHECK(allow["rule_id"] == rule_id);
  json deny = body_of(c.Get("/v1/acl/check?device=dev-1&access=publish&topic=alerts/other"));
  CHECK(deny["decision"] == "deny");
  CHECK(contains(deny["reason"], "no rule matches"));

  auto group_rule = post_json(
      c, "/v1/groups/temp/acl",
      json{{"effect", "deny"}, {"access", "publish"}, {"topic", "alerts/#"}, {"priority", 10}});
  REQUIRE(group_rule->status == 201);
  const std::int64_t group_rule_id = body_of(group_rule)["id"];
  CHECK(body_of(c.Get(
            "/v1/acl/check?device=dev-1&access=publish&topic=alerts/dev-1"))["decision"] == "deny");
  // A rule is deleted only through its own subject.
  check_error(c.Delete(("/v1/devices/dev-1/acl/" + std::to_string(group_rule_id)).c_str()), 404,
              "not_found");
  auto removed = c.Delete(("/v1/groups/temp/acl/" + std::to_string(group_rule_id)).c_str());
  REQUIRE(removed);
  CHECK(removed->status == 204);
  REQUIRE(c.Delete(("/v1/devices/dev-1/acl/" + std::to_string(rule_id)).c_str())->status == 204);
  check_error(c.Delete(("/v1/devices/dev-1/acl/" + std::to_string(rule_id)).c_str()), 404,
              "not_found");
  CHECK(body_of(c.Get("/v1/devices/dev-1/acl"))["rules"].empty());

  check_error(post_json(c, "/v1/devices/dev-1/acl", json{{"access", "write"}, {"topic", "a"}}), 400,
              "invalid_input", "access");
  check_error(
      post_json(c, "/v1/devices/dev-1/acl", json{{"access", "publish"}, {"topic", "a/#/b"}}), 400,
      "invalid_input", "topic");
  check_error(post_json(c, "/v1/devices/ghost/acl", json{{"access", "publish"}, {"topic", "a"}}),
              404, "not_found");
  check_error(post_json(c, "/v1/groups/ghosts/acl", json{{"access", "publish"}, {"topic", "a"}}),
              404, "not_found");
  check_error(c.Delete("/v1/devices/dev-1/acl/zero"), 400, "invalid_input");
  check_error(c.Get("/v1/acl/check?device=dev-1&access=publish"), 400, "invalid_input", "topic");
  check_error(c.Get("/v1/acl/check?device=dev-1&access=publish&topic=a/%2B"), 400, "invalid_input");
  check_error(c.Get("/v1/acl/check?device=ghost&access=read&topic=a"), 404, "not_found");
}

TEST_CASE("every write through the API is an audit row naming the token") {
  Served s;
  register_with_csr(s, "dev-1");
  auto c = s.client(s.operator_token);
  REQUIRE(c.Patch("/v1/devices/dev-1", json{{"status", "disabled"}}.dump(), "application/json")
              ->status == 200);
  json audit = body_of(s.client(s.reader_token).Get("/v1/audit?limit=1000"));
  std::set<std::string> api_actions;
  for (const auto& e : audit["events"]) {
    if (e["actor"] == "rest:ops") api_actions.insert(e["action"].get<std::string>());
  }
  CHECK(api_actions.count("device.register") == 1);
  CHECK(api_actions.count("device.disable") == 1);
  json page = body_of(c.Get("/v1/audit?limit=1"));
  REQUIRE(page["events"].size() == 1);
  CHECK(page["next_after"] == page["events"][0]["seq"]);
  json next = body_of(c.Get(("/v1/audit?limit=1&after=" + page["next_after"].dump()).c_str()));
  CHECK(next["events"][0]["seq"] == page["events"][0]["seq"].get<std::int64_t>() + 1);
}

TEST_CASE(
    "a bundle link serves the zip once, expired is 410, altered 404, and each refusal audited") {
  Served s;
  register_with_csr(s, "dev-1");
  auto store = s.store();
  auto certs = store->certificates_of("dev-1");
  REQUIRE(certs.ok());
  const std::string zip = std::string("PK\x03\x04", 4) + "a small stand-in for a bundle";
  const auto zip_path = s.dir / "bundle-1.zip";
  REQUIRE(write_file_atomic(zip_path, zip, 0600, Overwrite::refuse).ok());
  registry::BundleRecord record;
  record.id = "bundle-1";
  record.path = zip_path.string();
  record.sha256 = sha256_hex(zip).value();
  record.size = static_cast<std::int64_t>(zip.size());
  record.devices = {{"dev-1", certs->front().sha256_fingerprint}};
  REQUIRE(store->record_bundle(record, registry::Actor{"test", unix_now()}).ok());
  auto secret = bundle::load_or_create_link_secret(s.data());
  REQUIRE(secret.ok());
  auto token = bundle::make_link_token("bundle-1", unix_now() + 3600, *secret);
  REQUIRE(token.ok());

  httplib::Client anyone("127.0.0.1", s.port);
  std::string altered = *token;
  altered[altered.size() / 2] = altered[altered.size() / 2] == 'A' ? 'B' : 'A';
  check_error(anyone.Get(("/v1/bundles/" + altered).c_str()), 404, "not_found");
  check_error(anyone.Get("/v1/bundles/not-a-token"), 404, "not_found");
  auto expired = bundle::make_link_token("bundle-1", unix_now() - 10, *secret);
  REQUIRE(expired.ok());
  check_error(anyone.Get(("/v1/bundles/" + *expired).c_str()), 410, "gone");
  auto unknown = bundle::make_link_token("bundle-9", unix_now() + 3600, *secret);
  check_error(anyone.Get(("/v1/bundles/" + *unknown).c_str()), 404, "not_found");

  auto first = anyone.Get(("/v1/bundles/" + *token).c_str());
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->get_header_value("Content-Type") == "application/zip");
  CHECK(first->body == zip);
  check_error(anyone.Get(("/v1/bundles/" + *token).c_str()), 410, "gone");
  auto claimed = store->get_bundle("bundle-1");
  REQUIRE(claimed.ok());
  CHECK(claimed->downloaded_at.has_value());

  auto events = store->audit_list(0);
  REQUIRE(events.ok());
  std::multiset<std::string> reasons;
  for (const auto& e : *events) {
    CHECK_FALSE(contains(e.details, *token));  // never the whole token
    if (e.action == "bundle.download_refused")
      reasons.insert(json::parse(e.details)["reason"].get<std::string>());
  }
  CHECK(reasons == std::multiset<std::string>{"already_downloaded", "bad_signature", "expired",
                                              "malformed", "unknown_bundle"});
}

TEST_CASE("a bundle whose file no longer matches its record is not served") {
  Served s;
  register_with_csr(s, "dev-1");
  auto store = s.store();
  auto certs = store->certificates_of("dev-1");
  REQUIRE(certs.ok());
  const auto zip_path = s.dir / "b.zip";
  REQUIRE(write_file_atomic(zip_path, "original", 0600, Overwrite::refuse).ok());
  registry::BundleRecord record{"b",
                                "",
                                zip_path.string(),
                                sha256_hex("original").value(),
                                8,
                                false,
                                0,
                                std::nullopt,
                                "",
                                {{"dev-1", certs->front().sha256_fingerprint}}};
  REQUIRE(store->record_bundle(record, registry::Actor{"test", unix_now()}).ok());
  REQUIRE(write_file_atomic(zip_path, "tampered", 0600, Overwrite::replace).ok());
  auto token = bundle::make_link_token("b", unix_now() + 60,
                                       bundle::load_or_create_link_secret(s.data()).value());
  httplib::Client anyone("127.0.0.1", s.port);
  auto r = anyone.Get(("/v1/bundles/" + *token).c_str());
  check_error(r, 500, "internal");
  CHECK_FALSE(contains(r->body, "tampered"));
  CHECK_FALSE(store->get_bundle("b")->downloaded_at.has_value());  // still claimable once fixed
}

TEST_CASE("curl speaks to the server as the README shows") {
  Served s;
  const auto csr_path = s.dir / "curl.csr";
  std::ofstream(csr_path) << json{
      {"name", "curl-1"},
      {"type", "temp"},
      {"location", "lab"},
      {"firmware", "1.0.0"},
      {"csr",
       device_csr("curl-1")}}.dump();
  auto created =
      test::run({"/usr/bin/curl", "-sS", "-w", "\n%{http_code}", "-X", "POST",
                 s.base_url() + "/register", "-H", "Authorization: Bearer " + s.operator_token,
                 "-H", "Content-Type: application/json", "--data-binary", "@" + csr_path.string()});
  REQUIRE(created.exit_code == 0);
  CHECK(created.out.ends_with("\n201"));
  CHECK(json::parse(created.out.substr(0, created.out.rfind('\n')))["id"] == "curl-1");
  auto got = test::run({"/usr/bin/curl", "-sS", "-H", "Authorization: Bearer " + s.reader_token,
                        s.base_url() + "/device/curl-1"});
  CHECK(json::parse(got.out)["location"] == "lab");
  auto refused = test::run({"/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            s.base_url() + "/device/curl-1"});
  CHECK(refused.out == "401");
  auto revoked =
      test::run({"/usr/bin/curl", "-sS", "-X", "POST", "-d", "", "-H",
                 "Authorization: Bearer " + s.operator_token, s.base_url() + "/revoke/curl-1"});
  CHECK(json::parse(revoked.out)["status"] == "revoked");
  auto crl = test::run(
      {"/usr/bin/curl", "-sS", "-o", (s.dir / "crl.der").string(), s.base_url() + "/crl"});
  REQUIRE(crl.exit_code == 0);
  auto text = test::run({"/usr/bin/openssl", "crl", "-inform", "DER", "-noout", "-text", "-in",
                         (s.dir / "crl.der").string()});
  CHECK(text.exit_code == 0);
  CHECK(contains(text.out, "Serial Number"));
}

TEST_CASE("curl -X POST /revoke/ID with no body revokes as the product description shows") {
  Served s;
  std::map<std::string, std::string> serials;
  for (const char* id : {"no-body", "zero-length", "with-reason"})
    serials[id] = register_with_csr(s, id);
  const std::string auth = "Authorization: Bearer " + s.operator_token;
  // Exactly the description's call (plus the token): no -d, so no Content-Length at all.
  auto no_body = curl({"-X", "POST", "-H", auth, s.base_url() + "/revoke/no-body"});
  auto zero = curl(
      {"-X", "POST", "-H", auth, "-H", "Content-Length: 0", s.base_url() + "/revoke/zero-length"});
  // The control: a JSON body with a reason.
  auto with_reason = curl({"-X", "POST", "-H", auth, "-H", "Content-Type: application/json", "-d",
                           R"({"reason": "keyCompromise"})", s.base_url() + "/revoke/with-reason"});
  long last_crl = 0;
  for (auto* reply : {&no_body, &zero, &with_reason}) {
    INFO(reply->body.dump());
    CHECK(reply->status == 200);
    CHECK(reply->body["status"] == "revoked");
    CHECK(reply->body["already_revoked"] == false);
    REQUIRE(reply->body["crl_number"].is_number_integer());
    CHECK(reply->body["crl_number"].get<long>() > last_crl);
    last_crl = reply->body["crl_number"].get<long>();
  }
  auto store = s.store();
  for (const auto& [id, serial] : serials) {
    INFO(id);
    CHECK(store->get_device(id)->status == registry::DeviceStatus::revoked);
    auto certificates = store->certificates_of(id);
    REQUIRE(certificates.ok());
    REQUIRE(certificates->size() == 1);
    CHECK((*certificates)[0].status == registry::CertificateStatus::revoked);
    CHECK((*certificates)[0].revocation_reason ==
          (id == "with-reason" ? RevocationReason::key_compromise : RevocationReason::unspecified));
  }
  // The CRL on disk, and as served, was rewritten after the last revocation and lists all three.
  auto on_disk = read_file(s.data() / "crl.pem");
  REQUIRE(on_disk.ok());
  auto [listed, number] = crl_contents(*on_disk);
  CHECK(number == last_crl);
  for (const auto& [id, serial] : serials) CHECK(listed.count(serial) == 1);
  auto served = test::run({"/usr/bin/curl", "-sS", "--max-time", "5", s.base_url() + "/crl.pem"});
  CHECK(served.out == *on_disk);
}

TEST_CASE("every POST, PATCH and DELETE route answers a request without a body at once") {
  Served s;
  register_with_csr(s, "dev-1");
  auto c = s.client(s.operator_token);
  auto rule = body_of(
      post_json(c, "/v1/devices/dev-1/acl", json{{"access", "publish"}, {"topic", "x/dev-1"}}));
  const std::string auth = "Authorization: Bearer " + s.operator_token;
  for (bool zero_length : {false, true}) {
    INFO("Content-Length: 0 sent: " << zero_length);
    auto call = [&](const char* method, const std::string& path) {
      Args args{"-X", method, "-H", auth};
      if (zero_length) args.insert(args.end(), {"-H", "Content-Length: 0"});
      args.push_back(s.base_url() + path);
      return curl(args);
    };
    // Routes whose fields are all optional take no body as {}: a server without a hold
    // passphrase cannot make the key that no csr means.
    for (const char* path : {"/register", "/v1/devices", "/v1/devices/dev-1/certificates"}) {
      INFO(path);
      auto r = call("POST", path);
      CHECK(r.status == 409);
      CHECK(r.body["error"]["code"] == "cannot_hold_keys");
    }
    // Required fields are named.
    for (const char* path : {"/v1/devices/dev-1/acl", "/v1/groups/default/acl"}) {
      INFO(path);
      auto r = call("POST", path);
      CHECK(r.status == 400);
      CHECK(r.body["error"]["message"] == "access is required");
    }
    auto patch = call("PATCH", "/v1/devices/dev-1");
    CHECK(patch.status == 400);
    CHECK(contains(patch.body["error"]["message"].get<std::string>(), "nothing to update"));
  }
  // DELETE has no body by nature.
  auto removed =
      curl({"-X", "DELETE", "-H", auth,
            s.base_url() + "/v1/devices/dev-1/acl/" + std::to_string(rule["id"].get<int>())});
  CHECK(removed.status == 204);
  CHECK(s.store()->rules_for_subject(registry::SubjectKind::device, "dev-1")->empty());
  // A body is still read when one is sent chunked, and still bounded.
  auto chunked = curl({"-X", "POST", "-H", auth, "-H", "Content-Type: application/json", "-H",
                       "Transfer-Encoding: chunked", "-d", R"({"access":"read","topic":"y/1"})",
                       s.base_url() + "/v1/devices/dev-1/acl"});
  CHECK(chunked.status == 201);
  const auto big_file = s.dir / "big.json";
  std::ofstream(big_file) << json{{"access", "read"}, {"topic", std::string(300 * 1024, 'a')}};
  auto too_big = curl({"-X", "POST", "-H", auth, "-H", "Content-Type: application/json", "-H",
                       "Transfer-Encoding: chunked", "--data-binary", "@" + big_file.string(),
                       s.base_url() + "/v1/devices/dev-1/acl"});
  CHECK(too_big.status == 413);
  CHECK(too_big.body["error"]["code"] == "payload_too_large");
  // The refused chunked body is read to its end: the next request on the same connection is
  // understood.
  auto kept = s.client(s.operator_token);
  kept.set_keep_alive(true);
  const std::string chunk(16 * 1024, 'a');
  auto refused = kept.Post(
      "/v1/devices/dev-1/acl",
      [&chunk](std::size_t offset, httplib::DataSink& sink) {
        if (offset >= 20 * chunk.size()) {
          sink.done();
          return true;
        }
        return sink.write(chunk.data(), chunk.size());
      },
      "application/json");
  check_error(refused, 413, "payload_too_large");
  auto next = kept.Get("/v1/devices/dev-1");
  REQUIRE(next);
  CHECK(next->status == 200);
  // The versioned revoke, like the original one, needs no body.
  auto revoked = curl({"-X", "POST", "-H", auth, s.base_url() + "/v1/devices/dev-1/revoke"});
  CHECK(revoked.status == 200);
  CHECK(revoked.body["status"] == "revoked");
  CHECK(s.store()->get_device("dev-1")->status == registry::DeviceStatus::revoked);
}

TEST_CASE("an unknown caller is refused 401 before any byte of an announced body is read") {
  Served s;
  for (const auto& framing : kLargeBodyFramings) {
    INFO(framing);
    for (const std::string& authorization :
         {std::string("X-None: no token"), bearer("onb_" + std::string(43, 'A'))}) {
      INFO(authorization);
      RawConnection connection(s.port);
      connection.send(request_head("POST", "/v1/devices",
                                   {authorization, "Content-Type: application/json", framing}));
      check_refused_before_body(connection, 401, "unauthorized");
    }
  }
  // The body of a refused request, sent after all, is never taken for the next request: here it
  // is one, which the server would answer.
  const std::string smuggled = request_head("GET", "/healthz", {});
  RawConnection late(s.port);
  late.send(request_head(
      "POST", "/v1/devices",
      {"Content-Type: application/json", "Content-Length: " + std::to_string(smuggled.size())}));
  check_refused_before_body(late, 401, "unauthorized", smuggled);

  // Beside them: the operator's chunked body, sent after the headers, is read and registers the
  // device, and the connection stays open for a second request.
  RawConnection connection(s.port);
  connection.send(request_head(
      "POST", "/v1/devices",
      {bearer(s.operator_token), "Content-Type: application/json", "Transfer-Encoding: chunked"}));
  const std::string body = json{{"id", "raw-1"}, {"csr", device_csr("raw-1")}}.dump();
  std::ostringstream chunked;
  chunked << std::hex << body.size() << "\r\n" << body << "\r\n0\r\n\r\n";
  connection.send(chunked.str());
  RawResponse created = connection.read_response();
  INFO(created.body);
  CHECK(created.status == 201);
  CHECK_FALSE(created.headers.contains("connection"));
  CHECK(s.store()->get_device("raw-1").ok());
  connection.send(request_head("GET", "/v1/devices/raw-1", {bearer(s.operator_token)}));
  const RawResponse read = connection.read_response();
  CHECK(read.status == 200);
  CHECK(json::parse(read.body, nullptr, false)["id"] == "raw-1");
}

TEST_CASE("a reader on an operator route is refused 403 before the body is read") {
  Served s;
  register_with_csr(s, "dev-1");
  for (const auto& framing : kLargeBodyFramings) {
    INFO(framing);
    for (const auto& [method, path] :
         {std::pair{"POST", "/v1/devices"}, std::pair{"PATCH", "/v1/devices/dev-1"},
          std::pair{"POST", "/v1/devices/dev-1/acl"}}) {
      INFO(method << " " << path);
      RawConnection connection(s.port);
      connection.send(request_head(
          method, path, {bearer(s.reader_token), "Content-Type: application/json", framing}));
      check_refused_before_body(connection, 403, "forbidden");
    }
  }
  // A client that sends its body at once (httplib's) still gets the refusal, and its next request
  // on a new connection is answered.
  auto eager = s.client(s.reader_token);
  const json big{{"id", "d"}, {"metadata", {{"note", std::string(200 * 1024, 'a')}}}};
  check_error(post_json(eager, "/v1/devices", big), 403, "forbidden");
  CHECK(eager.Get("/v1/devices/dev-1")->status == 200);
  // Beside them: the same reader reads twice on one kept-alive connection, and the operator's
  // PATCH with a body sent after its headers is applied.
  RawConnection reader(s.port);
  for (int i = 0; i < 2; ++i) {
    reader.send(request_head("GET", "/v1/devices/dev-1", {bearer(s.reader_token)}));
    RawResponse r = reader.read_response();
    CHECK(r.status == 200);
    CHECK(r.headers.contains("keep-alive"));
  }
  const std::string patch = json{{"name", "renamed"}}.dump();
  RawConnection writer(s.port);
  writer.send(request_head("PATCH", "/v1/devices/dev-1",
                           {bearer(s.operator_token), "Content-Type: application/json",
                            "Content-Length: " + std::to_string(patch.size())}));
  writer.send(patch);
  const RawResponse patched = writer.read_response();
  INFO(patched.body);
  CHECK(patched.status == 200);
  CHECK(s.store()->get_device("dev-1")->name == "renamed");
}

TEST_CASE("a body that is not JSON is refused 415 after authentication and before it is read") {
  Served s;
  for (const auto& framing : kLargeBodyFramings) {
    INFO(framing);
    RawConnection connection(s.port);
    connection.send(request_head("POST", "/v1/devices",
                                 {bearer(s.operator_token), "Content-Type: text/plain", framing}));
    check_refused_before_body(connection, 415, "unsupported_media_type");
    // Who is calling comes first: without a token the same request is 401.
    RawConnection anonymous(s.port);
    anonymous.send(request_head("POST", "/v1/devices", {"Content-Type: text/plain", framing}));
    check_refused_before_body(anonymous, 401, "unauthorized");
  }
  // Beside them: the same request as JSON is read and processed.
  const std::string body = json{{"id", "json-1"}, {"csr", device_csr("json-1")}}.dump();
  RawConnection connection(s.port);
  connection.send(request_head("POST", "/v1/devices",
                               {bearer(s.operator_token), "Content-Type: application/json",
                                "Content-Length: " + std::to_string(body.size())}));
  connection.send(body);
  const RawResponse created = connection.read_response();
  INFO(created.body);
  CHECK(created.status == 201);
  CHECK(s.store()->get_device("json-1").ok());
}

TEST_CASE("a body that no route reads is refused before it is read, and the connection closed") {
  Served s;
  register_with_csr(s, "dev-1");
  // httplib would leave the GET's body on the connection as the next request, and read the
  // others before any handler ran, whoever sent them.
  RawConnection get(s.port);
  get.send(request_head("GET", "/v1/devices", {"Content-Length: 100000000"}));
  check_refused_before_body(get, 400, "bad_request");
  RawConnection put(s.port);
  put.send(request_head("PUT", "/v1/devices", {"Transfer-Encoding: chunked"}));
  check_refused_before_body(put, 400, "bad_request");
  RawConnection unknown(s.port);
  unknown.send(request_head("POST", "/v1/nothing-here",
                            {"Content-Type: application/json", "Content-Length: 100000000"}));
  check_refused_before_body(unknown, 404, "not_found");
  // httplib leaves a chunked DELETE body unread; it must not become the next request.
  RawConnection chunked_delete(s.port);
  chunked_delete.send(request_head(
      "DELETE", "/v1/devices/dev-1/acl/1",
      {bearer(s.operator_token), "Content-Type: application/json", "Transfer-Encoding: chunked"}));
  check_refused_before_body(chunked_delete, 400, "bad_request", "0\r\n\r\n");

  // Beside them: without a body the same kinds of request are answered on one kept-alive
  // connection.
  RawConnection plain(s.port);
  plain.send(request_head("GET", "/v1/devices", {bearer(s.reader_token)}));
  CHECK(plain.read_response().status == 200);
  plain.send(request_head("POST", "/v1/nothing-here", {}));
  RawResponse missing = plain.read_response();
  CHECK(missing.status == 404);
  CHECK(json::parse(missing.body, nullptr, false)["error"]["code"] == "not_found");
  CHECK(missing.headers.contains("keep-alive"));
  plain.send(request_head("GET", "/healthz", {}));
  CHECK(plain.read_response().status == 200);
}

TEST_CASE("PATCH changes a device's name, type, location, firmware and metadata, audited") {
  Served s;
  register_with_csr(s, "dev-1");
  register_with_csr(s, "dev-2");
  auto c = s.client(s.operator_token);
  auto patch = [&](httplib::Client& client, const std::string& id, const json& body) {
    return client.Patch(("/v1/devices/" + id).c_str(), body.dump(), "application/json");
  };
  json changed = body_of(patch(c, "dev-1",
                               json{{"name", "Boiler"},
                                    {"type", "valve"},
                                    {"location", "basement"},
                                    {"firmware", "2.0.1"},
                                    {"metadata", {{"rack", 4}}}}));
  CHECK(changed["id"] == "dev-1");
  CHECK(changed["name"] == "Boiler");
  CHECK(changed["type"] == "valve");
  CHECK(changed["location"] == "basement");
  CHECK(changed["firmware"] == "2.0.1");
  CHECK(changed["metadata"] == json{{"rack", 4}});
  CHECK(changed["status"] == "active");
  json got = body_of(c.Get("/v1/devices/dev-1"));
  CHECK(got["location"] == "basement");
  CHECK(got["type"] == "valve");
  // Only what is sent changes.
  CHECK(body_of(patch(c, "dev-1", json{{"firmware", "2.0.2"}}))["location"] == "basement");
  auto audit = body_of(c.Get("/v1/audit?limit=1000"))["events"];
  std::vector<json> updates;
  for (const auto& e : audit)
    if (e["action"] == "device.update") updates.push_back(e);
  REQUIRE(updates.size() == 2);
  CHECK(updates[0]["actor"] == "rest:ops");
  CHECK(updates[0]["subject"] == "dev-1");
  CHECK(updates[0]["details"]["changed"]["type"] == json{{"from", "temp"}, {"to", "valve"}});
  CHECK(updates[0]["details"]["created_group"] == true);
  CHECK(updates[1]["details"]["changed"] ==
        json{{"firmware", {{"from", "2.0.1"}, {"to", "2.0.2"}}}});

  // Each refusal, with nothing changed.
  const std::string json_type = "application/json";
  check_error(patch(c, "dev-1", json::object()), 400, "invalid_input", "nothing to update");
  check_error(c.Patch("/v1/devices/dev-1", "", json_type.c_str()), 400, "invalid_input",
              "nothing to update");
  check_error(patch(c, "dev-1", json{{"colour", "red"}}), 400, "invalid_input",
              "unknown field 'colour'");
  check_error(patch(c, "dev-1", json{{"type", "a b"}}), 400, "invalid_input", "type:");
  check_error(patch(c, "dev-1", json{{"metadata", "x"}}), 400, "invalid_input",
              "metadata must be a JSON object");
  check_error(patch(c, "dev-1", json{{"location", 5}}), 400, "invalid_input",
              "location must be a string");
  check_error(patch(c, "dev-1", json{{"status", "disabled"}, {"location", "roof"}}), 400,
              "invalid_input", "status cannot be changed together");
  check_error(patch(c, "ghost", json{{"location", "roof"}}), 404, "not_found", "ghost");
  auto reader = s.client(s.reader_token);
  check_error(patch(reader, "dev-1", json{{"location", "roof"}}), 403, "forbidden");
  REQUIRE(c.Post("/v1/devices/dev-2/revoke", "", "application/json")->status == 200);
  check_error(patch(c, "dev-2", json{{"location", "roof"}}), 409, "conflict", "revoked");
  json after = body_of(c.Get("/v1/devices/dev-1"));
  CHECK(after["location"] == "basement");
  CHECK(after["firmware"] == "2.0.2");
  CHECK(body_of(c.Get("/v1/devices/dev-2"))["location"] == "");
  CHECK(s.store()->verify_audit()->ok());
}

TEST_CASE(
    "docs/openapi.yaml passes a real OpenAPI 3.0 validator, which catches a broken document") {
  const auto script = std::filesystem::path(ONBOARD_SOURCE_DIR) / "scripts" / "check-openapi";
  const auto document = std::filesystem::path(ONBOARD_SOURCE_DIR) / "docs" / "openapi.yaml";
  auto checked = test::run({script.string(), document.string()});
  INFO(checked.out << checked.err);
  // 2: the validator (libjson-validator-perl, from scripts/install-deps) is missing.
  REQUIRE(checked.exit_code != 2);
  CHECK(checked.exit_code == 0);
  CHECK(checked.out.empty());

  // The control: the same document with the mistake it once had, an unquoted comma in a flow
  // mapping (YAML reads the rest as a new key), is refused and the place is named.
  auto text = read_file(document);
  REQUIRE(text.ok());
  const std::string good = "description: 'a topic, or a filter for subscribe'";
  const auto at = text->find(good);
  REQUIRE(at != std::string::npos);
  std::string broken = *text;
  broken.replace(at, good.size(), "description: a topic, or a filter for subscribe");
  TempDir dir;
  std::ofstream(dir / "openapi.yaml") << broken;
  auto refused = test::run({script.string(), (dir / "openapi.yaml").string()});
  INFO(refused.out << refused.err);
  CHECK(refused.exit_code == 1);
  CHECK(contains(refused.out, "or a filter for subscribe"));
  CHECK(contains(refused.out, "acl~1check"));
}

TEST_CASE("REST registration and PATCH refuse control characters and over-long free text") {
  Served s;
  auto c = s.client(s.operator_token);
  // A positive control: non-ASCII UTF-8 is ordinary text.
  json good = body_of(post_json(c, "/v1/devices",
                                json{{"id", "dev-1"},
                                     {"name", "Kessel Zürich"},
                                     {"location", "Zürich"},
                                     {"metadata", {{"Gebäude", "Süd"}}},
                                     {"csr", device_csr("dev-1")}}));
  CHECK(good["location"] == "Zürich");

  struct Case {
    json fields;
    std::string field;
  };
  const std::vector<Case> cases = {
      {{{"location", "lab\x1b[2J\x1b[31m"}}, "location"},
      {{{"location", "lab\ndev-9  active"}}, "location"},
      {{{"name", std::string("a\0b", 3)}}, "name"},
      {{{"firmware", "1.0\xc2\x9b"}}, "firmware"},
      {{{"name", std::string(129, 'n')}}, "name"},
      {{{"location", std::string(129, 'l')}}, "location"},
      {{{"firmware", std::string(65, 'f')}}, "firmware"},
      {{{"metadata", {{"note", "\x1b]0;owned\x07"}}}}, "metadata"},
      {{{"metadata", {{"n", std::string(4100, 'm')}}}}, "metadata"},
  };
  for (const auto& one : cases) {
    INFO(one.field << ": " << one.fields.dump());
    json body = one.fields;
    body["id"] = "bad-1";
    body["csr"] = device_csr("bad-1");
    check_error(post_json(c, "/v1/devices", body), 400, "invalid_input", one.field);
    check_error(c.Patch("/v1/devices/dev-1", one.fields.dump(), "application/json"), 400,
                "invalid_input", one.field);
  }
  // Invalid UTF-8 is not JSON: refused before it reaches the registry.
  auto latin1 =
      c.Post("/v1/devices", "{\"id\": \"bad-1\", \"location\": \"Z\xfcrich\"}", "application/json");
  REQUIRE(latin1);
  CHECK(latin1->status == 400);
  check_error(c.Get("/v1/devices/bad-1"), 404, "not_found");
  json kept = body_of(c.Get("/v1/devices/dev-1"));
  CHECK(kept["location"] == "Zürich");
  CHECK(kept["name"] == "Kessel Zürich");
  CHECK(kept["metadata"] == json{{"Gebäude", "Süd"}});
}

TEST_CASE("metadata nested too deep is refused with 400 and the server keeps serving") {
  Served s;
  auto c = s.client(s.operator_token);
  REQUIRE(
      post_json(c, "/v1/devices", json{{"id", "dev-1"}, {"csr", device_csr("dev-1")}})->status ==
      201);
  // A value inside `levels` objects and arrays, the metadata object included.
  auto nested = [](int levels) {
    json value = "x";
    for (int i = 1; i < levels; ++i) value = json::array({value});
    return json{{"m", value}};
  };
  // The registry's bound is 32 levels: at it, accepted (the positive control); one more, refused.
  json at_limit = body_of(
      c.Patch("/v1/devices/dev-1", json{{"metadata", nested(32)}}.dump(), "application/json"));
  CHECK(at_limit["metadata"] == nested(32));
  check_error(
      c.Patch("/v1/devices/dev-1", json{{"metadata", nested(33)}}.dump(), "application/json"), 400,
      "invalid_input", "nested more than 32 levels");

  // 120,000 nested arrays fit the default body limit (256 KiB). Serialising them recursed once
  // per level and overflowed the worker's stack: the server died instead of answering.
  const std::string deep = std::string(120000, '[') + std::string(120000, ']');
  const std::string metadata = "\"metadata\": {\"a\": " + deep + "}";
  check_error(c.Post("/v1/devices",
                     "{\"id\": \"dev-deep\", \"csr\": " + json(device_csr("dev-deep")).dump() +
                         ", " + metadata + "}",
                     "application/json"),
              400, "invalid_input", "nested more than 32 levels");
  check_error(c.Patch("/v1/devices/dev-1", "{" + metadata + "}", "application/json"), 400,
              "invalid_input", "nested more than 32 levels");
  // Still serving, and neither request changed anything.
  check_error(c.Get("/v1/devices/dev-deep"), 404, "not_found");
  CHECK(body_of(c.Get("/v1/devices/dev-1"))["metadata"] == nested(32));
}

TEST_CASE("the CLI and the server write the same registry at once without losing a write") {
  Served s;
  constexpr int kPerWriter = 12;
  std::atomic<int> http_failures{0};
  std::vector<std::thread> http_writers;
  for (int w = 0; w < 2; ++w) {
    http_writers.emplace_back([&, w] {
      auto c = s.client(s.operator_token);
      for (int i = 0; i < kPerWriter; ++i) {
        const std::string id = "http-" + std::to_string(w) + "-" + std::to_string(i);
        auto r = c.Post("/v1/devices", json{{"id", id}, {"csr", device_csr(id)}}.dump(),
                        "application/json");
        if (!r || r->status != 201) ++http_failures;
        auto p = c.Patch(("/v1/devices/" + id).c_str(), json{{"status", "disabled"}}.dump(),
                         "application/json");
        if (!p || p->status != 200) ++http_failures;
      }
    });
  }
  int cli_failures = 0;
  for (int i = 0; i < kPerWriter; ++i) {
    const std::string id = "cli-" + std::to_string(i);
    auto r = onboardctl_in(s.data(), {"device", "register", id, "--key-alg", "p256", "--key-out",
                                      (s.dir / (id + ".key")).string()});
    if (r.exit_code != 0) {
      ++cli_failures;
      UNSCOPED_INFO(r.err);
    }
    if (onboardctl_in(s.data(),
                      {"acl", "grant", "--device", id, "--access", "publish", "--topic", "x/" + id})
            .exit_code != 0)
      ++cli_failures;
  }
  for (auto& t : http_writers) t.join();
  CHECK(http_failures == 0);
  CHECK(cli_failures == 0);
  auto store = s.store();
  CHECK(store->count_devices({}).value() == 3 * kPerWriter);
  registry::DeviceFilter disabled;
  disabled.status = registry::DeviceStatus::disabled;
  CHECK(store->count_devices(disabled).value() == 2 * kPerWriter);
  auto check = store->verify_audit();
  REQUIRE(check.ok());
  CHECK(check->ok());
  CHECK_FALSE(contains(s.log(), "locked"));
}

TEST_CASE("every route the server registers is in docs/openapi.yaml, and only those") {
  auto listed = test::run({ONBOARDCTL_PATH, "serve", "--list-routes"});
  REQUIRE(listed.exit_code == 0);
  std::set<std::string> served;
  std::istringstream lines(listed.out);
  for (std::string line; std::getline(lines, line);) served.insert(line);
  REQUIRE(served.size() > 10);

  // The spec's paths sit at two spaces of indent under "paths:", their methods at four.
  auto spec = read_file(std::filesystem::path(ONBOARD_SOURCE_DIR) / "docs" / "openapi.yaml");
  REQUIRE(spec.ok());
  std::set<std::string> documented;
  std::istringstream yaml(*spec);
  bool in_paths = false;
  std::string path;
  for (std::string line; std::getline(yaml, line);) {
    if (line == "paths:") {
      in_paths = true;
      continue;
    }
    if (!in_paths) continue;
    if (!line.empty() && line[0] != ' ') break;  // the next top-level key
    if (line.starts_with("  /") && line.ends_with(":")) {
      path = line.substr(2, line.size() - 3);
    } else if (line.starts_with("    ") && !line.starts_with("     ") && line.ends_with(":")) {
      std::string method = line.substr(4, line.size() - 5);
      if (method == "parameters") continue;
      for (auto& ch : method) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      documented.insert(method + " " + path);
    }
  }
  CHECK(served == documented);
}

TEST_CASE("serve stops on a signal sent the moment it says it is serving") {
  // The first moments after "serving on" are when a service manager's stop most often lands.
  TempDir dir;
  REQUIRE(onboardctl_in(dir.path(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  for (int round = 0; round < 20; ++round) {
    INFO("round " << round);
    test::ChildProcess server(
        {ONBOARDCTL_PATH, "--data-dir", dir.path().string(), "serve", "--listen", "127.0.0.1:0"},
        dir.path() / "serve.log");
    REQUIRE(server.read_line().starts_with("serving on http://127.0.0.1:"));
    CHECK(server.stop(round % 2 == 0 ? SIGTERM : SIGINT) == 0);
  }
}

TEST_CASE("serve stops cleanly on SIGTERM and SIGINT, and refuses a weak hold passphrase") {
  for (int signal : {SIGTERM, SIGINT}) {
    Served s;
    CHECK(s.server->stop(signal) == 0);
    CHECK(contains(s.log(), "stopping"));
  }
  TempDir dir;
  REQUIRE(onboardctl_in(dir.path(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  auto weak = onboardctl_in(dir.path(),
                            {"serve", "--listen", "127.0.0.1:0", "--hold-passphrase-env", "WEAK"},
                            {{"WEAK", "password"}});
  CHECK(weak.exit_code == 3);
  CHECK(contains(weak.err, "hold passphrase"));
  auto bad_listen = onboardctl_in(dir.path(), {"serve", "--listen", "localhost"});
  CHECK(bad_listen.exit_code == 3);
  CHECK(contains(bad_listen.err, "--listen"));
}

TEST_CASE("token create prints the token once and stores only its hash") {
  TempDir dir;
  REQUIRE(onboardctl_in(dir.path(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  const std::string token = new_token(dir.path(), "ci", "reader");
  CHECK(token.starts_with("onb_"));
  CHECK(token.size() == 4 + 43);
  CHECK(token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                                4) == std::string::npos);
  CHECK(new_token(dir.path(), "ci2", "reader") != token);
  auto dup = onboardctl_in(dir.path(), {"token", "create", "--name", "ci", "--role", "reader"});
  CHECK(dup.exit_code == 5);
  auto bad_role = onboardctl_in(dir.path(), {"token", "create", "--name", "x", "--role", "admin"});
  CHECK(bad_role.exit_code == 3);

  auto list = onboardctl_in(dir.path(), {"token", "list", "--json"});
  REQUIRE(list.exit_code == 0);
  CHECK_FALSE(contains(list.out, token));
  CHECK(json::parse(list.out)[0]["name"] == "ci");
  // Nowhere in the registry file is the token itself; its SHA-256 is.
  auto db = read_file(dir.path() / "registry.db", 64 << 20);
  REQUIRE(db.ok());
  CHECK_FALSE(contains(*db, token));
  SQLite::Database sqlite((dir.path() / "registry.db").string(), SQLite::OPEN_READONLY);
  SQLite::Statement find(sqlite, "SELECT count(*) FROM api_tokens WHERE token_sha256 = ?");
  find.bind(1, sha256_hex(token).value());
  REQUIRE(find.executeStep());
  CHECK(find.getColumn(0).getInt() == 1);

  CHECK(onboardctl_in(dir.path(), {"token", "revoke", "ci"}).exit_code == 0);
  CHECK(contains(onboardctl_in(dir.path(), {"token", "revoke", "ci"}).out, "already revoked"));
  CHECK(onboardctl_in(dir.path(), {"token", "revoke", "ghost"}).exit_code == 4);
}

TEST_CASE(
    "device register --hold-key keeps the key encrypted in the registry, under a strong "
    "passphrase only") {
  TempDir dir;
  REQUIRE(onboardctl_in(dir.path(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  auto no_pass = onboardctl_in(dir.path(), {"device", "register", "d1", "--hold-key"});
  CHECK(no_pass.exit_code == 3);
  CHECK(contains(no_pass.err, "--hold-passphrase-env"));
  auto weak = onboardctl_in(
      dir.path(), {"device", "register", "d1", "--hold-key", "--hold-passphrase-env", "P"},
      {{"P", "hunter2"}});
  CHECK(weak.exit_code == 3);
  CHECK(contains(weak.err, "hold passphrase"));
  auto both = onboardctl_in(
      dir.path(), {"device", "register", "d1", "--hold-key", "--key-out", (dir / "k").string()});
  CHECK(both.exit_code == 2);
  auto with_csr = onboardctl_in(
      dir.path(), {"device", "register", "d1", "--hold-key", "--csr", (dir / "x.csr").string()});
  CHECK(with_csr.exit_code == 2);

  auto held = onboardctl_in(
      dir.path(),
      {"device", "register", "d1", "--key-alg", "p256", "--hold-key", "--hold-passphrase-env", "P"},
      {{"P", kHoldPassphrase}});
  INFO(held.err);
  REQUIRE(held.exit_code == 0);
  CHECK(contains(held.out, "held encrypted in the registry"));
  auto shown = onboardctl_in(dir.path(), {"device", "show", "d1", "--json"});
  json j = json::parse(shown.out);
  REQUIRE(j["server_key_copy"].is_object());
  CHECK(j["server_key_copy"]["encrypted"] == true);
  auto plain = onboardctl_in(dir.path(), {"device", "show", "d1"});
  CHECK(contains(plain.out, "server key copy: held, encrypted, since"));

  // A renewal to a device-held key wipes the server copy.
  const auto csr = dir / "d1.csr";
  std::ofstream(csr) << device_csr("d1");
  REQUIRE(onboardctl_in(dir.path(), {"cert", "renew", "d1", "--csr", csr.string()}).exit_code == 0);
  CHECK(json::parse(
            onboardctl_in(dir.path(), {"device", "show", "d1", "--json"}).out)["server_key_copy"]
            .is_null());
  CHECK(contains(onboardctl_in(dir.path(), {"device", "show", "d1"}).out, "server key copy: none"));
  CHECK(contains(onboardctl_in(dir.path(), {"cert", "list", "d1"}).out, "superseded"));
}

TEST_CASE(
    "over HTTPS, a client certificate bound to a credential authenticates and others do not") {
  TempDir dir;
  const auto data = dir / "data";
  REQUIRE(onboardctl_in(data, {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  auto issue = [&](Args args) {
    auto r = onboardctl_in(data, args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  };
  issue({"ca", "issue-server", "--ip", "127.0.0.1", "--key-alg", "p256", "--cert-out",
         (dir / "server.crt").string(), "--key-out", (dir / "server.key").string()});
  for (const char* name : {"op-alice", "dev-x"}) {
    issue({"ca", "issue", "--device", name, "--key-alg", "p256", "--cert-out",
           (dir / (std::string(name) + ".crt")).string(), "--key-out",
           (dir / (std::string(name) + ".key")).string()});
  }
  auto bound = onboardctl_in(data, {"token", "create", "--name", "alice", "--role", "operator",
                                    "--client-cert", (dir / "op-alice.crt").string()});
  REQUIRE(bound.exit_code == 0);
  CHECK_FALSE(contains(bound.out, "onb_"));  // no bearer secret exists for it
  const std::string reader = new_token(data, "viewer", "reader");
  const std::string chain = (data / "ca" / "chain.pem").string();

  test::ChildProcess server({ONBOARDCTL_PATH, "--data-dir", data.string(), "serve", "--listen",
                             "127.0.0.1:0", "--tls-cert", (dir / "server.crt").string(),
                             "--tls-key", (dir / "server.key").string(), "--client-ca", chain},
                            dir / "serve.log");
  const std::string line = server.read_line();
  REQUIRE(line.starts_with("serving on https://127.0.0.1:"));
  const int port = std::stoi(line.substr(line.rfind(':') + 1));
  auto tls_client = [&](const std::string& who) {
    auto c = who.empty() ? std::make_unique<httplib::SSLClient>("127.0.0.1", port)
                         : std::make_unique<httplib::SSLClient>("127.0.0.1", port,
                                                                (dir / (who + ".crt")).string(),
                                                                (dir / (who + ".key")).string());
    c->set_ca_cert_path(chain.c_str());
    c->enable_server_certificate_verification(true);
    return c;
  };

  auto alice = tls_client("op-alice");
  auto created = alice->Post("/v1/devices", json{{"id", "d1"}, {"csr", device_csr("d1")}}.dump(),
                             "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  auto store = registry::open_sqlite_store(data / "registry.db", registry::OpenMode::read_write);
  REQUIRE(store.ok());
  auto events = (*store)->audit_list(0);
  REQUIRE(events.ok());
  CHECK(events->back().actor == "rest:alice");

  // An Authorization header decides alone, beside a bound certificate too: a malformed one is
  // refused, not passed over for the certificate.
  for (const std::string header : {"Basic YWxpY2U6eA==", "Bearer", "Token x"}) {
    INFO(header);
    check_error(tls_client("op-alice")->Get("/v1/devices", {{"Authorization", header}}), 401,
                "unauthorized");
  }
  // A certificate of the same CA that no credential names (a device's) is no operator.
  check_error(tls_client("dev-x")->Get("/v1/devices"), 401, "unauthorized");
  check_error(tls_client("")->Get("/v1/devices"), 401, "unauthorized");
  auto with_token = tls_client("");
  with_token->set_bearer_token_auth(reader.c_str());
  CHECK(with_token->Get("/v1/devices")->status == 200);
  // A refusal sent before the body was read ends the TLS connection too; the client gets the
  // refusal and its next request is answered.
  check_error(with_token->Post("/v1/devices", json{{"id", "d2"}, {"csr", device_csr("d2")}}.dump(),
                               "application/json"),
              403, "forbidden");
  CHECK(with_token->Get("/v1/devices")->status == 200);
  // Plain HTTP to the TLS port gets no answer.
  httplib::Client plain("127.0.0.1", port);
  plain.set_read_timeout(2, 0);
  auto refused = plain.Get("/healthz");
  CHECK((!refused || refused->status != 200));

  REQUIRE(onboardctl_in(data, {"token", "revoke", "alice"}).exit_code == 0);
  check_error(tls_client("op-alice")->Get("/v1/devices"), 401, "unauthorized");
  CHECK(server.stop(SIGTERM) == 0);
}

TEST_CASE("serve refuses an encrypted --tls-key at start and says so without asking for it") {
  TempDir dir;
  const auto data = dir / "data";
  REQUIRE(onboardctl_in(data, {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  REQUIRE(onboardctl_in(
              data, {"ca", "issue-server", "--ip", "127.0.0.1", "--key-alg", "p256", "--cert-out",
                     (dir / "server.crt").string(), "--key-out", (dir / "server.key").string()})
              .exit_code == 0);
  const auto encrypted = dir / "server-encrypted.key";
  auto made = test::run({"/usr/bin/openssl", "pkey", "-in", (dir / "server.key").string(),
                         "-aes256", "-passout", "pass:a passphrase", "-out", encrypted.string()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  auto refused =
      onboardctl_in(data, {"serve", "--listen", "127.0.0.1:0", "--tls-cert",
                           (dir / "server.crt").string(), "--tls-key", encrypted.string()});
  INFO(refused.err);
  CHECK(refused.exit_code != 0);
  CHECK(contains(refused.err, "--tls-key " + encrypted.string() + " is an encrypted key"));
  CHECK_FALSE(contains(refused.out, "serving on"));
  // Positive control: the same key unencrypted serves.
  test::ChildProcess server(
      {ONBOARDCTL_PATH, "--data-dir", data.string(), "serve", "--listen", "127.0.0.1:0",
       "--tls-cert", (dir / "server.crt").string(), "--tls-key", (dir / "server.key").string()},
      dir / "serve.log");
  CHECK(server.read_line().starts_with("serving on https://127.0.0.1:"));
  CHECK(server.stop(SIGTERM) == 0);
}

// A client certificate the test's own CA signs, with the given validity, written as NAME.crt and
// NAME.key under `dir`; recorded in the registry (kind other, as `ca issue` does) when `record`.
CertificateInfo own_client_certificate(const std::filesystem::path& data,
                                       const std::filesystem::path& dir, const std::string& name,
                                       UnixTime not_before, UnixTime not_after, bool record) {
  auto ca = Authority::open(data);
  REQUIRE(ca.ok());
  REQUIRE(ca->load_signing_key(nullptr).ok());
  auto key = generate_key(KeyAlg::p256);
  REQUIRE(key.ok());
  CertificateRequest request;
  request.profile = Profile::device;
  request.common_name = name;
  request.public_key = key->get();
  request.not_before = not_before;
  request.not_after = not_after;
  auto issued = ca->issue(std::move(request));
  REQUIRE(issued.ok());
  auto key_pem = private_key_to_pem(key->get());
  REQUIRE(key_pem.ok());
  REQUIRE(write_file_atomic(dir / (name + ".key"), key_pem->view(), 0600, Overwrite::replace).ok());
  REQUIRE(write_file_atomic(dir / (name + ".crt"), issued->pem, 0644, Overwrite::replace).ok());
  if (record) {
    auto store = registry::open_sqlite_store(data / "registry.db", registry::OpenMode::read_write);
    REQUIRE(store.ok());
    REQUIRE((*store)
                ->record_certificate(registry::CertificateKind::other,
                                     ops::new_certificate(issued->info, issued->pem),
                                     registry::Actor{"test", unix_now()})
                .ok());
  }
  return issued->info;
}

TEST_CASE(
    "over HTTPS, an operator certificate revoked expired or unknown to the registry is "
    "refused at its next request while another operator still works") {
  TempDir dir;
  const auto data = dir / "data";
  REQUIRE(onboardctl_in(data, {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  auto ok = [&](Args args) {
    auto r = onboardctl_in(data, args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r;
  };
  ok({"ca", "issue-server", "--ip", "127.0.0.1", "--key-alg", "p256", "--cert-out",
      (dir / "server.crt").string(), "--key-out", (dir / "server.key").string()});
  for (const char* name : {"op-alice", "op-bob"}) {
    ok({"ca", "issue", "--device", name, "--key-alg", "p256", "--cert-out",
        (dir / (std::string(name) + ".crt")).string(), "--key-out",
        (dir / (std::string(name) + ".key")).string()});
    ok({"token", "create", "--name", std::string(name).substr(3), "--role", "operator",
        "--client-cert", (dir / (std::string(name) + ".crt")).string()});
  }
  const std::string chain = (data / "ca" / "chain.pem").string();
  test::ChildProcess server({ONBOARDCTL_PATH, "--data-dir", data.string(), "serve", "--listen",
                             "127.0.0.1:0", "--tls-cert", (dir / "server.crt").string(),
                             "--tls-key", (dir / "server.key").string(), "--client-ca", chain},
                            dir / "serve.log");
  const std::string line = server.read_line();
  REQUIRE(line.starts_with("serving on https://127.0.0.1:"));
  const int port = std::stoi(line.substr(line.rfind(':') + 1));
  auto tls_client = [&](const std::string& who) {
    auto c = std::make_unique<httplib::SSLClient>(
        "127.0.0.1", port, (dir / (who + ".crt")).string(), (dir / (who + ".key")).string());
    c->set_ca_cert_path(chain.c_str());
    c->enable_server_certificate_verification(true);
    c->set_keep_alive(true);
    return c;
  };
  auto create = [](httplib::SSLClient& c, const std::string& id) {
    return c.Post("/v1/devices", json{{"id", id}, {"csr", device_csr(id)}}.dump(),
                  "application/json");
  };

  SECTION("revoked with ca revoke") {
    // Positive control: alice reads and writes on a kept-alive connection.
    auto alice = tls_client("op-alice");
    auto listed = alice->Get("/v1/devices");
    REQUIRE(listed);
    CHECK(listed->status == 200);
    auto created = create(*alice, "d1");
    REQUIRE(created);
    CHECK(created->status == 201);

    auto pem = read_file(dir / "op-alice.crt", 1 << 20);
    REQUIRE(pem.ok());
    auto cert = certificate_from_pem(*pem);
    REQUIRE(cert.ok());
    const std::string serial = describe_certificate(cert->get()).serial_hex;
    ok({"ca", "revoke", serial, "--reason", "keyCompromise"});

    // The very next request on the same connection (no new handshake) and on a new one.
    check_error(alice->Get("/v1/devices"), 401, "unauthorized", "revoked (keyCompromise)");
    check_error(create(*alice, "d2"), 401, "unauthorized", "revoked");
    check_error(tls_client("op-alice")->Get("/v1/devices/d1"), 401, "unauthorized", "revoked");
    check_error(alice->Post("/v1/devices/d1/revoke", "{}", "application/json"), 401, "unauthorized",
                "revoked");

    // Bob's certificate is untouched: he still reads and writes, and alice wrote nothing more.
    auto bob = tls_client("op-bob");
    auto bob_list = bob->Get("/v1/devices");
    REQUIRE(bob_list);
    CHECK(bob_list->status == 200);
    CHECK(contains(bob_list->body, "\"d1\""));
    CHECK_FALSE(contains(bob_list->body, "\"d2\""));
    auto bob_created = create(*bob, "d3");
    REQUIRE(bob_created);
    CHECK(bob_created->status == 201);
  }

  SECTION("expired while its connection stays open and then at the handshake") {
    const UnixTime start = unix_now();
    own_client_certificate(data, dir.path(), "op-carol", start - 60, start + 3, true);
    ok({"token", "create", "--name", "carol", "--role", "operator", "--client-cert",
        (dir / "op-carol.crt").string()});
    auto carol = tls_client("op-carol");
    auto before = carol->Get("/v1/devices");
    REQUIRE(before);
    CHECK(before->status == 200);  // positive control: in date, it works
    while (unix_now() <= start + 3) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    check_error(carol->Get("/v1/devices"), 401, "unauthorized", "expired");
    check_error(create(*carol, "d4"), 401, "unauthorized", "expired");
    // A new connection with it fails the handshake: no answer at all.
    auto fresh = tls_client("op-carol")->Get("/v1/devices");
    CHECK((!fresh || fresh->status != 200));
    auto bob = tls_client("op-bob")->Get("/v1/devices");
    REQUIRE(bob);
    CHECK(bob->status == 200);
  }

  SECTION("signed by the CA but never recorded in its registry") {
    const UnixTime now = unix_now();
    own_client_certificate(data, dir.path(), "op-dave", now - 60, now + 3600, false);
    ok({"token", "create", "--name", "dave", "--role", "operator", "--client-cert",
        (dir / "op-dave.crt").string()});
    check_error(tls_client("op-dave")->Get("/v1/devices"), 401, "unauthorized",
                "not one the registry");
    auto bob = tls_client("op-bob")->Get("/v1/devices");
    REQUIRE(bob);
    CHECK(bob->status == 200);
  }
  CHECK(server.stop(SIGTERM) == 0);
}

namespace {

// The names of a bundle's entries, opened with `password`.
std::set<std::string> zip_entries(const std::filesystem::path& zip, const std::string& password) {
  auto files = bundle::read_encrypted_zip(zip, Secret(password));
  INFO(zip.string());
  REQUIRE(files.ok());
  std::set<std::string> names;
  for (const auto& f : *files) names.insert(f.name);
  return names;
}

// The files under DATA/bundles, where the server writes the archives.
std::size_t bundle_files_in(const std::filesystem::path& data) {
  std::error_code ec;
  if (!std::filesystem::exists(data / "bundles", ec)) return 0;
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(data / "bundles")) {
    (void)entry;
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("POST /v1/bundles packages devices with their held keys, and its link serves the zip") {
  Served s(true);
  register_with_csr(s, "dev-1");
  auto c = s.client(s.operator_token);
  auto held = post_json(c, "/v1/devices", json{{"id", "dev-2"}});
  REQUIRE(held->status == 201);
  REQUIRE(s.store()->held_key("dev-2")->has_value());

  auto r = post_json(c, "/v1/bundles", json{{"devices", {"dev-1", "dev-2"}}, {"link_ttl", "1h"}});
  json created = body_of(r);
  REQUIRE(r->status == 201);
  REQUIRE(created["bundles"].size() == 1);
  const json b = created["bundles"][0];
  CHECK(b["devices"] == json::array({"dev-1", "dev-2"}));
  CHECK(b["keys"] == 1);
  REQUIRE(b["password"].is_string());
  const std::string password = b["password"];
  const auto zip = s.data() / "bundles" / (b["id"].get<std::string>() + ".zip");
  REQUIRE(std::filesystem::exists(zip));
  CHECK(sha256_hex(read_file(zip).value()).value() == b["sha256"]);
  auto names = zip_entries(zip, password);
  for (const char* name : {"dev-1/client.crt", "dev-2/client.crt", "dev-2/client.key"})
    CHECK(names.contains(name));
  CHECK_FALSE(names.contains("dev-1/client.key"));  // dev-1 keeps its own
  // Packaged: the server's encrypted copy is gone, and the bundle is recorded.
  CHECK_FALSE(s.store()->held_key("dev-2")->has_value());
  CHECK(s.store()->get_bundle(b["id"].get<std::string>()).ok());
  // The password is in the answer once, never in the log.
  CHECK_FALSE(contains(s.log(), password));

  // The link is the one-time download `bundle link` would have made.
  REQUIRE(b["link"].is_string());
  httplib::Client anyone("127.0.0.1", s.port);
  auto download = anyone.Get(b["link"].get<std::string>().c_str());
  REQUIRE(download);
  CHECK(download->status == 200);
  CHECK(download->body == read_file(zip).value());
  check_error(anyone.Get(b["link"].get<std::string>().c_str()), 410, "gone");

  // A password of the caller's own is used and not echoed; split makes one zip per device.
  const std::string own = "correct-horse-battery-staple-42Q";
  auto split = post_json(c, "/v1/bundles",
                         json{{"devices", {"dev-1", "dev-2"}}, {"split", true}, {"password", own}});
  json two = body_of(split);
  REQUIRE(split->status == 201);
  REQUIRE(two["bundles"].size() == 2);
  for (const auto& one : two["bundles"]) {
    CHECK(one["password"].is_null());
    CHECK(one["link"].is_null());
    CHECK(one["keys"] == 0);  // dev-2's key went into the first bundle and is gone
    CHECK(zip_entries(s.data() / "bundles" / (one["id"].get<std::string>() + ".zip"), own)
              .contains(one["devices"][0].get<std::string>() + "/client.crt"));
  }
  CHECK_FALSE(contains(split->body, own));
}

TEST_CASE("POST /v1/bundles refuses bad input, a reader and no token, and writes nothing then") {
  Served s;  // without a hold passphrase
  register_with_csr(s, "dev-1");
  // A key held under a passphrase this server was not given.
  REQUIRE(
      onboardctl_in(s.data(),
                    {"device", "register", "dev-held", "--hold-key", "--hold-passphrase-env", "P"},
                    {{"P", kHoldPassphrase}})
          .exit_code == 0);
  const json good{{"devices", {"dev-1"}}};
  httplib::Client anonymous("127.0.0.1", s.port);
  check_error(post_json(anonymous, "/v1/bundles", good), 401, "unauthorized");
  auto reader = s.client(s.reader_token);
  check_error(post_json(reader, "/v1/bundles", good), 403, "forbidden");

  auto c = s.client(s.operator_token);
  check_error(post_json(c, "/v1/bundles", json::object()), 400, "invalid_input",
              "give either devices");
  check_error(post_json(c, "/v1/bundles", json{{"devices", "dev-1"}}), 400, "invalid_input",
              "devices must be an array");
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-1"}}, {"batch", "b"}}), 400,
              "invalid_input", "give either devices");
  // No request chooses where the server writes.
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-1"}}, {"out", "/tmp/x.zip"}}), 400,
              "invalid_input", "unknown field 'out'");
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-1"}}, {"broker", "a;b"}}), 400,
              "invalid_input");
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-1"}}, {"link_ttl", "1y"}}), 400,
              "invalid_input", "link_ttl");
  check_error(
      post_json(c, "/v1/bundles", json{{"devices", {"dev-1"}}, {"password", "password1234"}}), 400,
      "invalid_input", "too weak");
  check_error(post_json(c, "/v1/bundles",
                        json{{"devices", {"dev-1"}}, {"password", std::string(2000, 'x')}}),
              400, "invalid_input", "at most 1024 bytes");
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-1", "dev-1"}}}), 400,
              "invalid_input", "named twice");
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-9"}}}), 404, "not_found");
  check_error(post_json(c, "/v1/bundles", json{{"batch", "batch-none"}}), 404, "not_found");
  check_error(post_json(c, "/v1/bundles", json{{"devices", {"dev-1", "dev-held"}}}), 409,
              "conflict", "hold passphrase");
  REQUIRE(c.Patch("/v1/devices/dev-1", json{{"status", "disabled"}}.dump(), "application/json")
              ->status == 200);
  check_error(post_json(c, "/v1/bundles", good), 409, "conflict", "disabled");
  CHECK(bundle_files_in(s.data()) == 0);
  CHECK(s.store()->held_key("dev-held")->has_value());

  // The positive control: the same device, enabled again, is packaged.
  REQUIRE(
      c.Patch("/v1/devices/dev-1", json{{"status", "active"}}.dump(), "application/json")->status ==
      200);
  auto ok = post_json(c, "/v1/bundles", good);
  REQUIRE(ok);
  CHECK(ok->status == 201);
  CHECK(bundle_files_in(s.data()) == 1);
}

TEST_CASE("POST /v1/batches registers rows into a batch that POST /v1/bundles then packages") {
  Served s(true);
  auto c = s.client(s.operator_token);
  auto r = post_json(c, "/v1/batches",
                     json{{"devices",
                           {{{"name", "dev-a"}, {"type", "temp"}, {"csr", device_csr("dev-a")}},
                            {{"name", "Dev B"}, {"id", "dev-b"}, {"location", "roof"}}}}});
  json made = body_of(r);
  REQUIRE(r->status == 201);
  const std::string batch = made["batch"];
  CHECK(batch.starts_with("batch-"));
  CHECK(made["extended"] == false);
  CHECK(made["registered"] == json::array({"dev-a", "dev-b"}));
  CHECK(made["keys_held"] == 1);
  CHECK(made["skipped"] == 0);
  auto store = s.store();
  auto recorded = store->get_batch(batch);
  REQUIRE(recorded.ok());
  REQUIRE(recorded->devices.size() == 2);
  CHECK(recorded->devices[0].line == 1);
  CHECK(store->get_device("dev-b")->name == "Dev B");
  CHECK(store->get_device("dev-b")->location == "roof");
  CHECK(store->held_key("dev-b")->has_value());
  CHECK_FALSE(store->held_key("dev-a")->has_value());

  // The batch is extended; a device registered already is left out when asked.
  auto more = post_json(c, "/v1/batches",
                        json{{"batch", batch},
                             {"skip_existing", true},
                             {"devices", {{{"name", "dev-a"}}, {{"name", "dev-c"}}}}});
  json extended = body_of(more);
  REQUIRE(more->status == 201);
  CHECK(extended["batch"] == batch);
  CHECK(extended["extended"] == true);
  CHECK(extended["registered"] == json::array({"dev-c"}));
  CHECK(extended["skipped"] == 1);

  auto packed = post_json(c, "/v1/bundles", json{{"batch", batch}});
  json bundles = body_of(packed);
  REQUIRE(packed->status == 201);
  REQUIRE(bundles["bundles"].size() == 1);
  CHECK(bundles["bundles"][0]["devices"] == json::array({"dev-a", "dev-b", "dev-c"}));
  CHECK(bundles["bundles"][0]["keys"] == 2);
}

TEST_CASE("POST /v1/batches reports every bad row and registers nothing, and refuses a reader") {
  Served s;  // without a hold passphrase
  const json good{{"devices", {{{"name", "ok-1"}, {"csr", device_csr("ok-1")}}}}};
  httplib::Client anonymous("127.0.0.1", s.port);
  check_error(post_json(anonymous, "/v1/batches", good), 401, "unauthorized");
  auto reader = s.client(s.reader_token);
  check_error(post_json(reader, "/v1/batches", good), 403, "forbidden");

  auto c = s.client(s.operator_token);
  auto bad = post_json(c, "/v1/batches",
                       json{{"devices",
                             {{{"name", "ok-1"}, {"csr", device_csr("ok-1")}},
                              {{"name", "not an id!"}, {"csr", device_csr("x")}, {"id", "y"}},
                              {{"name", "bell\x07"}},
                              {{"name", "ok-1"}, {"csr", device_csr("ok-1")}}}}});
  check_error(bad, 400, "invalid_input", "3 problem(s)");
  json problems = body_of(bad)["problems"];
  REQUIRE(problems.size() == 3);
  CHECK(contains(problems[0], "devices[1]: the CSR's CN is 'x'"));
  CHECK(problems[1].get<std::string>().starts_with("devices[2]: name"));
  CHECK(contains(problems[2], "devices[3]: device ok-1 appears twice"));
  CHECK(s.store()->get_device("ok-1").error().code == Errc::not_found);

  check_error(post_json(c, "/v1/batches", json{{"devices", json::array()}}), 400, "invalid_input");
  // The server reads no file a client names.
  check_error(post_json(c, "/v1/batches",
                        json{{"devices", {{{"name", "a"}, {"csr_path", "/etc/passwd"}}}}}),
              400, "invalid_input", "unknown field 'csr_path'");
  check_error(post_json(c, "/v1/batches", json{{"batch", "../x"}, {"devices", {{{"name", "a"}}}}}),
              400, "invalid_input", "batch:");
  check_error(post_json(c, "/v1/batches", json{{"days", 0}, {"devices", {{{"name", "a"}}}}}), 400,
              "invalid_input", "days");
  // A row without a CSR needs a key the server holds, which this one cannot.
  check_error(post_json(c, "/v1/batches", json{{"devices", {{{"name", "a"}}}}}), 409,
              "cannot_hold_keys");
  CHECK(s.store()->get_device("a").error().code == Errc::not_found);

  // The positive control: the good row alone is registered.
  auto ok = post_json(c, "/v1/batches", good);
  REQUIRE(ok);
  CHECK(ok->status == 201);
  CHECK(s.store()->get_device("ok-1").ok());
}
