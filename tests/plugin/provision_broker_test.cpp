// Devices enrolling themselves over MQTT, end to end: a real broker with the plugin, the real
// `onboardctl serve` as the signer, claims from the real `claim create`, keys and CSRs made by
// `openssl req` as a device would, and real MQTT clients. The device asks on
// $provision/<id>/csr, is answered on .../accepted or .../rejected without subscribing, and
// reconnects with its new certificate as an ordinary device.
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/plugin/fleet.h"
#include "tests/support/broker.h"
#include "tests/support/mqtt_client.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr int kV5 = 5;
constexpr int kV5NoSubscribers = 0x10;  // PUBACK: accepted, nobody subscribes to requests
constexpr int kV5NotAuthorized = 0x87;

// A fleet with the signer: `onboardctl serve` with the provisioning secret the plugin sends.
class SignerSite : public Fleet {
 public:
  SignerSite() {
    std::ofstream(token_file()) << "3f9c2a7d51e84b06a1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6\n";
    ::chmod(token_file().c_str(), 0600);
    if (as_root()) {
      // The plugin reads it after the broker dropped its privileges.
      REQUIRE(::chown(token_file().c_str(), static_cast<uid_t>(-1),
                      ::getgrnam("mosquitto")->gr_gid) == 0);
      REQUIRE(::chmod(token_file().c_str(), 0640) == 0);
    }
  }
  std::filesystem::path token_file() const { return dir() / "provision.token"; }

  void start_signer(const std::vector<std::string>& options = {}) {
    std::vector<std::string> args{"--provision-token-file", token_file().string()};
    args.insert(args.end(), options.begin(), options.end());
    launch_signer(args, "http");
  }
  // The signer over HTTPS (the broker's certificate serves as its own), taking the plugins'
  // client certificates `clients` (client_credential) and no secret.
  void start_tls_signer(const std::vector<std::string>& clients) {
    std::vector<std::string> args{"--tls-cert",  (data() / "server.crt").string(),
                                  "--tls-key",   (data() / "server.key").string(),
                                  "--client-ca", (data() / "ca" / "chain.pem").string()};
    for (const auto& client : clients)
      args.insert(args.end(), {"--provision-client-cert", cert(client).string()});
    launch_signer(args, "https");
  }
  // A client certificate for the plugin, as an operator makes one (`ca issue`: recorded, cannot
  // connect to the broker), its key readable by the broker's user.
  void client_credential(const std::string& name) {
    unregistered(name);
    if (as_root()) {
      REQUIRE(::chown(key(name).c_str(), static_cast<uid_t>(-1), ::getgrnam("mosquitto")->gr_gid) ==
              0);
      REQUIRE(::chmod(key(name).c_str(), 0640) == 0);
    }
  }
  std::unique_ptr<Broker> start_broker_with_certificate(const std::string& client) {
    return start_with({"provision_url " + signer_url_,
                       "provision_cafile " + (data() / "ca" / "chain.pem").string(),
                       "provision_certfile " + cert(client).string(),
                       "provision_keyfile " + key(client).string()});
  }
  std::unique_ptr<Broker> start_broker(std::vector<std::string> options = {}) {
    if (signer_url_.empty()) start_signer();
    options.push_back("provision_url " + signer_url_);
    options.push_back("provision_token_file " + token_file().string());
    return start_with(std::move(options));
  }
  // A broker whose signer is a port nothing listens on.
  std::unique_ptr<Broker> start_broker_without_signer() {
    return start_broker_with_signer_at(free_port(), 500);
  }
  std::unique_ptr<Broker> start_broker_with_signer_at(int port, int timeout_ms) {
    return start_with({"provision_url http://127.0.0.1:" + std::to_string(port),
                       "provision_token_file " + token_file().string(),
                       "provision_timeout_ms " + std::to_string(timeout_ms)});
  }

  // What a device does on first boot: its own key (kept in key(id)) and a CSR with CN = `cn`.
  std::string make_csr(const std::string& id, const std::string& cn,
                       const std::string& newkey = "ec") {
    std::vector<std::string> args{
        "/usr/bin/openssl", "req",     "-new",           "-nodes", "-subj",
        "/CN=" + cn,        "-keyout", key(id).string(), "-out",   (dir() / "req.pem").string()};
    if (newkey == "ec") {
      args.insert(args.end(), {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"});
    } else {
      args.insert(args.end(), {"-newkey", newkey});
    }
    must(run(args));
    std::ifstream in(dir() / "req.pem");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  static std::string request(const std::string& csr) { return json{{"csr", csr}}.dump(); }
  // A renewal request: the CSR and its proof, made by the key of `old` (the credentials the
  // device connects with) as docs/provisioning.md says a device makes it, with openssl.
  std::string renewal(const std::string& csr, const std::string& old) {
    return json{{"csr", csr}, {"proof", proof(csr, old)}}.dump();
  }
  std::string proof(const std::string& csr, const std::string& old) {
    const auto pem = dir() / "renew.csr", der = dir() / "renew.der", sig = dir() / "renew.sig";
    std::ofstream(pem) << csr;
    must(run(
        {"/usr/bin/openssl", "req", "-in", pem.string(), "-outform", "DER", "-out", der.string()}));
    must(run({"/usr/bin/openssl", "dgst", "-sha256", "-sign", key(old).string(), "-out",
              sig.string(), der.string()}));
    auto encoded = run({"/usr/bin/openssl", "base64", "-A", "-in", sig.string()});
    must(encoded);
    return encoded.out;
  }

  const std::string& signer_url() const { return signer_url_; }

  // A POST of {"csr":"x"} to the signer's `path` with curl and `options` (credentials): the reply's
  // headers and "status=<HTTP status>".
  std::string post_to_signer(const std::string& path, const std::vector<std::string>& options) {
    std::ofstream(dir() / "body") << R"({"csr":"x"})";
    std::vector<std::string> args{"/usr/bin/curl",
                                  "-s",
                                  "-o",
                                  "/dev/null",
                                  "-D",
                                  "-",
                                  "-w",
                                  "status=%{http_code}",
                                  "--cacert",
                                  (data() / "ca" / "chain.pem").string(),
                                  "-X",
                                  "POST",
                                  "-H",
                                  "Content-Type: application/octet-stream",
                                  "--data-binary",
                                  "@" + (dir() / "body").string()};
    args.insert(args.end(), options.begin(), options.end());
    args.push_back(signer_url_ + path);
    return run(args).out;
  }

  // The actors of the audit events of `action`, oldest first.
  std::vector<std::string> actors_of(const std::string& action) {
    auto r = ctl({"audit", "list", "--json"});
    must(r);
    std::vector<std::string> out;
    for (const auto& event : json::parse(r.out))
      if (event["action"] == action) out.push_back(event["actor"]);
    return out;
  }
  // The SHA-256 fingerprint of the certificate in `file`, lower-case hex, as openssl computes it.
  static std::string sha256_of(const std::filesystem::path& file) {
    auto r = run(
        {"/usr/bin/openssl", "x509", "-in", file.string(), "-noout", "-fingerprint", "-sha256"});
    must(r);
    std::string hex;
    for (char c : r.out.substr(r.out.find('=') + 1))
      if (std::isxdigit(static_cast<unsigned char>(c))) hex += static_cast<char>(std::tolower(c));
    REQUIRE(hex.size() == 64);
    return hex;
  }

  json claim_json(const std::string& name) {
    auto r = ctl({"claim", "show", name, "--json"});
    must(r);
    return json::parse(r.out);
  }

 private:
  void launch_signer(const std::vector<std::string>& options, const std::string& scheme) {
    std::vector<std::string> args{ONBOARDCTL_PATH, "--data-dir", data().string(), "serve",
                                  "--listen", "127.0.0.1:0",
                                  // Renewal tests renew certificates just issued.
                                  "--renewal-min-age", "0"};
    args.insert(args.end(), options.begin(), options.end());
    signer_ = std::make_unique<ChildProcess>(args, dir() / "serve.log");
    const std::string line = signer_->read_line();
    INFO(line);
    REQUIRE(line.starts_with("serving on " + scheme + "://127.0.0.1:"));
    signer_url_ = line.substr(std::string("serving on ").size());
  }

  std::unique_ptr<ChildProcess> signer_;
  std::string signer_url_;
};

// The answer to a request, published to the client whether or not it subscribed.
struct Answer {
  std::string result;  // accepted | rejected
  json body;
};
std::optional<Answer> answer_of(MqttClient& client, const std::string& id,
                                std::chrono::milliseconds timeout = 10s) {
  auto message = client.next_message(timeout);
  if (!message) return std::nullopt;
  const std::string prefix = "$provision/" + id + "/";
  REQUIRE(message->topic.starts_with(prefix));
  return Answer{message->topic.substr(prefix.size()), json::parse(message->payload)};
}

Answer ask(MqttClient& client, const std::string& id, const std::string& payload) {
  REQUIRE(client.publish_reason("$provision/" + id + "/csr", payload) == kV5NoSubscribers);
  auto answer = answer_of(client, id);
  REQUIRE(answer.has_value());
  return *answer;
}

void require_rejected(const Answer& answer, const std::string& code, bool retryable = false) {
  INFO(answer.body.dump());
  REQUIRE(answer.result == "rejected");
  CHECK(answer.body["code"] == code);
  CHECK(answer.body["retryable"] == retryable);
  CHECK(answer.body["message"].is_string());
}

}  // namespace

TEST_CASE("a device enrolls itself over MQTT and reconnects as an ordinary device") {
  SignerSite site;
  const auto claim = site.add_claim(
      "factory-1", {"--quota", "5", "--expires", "1h", "--id-pattern", "sensor-[0-9]{4}"});
  auto broker = site.start_broker();
  INFO(broker->log());

  MqttClient enrolling("sensor-0001", claim, kV5);
  REQUIRE(enrolling.connect(broker->port(), 3s) == 0);
  const std::string request = SignerSite::request(site.make_csr("sensor-0001", "sensor-0001"));
  const Answer accepted = ask(enrolling, "sensor-0001", request);
  INFO(accepted.body.dump());
  REQUIRE(accepted.result == "accepted");
  CHECK(accepted.body["device_id"] == "sensor-0001");
  const std::string certificate = accepted.body["certificate"];
  CHECK(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
  CHECK(accepted.body["ca_chain"].get<std::string>().find("BEGIN CERTIFICATE") !=
        std::string::npos);
  CHECK(site.claim_json("factory-1")["quota_used"] == 1);
  // Audited under the credential the plugin used: the provisioning secret.
  CHECK(site.actors_of("device.enroll") == std::vector<std::string>{"provision:secret"});

  // The answer was lost: the same CSR again is the same certificate, and no second unit.
  const Answer again = ask(enrolling, "sensor-0001", request);
  REQUIRE(again.result == "accepted");
  CHECK(again.body["certificate"] == certificate);
  CHECK(site.claim_json("factory-1")["quota_used"] == 1);
  // Another key for the id it now has: taken.
  require_rejected(
      ask(enrolling, "sensor-0001", SignerSite::request(site.make_csr("other-key", "sensor-0001"))),
      "id_taken");

  // The device now connects with its own certificate and key, and uses its own topics.
  std::ofstream(site.cert("sensor-0001")) << certificate;
  MqttClient device("sensor-0001", site.credentials("sensor-0001"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  REQUIRE(device.subscribe("devices/sensor-0001/#") == 1);
  CHECK(device.publish_reason("devices/sensor-0001/telemetry", "21.5") == 0);
  auto message = device.next_message();
  REQUIRE(message.has_value());
  CHECK(message->payload == "21.5");
  // And it is no claim client any more: another device's topics stay closed.
  CHECK(device.publish_reason("devices/sensor-0002/telemetry", "x") == kV5NotAuthorized);
  // The claim can no longer take the enrolled id.
  MqttClient taken("sensor-0001", claim, kV5);
  CHECK(taken.connect(broker->port(), 3s) == kV5NotAuthorized);
}

TEST_CASE("each bad request gets a rejected answer with its code and the client may ask again") {
  SignerSite site;
  const auto claim = site.add_claim("line-a", {"--quota", "5", "--expires", "1h"});
  auto broker = site.start_broker();
  INFO(broker->log());
  MqttClient client("unit-1", claim, kV5);
  REQUIRE(client.connect(broker->port(), 3s) == 0);

  require_rejected(ask(client, "unit-1", "{not json"), "malformed_request");
  require_rejected(ask(client, "unit-1", R"({"certificate":"x"})"), "malformed_request");
  require_rejected(ask(client, "unit-1", R"({"csr":"not a CSR"})"), "invalid_csr");
  require_rejected(ask(client, "unit-1", SignerSite::request(site.make_csr("x", "unit-2"))),
                   "cn_mismatch");
  require_rejected(
      ask(client, "unit-1", SignerSite::request(site.make_csr("weak", "unit-1", "rsa:1024"))),
      "weak_key");
  require_rejected(ask(client, "unit-1", std::string(20000, ' ')), "payload_too_large");
  CHECK(site.claim_json("line-a")["quota_used"] == 0);

  // Still connected, and a good request on the same connection is answered.
  const Answer accepted =
      ask(client, "unit-1", SignerSite::request(site.make_csr("unit-1", "unit-1")));
  CHECK(accepted.result == "accepted");
  CHECK(site.claim_json("line-a")["quota_used"] == 1);
}

TEST_CASE("a signer that cannot be reached is a retryable rejection and devices carry on") {
  SignerSite site;
  const auto device_creds = site.add_device("dev-1");
  const auto claim = site.add_claim("line-a", {"--quota", "5", "--expires", "1h"});
  auto broker = site.start_broker_without_signer();
  INFO(broker->log());
  MqttClient client("unit-1", claim, kV5);
  REQUIRE(client.connect(broker->port(), 3s) == 0);
  require_rejected(ask(client, "unit-1", SignerSite::request(site.make_csr("unit-1", "unit-1"))),
                   "signer_unavailable", true);
  CHECK(broker->wait_for_log("the signer cannot be reached"));

  MqttClient device("dev-1", device_creds, kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  REQUIRE(device.subscribe("devices/dev-1/#") == 1);
  CHECK(device.publish_reason("devices/dev-1/t", "ok") == 0);
  auto message = device.next_message();
  REQUIRE(message.has_value());
  CHECK(message->payload == "ok");
  CHECK(client.connected());
}

// A signer that takes the connection and never answers: a listening socket nobody accepts on.
class SilentSigner {
 public:
  SilentSigner() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t size = sizeof address;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size) == 0);
    port_ = ntohs(address.sin_port);
  }
  ~SilentSigner() { ::close(fd_); }
  SilentSigner(const SilentSigner&) = delete;
  SilentSigner& operator=(const SilentSigner&) = delete;
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

TEST_CASE("a claim client may not retain a request and has one request at a time with the signer") {
  SignerSite site;
  const auto claim = site.add_claim("line-b", {"--quota", "5", "--expires", "1h"});
  SilentSigner signer;
  auto broker = site.start_broker_with_signer_at(signer.port(), 1000);
  INFO(broker->log());
  MqttClient client("unit-1", claim, kV5);
  REQUIRE(client.connect(broker->port(), 3s) == 0);
  const std::string request = SignerSite::request(site.make_csr("unit-1", "unit-1"));
  const std::string topic = "$provision/unit-1/csr";

  // Retained, the broker would keep it for every id a leaked claim connects with: refused. The
  // same request not retained is taken (the positive control), and is now with the signer.
  CHECK(client.publish_reason(topic, request, true) == kV5NotAuthorized);
  REQUIRE(client.publish_reason(topic, request) == kV5NoSubscribers);

  // A second request while the first waits for the signer: answered at once, rate_limited.
  REQUIRE(client.publish_reason(topic, request) == kV5NoSubscribers);
  auto second = answer_of(client, "unit-1");
  REQUIRE(second.has_value());
  require_rejected(*second, "rate_limited", true);
  // The first one's answer, once the signer timed out (twice: one retry).
  auto first = answer_of(client, "unit-1");
  REQUIRE(first.has_value());
  require_rejected(*first, "signer_unavailable", true);
  // Answered, it no longer holds the client back: the next request goes to the signer again.
  REQUIRE(client.publish_reason(topic, request) == kV5NoSubscribers);
  auto third = answer_of(client, "unit-1");
  REQUIRE(third.has_value());
  require_rejected(*third, "signer_unavailable", true);
}

TEST_CASE("with quota 5 and 15 devices asking at once exactly 5 get a certificate") {
  SignerSite site;
  const auto claim = site.add_claim("burst", {"--quota", "5", "--expires", "1h"});
  auto broker = site.start_broker();
  INFO(broker->log());
  constexpr int kDevices = 15;
  std::vector<std::unique_ptr<MqttClient>> clients;
  std::vector<std::string> requests;
  for (int i = 0; i < kDevices; ++i) {
    const std::string id = "unit-" + std::to_string(i);
    clients.push_back(std::make_unique<MqttClient>(id, claim, kV5));
    REQUIRE(clients.back()->connect(broker->port(), 3s) == 0);
    requests.push_back(SignerSite::request(site.make_csr(id, id)));
  }
  std::atomic<int> accepted{0}, used_up{0}, denied{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kDevices; ++i) {
    threads.emplace_back([&, i] {
      const std::string id = "unit-" + std::to_string(i);
      const int puback = clients[i]->publish_reason("$provision/" + id + "/csr", requests[i]);
      if (puback == kV5NotAuthorized) {
        ++denied;  // the broker already knew the quota was spent
        return;
      }
      auto message = clients[i]->next_message(10s);
      if (!message) {
        ++other;
      } else if (message->topic.ends_with("/accepted")) {
        ++accepted;
      } else if (json::parse(message->payload)["code"] == "claim_used_up") {
        ++used_up;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(accepted == 5);
  CHECK(used_up + denied == kDevices - 5);
  CHECK(other == 0);
  CHECK(site.claim_json("burst")["quota_used"] == 5);
  auto listed = site.ctl({"device", "list", "--json"});
  Fleet::must(listed);
  CHECK(json::parse(listed.out)["devices"].size() == 5);
}

TEST_CASE(
    "only the provisioning secret may hand requests to the signer and it opens nothing else") {
  SignerSite site;
  site.add_claim("line-a", {"--quota", "5", "--expires", "1h"});
  site.start_signer();
  auto token = site.ctl({"token", "create", "--name", "ops", "--role", "operator"});
  Fleet::must(token);
  std::string operator_token = token.out;
  while (!operator_token.empty() && operator_token.back() == '\n') operator_token.pop_back();
  std::ifstream in(site.token_file());
  std::string secret;
  std::getline(in, secret);
  // The HTTP status, and the X-Provision-Result header when there is one.
  auto post = [&](const std::string& bearer, const std::string& path) {
    if (bearer.empty()) return site.post_to_signer(path, {});
    return site.post_to_signer(path, {"-H", "Authorization: Bearer " + bearer});
  };
  const std::string route = "/v1/provision/line-a/unit-1";
  CHECK(post("", route).find("status=401") != std::string::npos);
  CHECK(post(operator_token, route).find("status=401") != std::string::npos);
  std::string wrong = secret;
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  CHECK(post(wrong, route).find("status=401") != std::string::npos);
  // The secret itself: handled (the request is no CSR), and nothing recorded.
  const std::string handled = post(secret, route);
  CHECK(handled.find("status=200") != std::string::npos);
  CHECK(handled.find("X-Provision-Result: rejected") != std::string::npos);
  CHECK(handled.find("X-Provision-Code: invalid_csr") != std::string::npos);
  CHECK(site.claim_json("line-a")["quota_used"] == 0);
  // ... and it is no API token: an operator route refuses it, the operator token's own works.
  CHECK(post(secret, "/v1/devices").find("status=401") != std::string::npos);
  CHECK(post(operator_token, "/v1/devices").find("status=401") == std::string::npos);
}

// ---- renewal --------------------------------------------------------------------------------

namespace {

Answer renew(MqttClient& client, const std::string& id, const std::string& payload) {
  REQUIRE(client.publish_reason("$provision/" + id + "/renew", payload) == kV5NoSubscribers);
  auto answer = answer_of(client, id);
  REQUIRE(answer.has_value());
  return *answer;
}

// The device's certificates as the registry has them, oldest first.
json certificates_of(SignerSite& site, const std::string& id) {
  auto r = site.ctl({"cert", "list", id, "--json"});
  Fleet::must(r);
  return json::parse(r.out);
}

// Waits (at most `timeout`) until the registry has revoked the certificate `serial`.
json wait_revoked(SignerSite& site, const std::string& id, const std::string& serial,
                  std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (const auto& c : certificates_of(site, id)) {
      if (c["serial"] == serial && c["status"] == "revoked") return c;
    }
    if (std::chrono::steady_clock::now() > until) return json();
    std::this_thread::sleep_for(50ms);
  }
}

}  // namespace

TEST_CASE(
    "a device renews its certificate over MQTT once and the old one goes when the new one "
    "connects") {
  SignerSite site;
  site.add_device("meter-1");
  auto broker = site.start_broker();
  INFO(broker->log());
  const std::string old_serial = certificates_of(site, "meter-1")[0]["serial"];

  std::string certificate, new_serial;
  {
    MqttClient old_device("meter-1", site.credentials("meter-1"), kV5);
    REQUIRE(old_device.connect(broker->port(), 3s) == 0);
    const std::string request = site.renewal(site.make_csr("meter-1-next", "meter-1"), "meter-1");
    const Answer accepted = renew(old_device, "meter-1", request);
    INFO(accepted.body.dump());
    REQUIRE(accepted.result == "accepted");
    CHECK(accepted.body["device_id"] == "meter-1");
    certificate = accepted.body["certificate"];
    CHECK(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    CHECK(accepted.body["ca_chain"].get<std::string>().find("BEGIN CERTIFICATE") !=
          std::string::npos);

    // The answer was lost: the same CSR again is the same certificate, and no second one.
    const Answer again = renew(old_device, "meter-1", request);
    REQUIRE(again.result == "accepted");
    CHECK(again.body["certificate"] == certificate);
    auto certificates = certificates_of(site, "meter-1");
    REQUIRE(certificates.size() == 2);
    CHECK(certificates[0]["status"] == "active");  // the old one, until the new one connects
    CHECK(certificates[1]["status"] == "active");
    CHECK(certificates[1]["pem"] == certificate);
    new_serial = certificates[1]["serial"];
  }
  {
    // The old certificate still connects while the new one has not (the positive control).
    MqttClient old_again("meter-1", site.credentials("meter-1"), kV5);
    REQUIRE(old_again.connect(broker->port(), 3s) == 0);
  }

  // The new certificate connects and uses the device's own topics.
  std::ofstream(site.cert("meter-1-next")) << certificate;
  MqttClient new_device("meter-1", site.credentials("meter-1-next"), kV5);
  REQUIRE(new_device.connect(broker->port(), 3s) == 0);
  // Its first connect supersedes the old certificate in the registry.
  const json revoked = wait_revoked(site, "meter-1", old_serial);
  INFO(certificates_of(site, "meter-1").dump());
  REQUIRE(revoked.is_object());
  CHECK(revoked["revocation_reason"] == "superseded");
  // The revocation reaches the broker, which keeps the connection made with the new certificate.
  REQUIRE(broker->wait_for_log("stays connected"));
  CHECK(new_device.connected());
  REQUIRE(new_device.subscribe("devices/meter-1/#") == 1);
  CHECK(new_device.publish_reason("devices/meter-1/telemetry", "7") == 0);
  auto message = new_device.next_message();
  REQUIRE(message.has_value());
  CHECK(message->payload == "7");
  // And the old certificate is refused from now on.
  MqttClient refused("meter-1", site.credentials("meter-1"), kV5);
  CHECK(refused.connect(broker->port(), 3s) == kV5NotAuthorized);
  const auto after = certificates_of(site, "meter-1");
  REQUIRE(after.size() == 2);
  CHECK(after[1]["serial"] == new_serial);
  CHECK(after[1]["status"] == "active");
}

TEST_CASE("a device may renew only itself and a claim client may not renew") {
  SignerSite site;
  site.add_device("meter-1");
  site.add_device("meter-2");
  const auto claim = site.add_claim("line-r", {"--quota", "5", "--expires", "1h"});
  auto broker = site.start_broker();
  INFO(broker->log());
  MqttClient device("meter-1", site.credentials("meter-1"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  const std::string for_two = site.renewal(site.make_csr("two-next", "meter-2"), "meter-1");

  // Another device's renewal topic is closed to it, whatever the CSR says.
  CHECK(device.publish_reason("$provision/meter-2/renew", for_two) == kV5NotAuthorized);
  CHECK(device.subscribe("$provision/meter-2/+") >= 0x80);
  // A request for another id on its own topic: the CN must be its own id.
  require_rejected(renew(device, "meter-1", for_two), "cn_mismatch");
  // Nothing else under $provision/ either: no enrolment request, no retained renewal.
  CHECK(device.publish_reason("$provision/meter-1/csr", for_two) == kV5NotAuthorized);
  const std::string own = site.renewal(site.make_csr("one-next", "meter-1"), "meter-1");
  CHECK(device.publish_reason("$provision/meter-1/renew", own, true) == kV5NotAuthorized);
  CHECK(certificates_of(site, "meter-2").size() == 1);
  CHECK(certificates_of(site, "meter-1").size() == 1);
  // Its own renewal is taken (the positive control), and may be subscribed to.
  REQUIRE(device.subscribe("$provision/meter-1/+") == 1);
  // PUBACK success (a subscription matches), yet its own request is not sent back to it.
  REQUIRE(device.publish_reason("$provision/meter-1/renew", own) == 0);
  auto answer = answer_of(device, "meter-1");
  REQUIRE(answer.has_value());
  CHECK(answer->result == "accepted");
  CHECK_FALSE(device.next_message(300ms).has_value());
  CHECK(certificates_of(site, "meter-1").size() == 2);

  // A claim client may not renew, itself or a device.
  MqttClient claim_client("unit-9", claim, kV5);
  REQUIRE(claim_client.connect(broker->port(), 3s) == 0);
  CHECK(claim_client.publish_reason("$provision/unit-9/renew", own) == kV5NotAuthorized);
  CHECK(claim_client.publish_reason("$provision/meter-2/renew", for_two) == kV5NotAuthorized);
  CHECK(certificates_of(site, "meter-2").size() == 1);
  CHECK(site.claim_json("line-r")["quota_used"] == 0);
}

TEST_CASE("a bad renewal request is refused with its code and a good one then taken") {
  SignerSite site;
  site.add_device("meter-1");
  auto broker = site.start_broker();
  INFO(broker->log());
  MqttClient device("meter-1", site.credentials("meter-1"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  require_rejected(renew(device, "meter-1", "{not json"), "malformed_request");
  require_rejected(renew(device, "meter-1", R"({"csr":"not a CSR"})"), "invalid_csr");
  require_rejected(
      renew(device, "meter-1", SignerSite::request(site.make_csr("weak", "meter-1", "rsa:1024"))),
      "weak_key");
  // metadata is the claim's business: a renewal carries the CSR alone.
  const std::string csr = site.make_csr("next", "meter-1");
  require_rejected(
      renew(device, "meter-1",
            json{{"csr", csr}, {"proof", site.proof(csr, "meter-1")}, {"metadata", json::object()}}
                .dump()),
      "malformed_request");
  CHECK(certificates_of(site, "meter-1").size() == 1);
  // The same CSR with its proof is taken (the positive control).
  CHECK(renew(device, "meter-1", site.renewal(csr, "meter-1")).result == "accepted");
  CHECK(certificates_of(site, "meter-1").size() == 2);
}

TEST_CASE(
    "an old certificate whose successor never connects is revoked when the grace period ends") {
  SignerSite site;
  site.add_device("meter-1");
  site.start_signer({"--renewal-grace", "3s"});
  auto broker = site.start_broker();
  INFO(broker->log());
  const std::string old_serial = certificates_of(site, "meter-1")[0]["serial"];
  MqttClient device("meter-1", site.credentials("meter-1"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  REQUIRE(
      renew(device, "meter-1", site.renewal(site.make_csr("next", "meter-1"), "meter-1")).result ==
      "accepted");
  // Within the grace period the old certificate is still the device's (the positive control).
  CHECK(certificates_of(site, "meter-1")[0]["status"] == "active");
  CHECK(device.connected());

  const json revoked = wait_revoked(site, "meter-1", old_serial);
  INFO(certificates_of(site, "meter-1").dump());
  REQUIRE(revoked.is_object());
  CHECK(revoked["revocation_reason"] == "superseded");
  // The broker disconnects the connection made with it and refuses it from then on.
  CHECK(device.wait_disconnected(5s));
  MqttClient again("meter-1", site.credentials("meter-1"), kV5);
  CHECK(again.connect(broker->port(), 3s) == kV5NotAuthorized);
  CHECK(certificates_of(site, "meter-1")[1]["status"] == "active");
}

TEST_CASE(
    "a device that renewed twice with different keys keeps the first certificate it installs") {
  SignerSite site;
  site.add_device("meter-1");
  site.start_signer({"--renewal-grace", "3s"});
  auto broker = site.start_broker();
  INFO(broker->log());
  const std::string a_serial = certificates_of(site, "meter-1")[0]["serial"];
  std::string b_pem;
  {
    MqttClient old_device("meter-1", site.credentials("meter-1"), kV5);
    REQUIRE(old_device.connect(broker->port(), 3s) == 0);
    const Answer b = renew(old_device, "meter-1",
                           site.renewal(site.make_csr("meter-1-b", "meter-1"), "meter-1"));
    REQUIRE(b.result == "accepted");
    b_pem = b.body["certificate"];
    // B's answer is "lost": the device renews again with another key.
    const Answer c = renew(old_device, "meter-1",
                           site.renewal(site.make_csr("meter-1-c", "meter-1"), "meter-1"));
    REQUIRE(c.result == "accepted");
    CHECK(c.body["certificate"] != b_pem);
  }
  const auto certificates = certificates_of(site, "meter-1");
  REQUIRE(certificates.size() == 3);
  const std::string b_serial = certificates[1]["serial"];
  const std::string c_serial = certificates[2]["serial"];
  // No connect within the grace period: A goes, B and C stay (the device may hold either).
  REQUIRE(wait_revoked(site, "meter-1", a_serial).is_object());

  // The device installs B after all (a late answer) and connects: C goes, B stays connected.
  std::ofstream(site.cert("meter-1-b")) << b_pem;
  MqttClient device("meter-1", site.credentials("meter-1-b"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  const json revoked = wait_revoked(site, "meter-1", c_serial);
  INFO(certificates_of(site, "meter-1").dump());
  REQUIRE(revoked.is_object());
  CHECK(revoked["revocation_reason"] == "superseded");
  REQUIRE(broker->wait_for_log("stays connected"));
  // More than a grace period later (the sweep looks every second) B is still the device's.
  std::this_thread::sleep_for(4s);
  CHECK(device.connected());
  const auto after = certificates_of(site, "meter-1");
  REQUIRE(after.size() == 3);
  CHECK(after[1]["serial"] == b_serial);
  CHECK(after[1]["status"] == "active");
  MqttClient again("meter-1", site.credentials("meter-1-b"), kV5);
  CHECK(again.connect(broker->port(), 3s) == 0);
}

TEST_CASE("a renewal whose proof is not made with the device's own key is refused") {
  SignerSite site;
  site.add_device("meter-1");
  site.add_device("meter-2");
  auto broker = site.start_broker();
  INFO(broker->log());
  MqttClient device("meter-1", site.credentials("meter-1"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  const std::string csr = site.make_csr("meter-1-next", "meter-1");
  const std::string other_csr = site.make_csr("meter-1-other", "meter-1");

  // A proof made with ANOTHER device's key (meter-2's), over this very CSR: refused.
  const Answer by_other = renew(device, "meter-1", site.renewal(csr, "meter-2"));
  require_rejected(by_other, "proof_invalid");
  // A proof by the device's own key, but over a different CSR: refused.
  require_rejected(renew(device, "meter-1",
                         json{{"csr", csr}, {"proof", site.proof(other_csr, "meter-1")}}.dump()),
                   "proof_invalid");
  // No proof at all: refused.
  require_rejected(renew(device, "meter-1", SignerSite::request(csr)), "proof_invalid");
  CHECK(certificates_of(site, "meter-1").size() == 1);
  CHECK(device.connected());

  // The same request with the proof made by its own key is renewed (the positive control), and
  // its retry, with the same proof, is the same certificate.
  const std::string request = site.renewal(csr, "meter-1");
  const Answer accepted = renew(device, "meter-1", request);
  INFO(accepted.body.dump());
  REQUIRE(accepted.result == "accepted");
  const Answer again = renew(device, "meter-1", request);
  REQUIRE(again.result == "accepted");
  CHECK(again.body["certificate"] == accepted.body["certificate"]);
  CHECK(certificates_of(site, "meter-1").size() == 2);
  CHECK(certificates_of(site, "meter-2").size() == 1);
}

// ---- a lost enrolment answer ----------------------------------------------------------------

namespace {

// Waits (at most `timeout`) until the registry has device `id`.
bool wait_enrolled(SignerSite& site, const std::string& id,
                   std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (site.ctl({"device", "show", id, "--json"}).exit_code == 0) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Client `id` of `claim` sends `request`, which the broker takes (PUBACK), and drops its
// connection before the answer comes. Returns once the registry has the device and the broker
// let the answer go, which it does once its snapshot has the device (it holds an acceptance
// until then): before that, its claim gate would still take the id for a free one.
void enrol_and_lose_the_answer(SignerSite& site, Broker& broker, const Credentials& claim,
                               const std::string& id, const std::string& request) {
  {
    MqttClient enrolling(id, claim, kV5);
    REQUIRE(enrolling.connect(broker.port(), 3s) == 0);
    REQUIRE(enrolling.publish_reason("$provision/" + id + "/csr", request) == kV5NoSubscribers);
    enrolling.drop_connection();
  }
  REQUIRE(wait_enrolled(site, id));
  REQUIRE(
      broker.wait_for_log("dropped the answer to the enrolment request of client '" + id + "'"));
}

}  // namespace

TEST_CASE("a device that lost its enrolment answer asks again with its claim and gets it") {
  SignerSite site;
  // Quota 1: the enrolment whose answer is lost spends the last unit.
  const auto claim = site.add_claim("line-l", {"--quota", "1", "--expires", "1h", "--type",
                                               "sensor", "--id-pattern", "unit-[0-9]"});
  const auto other_claim = site.add_claim("line-m", {"--quota", "5", "--expires", "1h", "--type",
                                                     "meter", "--id-pattern", "unit-[0-9]"});
  auto broker = site.start_broker();
  INFO(broker->log());
  const std::string request = SignerSite::request(site.make_csr("unit-1", "unit-1"));
  enrol_and_lose_the_answer(site, *broker, claim, "unit-1", request);
  const json enrolled = certificates_of(site, "unit-1");
  REQUIRE(enrolled.size() == 1);
  CHECK(site.claim_json("line-l")["quota_used"] == 1);

  // Asking again needs a clean start: the claim client must never take over the device's session.
  {
    MqttClient keeping("unit-1", claim, kV5, false);
    CHECK(keeping.connect(broker->port(), 3s) == kV5NotAuthorized);
  }
  // Another claim (of another type) may not connect with the enrolled id.
  {
    MqttClient other("unit-1", other_claim, kV5);
    CHECK(other.connect(broker->port(), 3s) == kV5NotAuthorized);
    // ... though it may enrol a free id (the positive control for that claim).
    MqttClient free_id("unit-2", other_claim, kV5);
    CHECK(free_id.connect(broker->port(), 3s) == 0);
  }
  {
    // The same claim, clean start, the same id: accepted although the claim is used up, and the
    // same CSR gets the certificate issued then; no second unit is spent.
    MqttClient again("unit-1", claim, kV5);
    REQUIRE(again.connect(broker->port(), 3s) == 0);
    CHECK(broker->wait_for_log("to ask again for the certificate of device 'unit-1'"));
    Answer answer = ask(again, "unit-1", request);
    for (int i = 0; i < 50 && answer.result == "rejected" && answer.body["code"] == "rate_limited";
         ++i) {
      std::this_thread::sleep_for(100ms);  // the lost answer still with the plugin
      answer = ask(again, "unit-1", request);
    }
    INFO(answer.body.dump());
    REQUIRE(answer.result == "accepted");
    CHECK(answer.body["certificate"] == enrolled[0]["pem"]);
    CHECK(site.claim_json("line-l")["quota_used"] == 1);
    CHECK(certificates_of(site, "unit-1").size() == 1);
    // Another key for the id: taken.
    require_rejected(
        ask(again, "unit-1", SignerSite::request(site.make_csr("unit-1-other", "unit-1"))),
        "id_taken");
    CHECK(certificates_of(site, "unit-1").size() == 1);
    std::ofstream(site.cert("unit-1")) << answer.body["certificate"].get<std::string>();
  }

  // The device connects with its own certificate: a claim connect with its id is refused, and
  // the device stays connected and keeps working.
  MqttClient device("unit-1", site.credentials("unit-1"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  {
    MqttClient intruder("unit-1", claim, kV5);
    CHECK(intruder.connect(broker->port(), 3s) == kV5NotAuthorized);
  }
  CHECK(broker->wait_for_log("a client with it is connected"));
  std::this_thread::sleep_for(200ms);
  CHECK(device.connected());
  REQUIRE(device.subscribe("devices/unit-1/#") == 1);
  CHECK(device.publish_reason("devices/unit-1/telemetry", "ok") == 0);
  auto message = device.next_message();
  REQUIRE(message.has_value());
  CHECK(message->payload == "ok");

  // Gone again, it had its certificate: the claim may not take its id (nor its session) now.
  device.drop_connection();
  REQUIRE(device.wait_disconnected(3s));
  std::this_thread::sleep_for(300ms);  // the broker sees the connection end
  MqttClient late("unit-1", claim, kV5);
  CHECK(late.connect(broker->port(), 3s) == kV5NotAuthorized);
  CHECK(broker->wait_for_log("which connected with its own certificate"));
}

namespace {

// Waits (at most `timeout`) until the broker's log holds `text` at least `times` times.
bool wait_for_log_count(const Broker& broker, const std::string& text, std::size_t times,
                        std::chrono::milliseconds timeout = 5s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const std::string log = broker.log();
    std::size_t found = 0;
    for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++found;
    if (found >= times) return true;
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(50ms);
  }
}

}  // namespace

TEST_CASE("a device checked again on SIGHUP while its renewal waits sends no second notice") {
  SignerSite site;
  site.add_device("meter-1");
  site.start_signer();
  auto broker = site.start_broker();
  INFO(broker->log());
  {
    MqttClient device("meter-1", site.credentials("meter-1"), kV5);
    REQUIRE(device.connect(broker->port(), 3s) == 0);
    REQUIRE(renew(device, "meter-1", site.renewal(site.make_csr("meter-1-b", "meter-1"), "meter-1"))
                .result == "accepted");
  }
  // The renewal waits for its first connect; the device connects again with its old certificate:
  // one notice to the signer (the positive control).
  const std::string notice = "device 'meter-1' connected while another certificate of it is active";
  {
    MqttClient device("meter-1", site.credentials("meter-1"), kV5);
    REQUIRE(device.connect(broker->port(), 3s) == 0);
    REQUIRE(wait_for_log_count(*broker, notice, 1));

    // Mosquitto checks every connected client again on SIGHUP (as for every changed CRL): the
    // same connection is not a new connect and sends nothing.
    broker->hangup();
    REQUIRE(broker->wait_for_log("Reloading config."));
    std::this_thread::sleep_for(500ms);
    CHECK(device.connected());
    CHECK_FALSE(wait_for_log_count(*broker, notice, 2, 0ms));
  }

  // A new connection with the same certificate is a connect again, and is noted again.
  MqttClient again("meter-1", site.credentials("meter-1"), kV5);
  REQUIRE(again.connect(broker->port(), 3s) == 0);
  CHECK(wait_for_log_count(*broker, notice, 2));
}

TEST_CASE("claim clients stay connected across a SIGHUP and the one asking again gets its answer") {
  SignerSite site;
  // Quota 2: both enrolments below spend it; both clients are then checked again as recoveries.
  const auto claim = site.add_claim("line-h", {"--quota", "2", "--expires", "1h", "--type",
                                               "sensor", "--id-pattern", "unit-[0-9]"});
  auto broker = site.start_broker();
  INFO(broker->log());
  const std::string request = SignerSite::request(site.make_csr("unit-1", "unit-1"));
  enrol_and_lose_the_answer(site, *broker, claim, "unit-1", request);
  // unit-2 enrolls, has its answer, and stays connected: its id is now a registered device's.
  MqttClient enrolled("unit-2", claim, kV5);
  REQUIRE(enrolled.connect(broker->port(), 3s) == 0);
  REQUIRE(ask(enrolled, "unit-2", SignerSite::request(site.make_csr("unit-2", "unit-2"))).result ==
          "accepted");
  CHECK(site.claim_json("line-h")["quota_used"] == 2);
  // unit-1 asks again with its claim.
  MqttClient again("unit-1", claim, kV5);
  REQUIRE(again.connect(broker->port(), 3s) == 0);
  const std::string recovering_1 = "to ask again for the certificate of device 'unit-1'";
  const std::string recovering_2 = "to ask again for the certificate of device 'unit-2'";
  REQUIRE(wait_for_log_count(*broker, recovering_1, 1));

  // Mosquitto checks every connected client again on SIGHUP (as after the plugin's own SIGHUP
  // for a changed CRL): each claim client passes as the client it is, not in its own way.
  broker->hangup();
  REQUIRE(broker->wait_for_log("Reloading config."));
  CHECK(wait_for_log_count(*broker, recovering_1, 2));
  CHECK(wait_for_log_count(*broker, recovering_2, 1));
  std::this_thread::sleep_for(300ms);
  CHECK(again.connected());
  CHECK(enrolled.connected());
  CHECK(broker->log().find("a client with it is connected") == std::string::npos);

  // Another client with unit-1's id is still refused while the one asking is connected (the
  // negative control), and the one asking stays.
  {
    MqttClient intruder("unit-1", claim, kV5);
    CHECK(intruder.connect(broker->port(), 3s) == kV5NotAuthorized);
  }
  CHECK(broker->wait_for_log("a client with it is connected"));
  std::this_thread::sleep_for(200ms);
  CHECK(again.connected());

  // The one asking again gets the certificate issued for its lost answer.
  Answer answer = ask(again, "unit-1", request);
  for (int i = 0; i < 50 && answer.result == "rejected" && answer.body["code"] == "rate_limited";
       ++i) {
    std::this_thread::sleep_for(100ms);  // the lost answer still with the plugin
    answer = ask(again, "unit-1", request);
  }
  INFO(answer.body.dump());
  REQUIRE(answer.result == "accepted");
  CHECK(answer.body["certificate"] == certificates_of(site, "unit-1")[0]["pem"]);
  CHECK(site.claim_json("line-h")["quota_used"] == 2);
}

TEST_CASE(
    "a device's renewal is not held back by a claim's request under its id and gets no answer of "
    "the claim's") {
  SignerSite site;
  const auto claim = site.add_claim("line-d", {"--quota", "5", "--expires", "1h", "--type",
                                               "sensor", "--id-pattern", "unit-[0-9]"});
  // A device of the claim's type registered just now: a claim may ask again for its certificate.
  site.add_device("unit-1", "sensor");
  // A signer that never answers: each request stays with it until the plugin gives up on it.
  SilentSigner signer;
  auto broker = site.start_broker_with_signer_at(signer.port(), 1000);
  INFO(broker->log());
  const std::string request = SignerSite::request(site.make_csr("unit-1-claim", "unit-1"));

  // A claim client under the device's id asks while the device is offline ...
  MqttClient claim_client("unit-1", claim, kV5);
  REQUIRE(claim_client.connect(broker->port(), 3s) == 0);
  REQUIRE(broker->wait_for_log("to ask again for the certificate of device 'unit-1'"));
  REQUIRE(claim_client.publish_reason("$provision/unit-1/csr", request) == kV5NoSubscribers);
  // ... then the device connects (taking the id over) and renews while that request is at the
  // signer.
  MqttClient device("unit-1", site.credentials("unit-1"), kV5);
  REQUIRE(device.connect(broker->port(), 3s) == 0);
  REQUIRE(claim_client.wait_disconnected(3s));
  REQUIRE(device.publish_reason("$provision/unit-1/renew",
                                site.renewal(site.make_csr("unit-1-next", "unit-1"), "unit-1")) ==
          kV5NoSubscribers);

  // The renewal went to the signer (not rate_limited by the claim's request): its answer is the
  // signer's silence, and it is the device's only answer; the claim's answer is dropped.
  auto answer = answer_of(device, "unit-1", 15s);
  REQUIRE(answer.has_value());
  require_rejected(*answer, "signer_unavailable", true);
  CHECK(broker->wait_for_log(
      "dropped the answer to the enrolment request of client 'unit-1' (rejected "
      "signer_unavailable)"));
  CHECK_FALSE(device.next_message(1500ms).has_value());
  CHECK(device.connected());

  // A renewal while its own renewal is with the signer is still rate_limited (the positive
  // control for one request of a kind at a time), and answered to the device.
  REQUIRE(device.publish_reason("$provision/unit-1/renew",
                                site.renewal(site.make_csr("unit-1-next", "unit-1"), "unit-1")) ==
          kV5NoSubscribers);
  REQUIRE(device.publish_reason("$provision/unit-1/renew",
                                site.renewal(site.make_csr("unit-1-next", "unit-1"), "unit-1")) ==
          kV5NoSubscribers);
  auto second = answer_of(device, "unit-1");
  REQUIRE(second.has_value());
  require_rejected(*second, "rate_limited", true);
}

namespace {

// Between the plugin and the real signer: passes every request on, but holds one claim's
// enrolments until released, so that a test knows which requests wait in the plugin's queue.
class HoldingProxy {
 public:
  HoldingProxy(std::string signer_url, std::string held_claim)
      : signer_url_(std::move(signer_url)), held_prefix_("/v1/provision/" + held_claim + "/") {
    server_.Post(".*", [this](const httplib::Request& request, httplib::Response& response) {
      if (request.path.starts_with(held_prefix_)) {
        std::unique_lock lock(mutex_);
        ++held_;
        cv_.notify_all();
        cv_.wait(lock, [this] { return released_; });
      }
      httplib::Client signer(signer_url_);
      signer.set_read_timeout(10, 0);
      httplib::Headers headers;
      for (const auto& [name, value] : request.headers) {
        if (name == "Authorization" || name == "X-Client-Certificate") headers.emplace(name, value);
      }
      auto answer = signer.Post(request.path, headers, request.body,
                                request.get_header_value("Content-Type"));
      if (!answer) {
        response.status = 502;
        return;
      }
      response.status = answer->status;
      for (const auto& [name, value] : answer->headers) {
        if (name.starts_with("X-Provision-")) response.set_header(name, value);
      }
      response.set_content(answer->body, answer->get_header_value("Content-Type"));
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~HoldingProxy() {
    release();
    server_.stop();
    thread_.join();
  }
  HoldingProxy(const HoldingProxy&) = delete;
  HoldingProxy& operator=(const HoldingProxy&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Whether `count` requests of the held claim reached the proxy within 5 s.
  bool wait_held(int count) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 5s, [&] { return held_ >= count; });
  }
  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::string signer_url_;
  std::string held_prefix_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int held_ = 0;
  bool released_ = false;
};

}  // namespace

TEST_CASE(
    "a claim flooding requests fills only its share of the queue and another claim's device is "
    "served") {
  SignerSite site;
  const auto flood = site.add_claim("leaked", {"--quota", "10", "--expires", "1h"});
  const auto other = site.add_claim("line-y", {"--quota", "5", "--expires", "1h"});
  site.start_signer();
  HoldingProxy proxy(site.signer_url(), "leaked");
  // One worker, 4 requests may wait, 2 of them one claim's.
  auto broker = site.start_with({"provision_url " + proxy.url(),
                                 "provision_token_file " + site.token_file().string(),
                                 "provision_workers 1", "provision_queue 4",
                                 "provision_claim_share 2", "provision_timeout_ms 10000"});
  INFO(broker->log());
  std::vector<std::unique_ptr<MqttClient>> xs;
  std::vector<std::string> requests;
  for (int i = 0; i < 5; ++i) {
    const std::string id = "x-" + std::to_string(i);
    xs.push_back(std::make_unique<MqttClient>(id, flood, kV5));
    REQUIRE(xs.back()->connect(broker->port(), 3s) == 0);
    requests.push_back(SignerSite::request(site.make_csr(id, id)));
  }
  MqttClient y("y-0", other, kV5);
  REQUIRE(y.connect(broker->port(), 3s) == 0);
  const std::string y_request = SignerSite::request(site.make_csr("y-0", "y-0"));
  auto publish = [&](MqttClient& client, const std::string& id, const std::string& request) {
    REQUIRE(client.publish_reason("$provision/" + id + "/csr", request) == kV5NoSubscribers);
  };

  // x-0 is at the worker (held at the signer); x-1 and x-2 take the claim's share of the queue.
  publish(*xs[0], "x-0", requests[0]);
  REQUIRE(proxy.wait_held(1));
  publish(*xs[1], "x-1", requests[1]);
  publish(*xs[2], "x-2", requests[2]);
  // The claim's excess is refused at once, retryable, though the queue has room for 2 more.
  for (int i : {3, 4}) {
    publish(*xs[i], "x-" + std::to_string(i), requests[i]);
    auto answer = answer_of(*xs[i], "x-" + std::to_string(i), 5s);
    REQUIRE(answer.has_value());
    require_rejected(*answer, "claim_queue_full", true);
  }
  // The broker log names the flooding claim.
  CHECK(broker->wait_for_log("claim 'leaked' has its share of the provisioning queue waiting"));
  // Another claim's device still gets in (without the share, x-3 and x-4 would have filled the
  // queue and it would be answered signer_unavailable).
  publish(y, "y-0", y_request);
  CHECK_FALSE(y.next_message(300ms).has_value());

  proxy.release();
  auto y_answer = answer_of(y, "y-0", 15s);
  REQUIRE(y_answer.has_value());
  INFO(y_answer->body.dump());
  REQUIRE(y_answer->result == "accepted");
  CHECK(y_answer->body["device_id"] == "y-0");
  CHECK(y_answer->body["certificate"].get<std::string>().starts_with("-----BEGIN CERTIFICATE"));
  // The claim's queued requests are served too, and its refused ones may ask again.
  for (int i : {0, 1, 2}) {
    auto answer = answer_of(*xs[i], "x-" + std::to_string(i), 15s);
    REQUIRE(answer.has_value());
    CHECK(answer->result == "accepted");
  }
  const Answer again = ask(*xs[3], "x-3", requests[3]);
  CHECK(again.result == "accepted");
  CHECK(site.claim_json("leaked")["quota_used"] == 4);
  CHECK(site.claim_json("line-y")["quota_used"] == 1);
}

// ---- the plugin's client certificate as its credential --------------------------------------

TEST_CASE("a broker whose provisioning key is encrypted refuses to start and says so") {
  SignerSite site;
  site.client_credential("broker-signer");
  const auto encrypted = site.dir() / "broker-signer-encrypted.key";
  Fleet::must(run({"/usr/bin/openssl", "pkey", "-in", site.key("broker-signer").string(), "-aes256",
                   "-passout", "pass:a passphrase", "-out", encrypted.string()}));
  if (Fleet::as_root()) {
    REQUIRE(::chown(encrypted.c_str(), static_cast<uid_t>(-1), ::getgrnam("mosquitto")->gr_gid) ==
            0);
    REQUIRE(::chmod(encrypted.c_str(), 0640) == 0);
  }
  auto with_key = [&](const std::filesystem::path& key) {
    return site.broker_options({"provision_url https://127.0.0.1:1",
                                "provision_cafile " + (site.data() / "ca" / "chain.pem").string(),
                                "provision_certfile " + site.cert("broker-signer").string(),
                                "provision_keyfile " + key.string()});
  };
  {
    Broker refused(site.dir().path(), with_key(encrypted));
    INFO(refused.log());
    CHECK_FALSE(refused.started());
    CHECK(refused.log().find(encrypted.string() + " is an encrypted key") != std::string::npos);
    CHECK(refused.log().find("cannot ask for its passphrase") != std::string::npos);
  }
  // Positive control: the same certificate with its key unencrypted starts.
  auto started = site.start(with_key(site.key("broker-signer")));
  CHECK(started->started());
}

TEST_CASE(
    "the plugin enrols devices through the signer with its client certificate and no secret") {
  SignerSite site;
  const auto claim = site.add_claim("line-m", {"--quota", "5", "--expires", "1h"});
  site.client_credential("broker-signer");
  site.client_credential("broker-2-signer");
  site.client_credential("imposter");  // the same CA's, but not one the signer was given
  site.start_tls_signer({"broker-signer", "broker-2-signer"});
  // Each broker with its own certificate: both enrol.
  int enrolled = 0;
  for (const std::string broker_name : {"broker-signer", "broker-2-signer"}) {
    INFO(broker_name);
    auto broker = site.start_broker_with_certificate(broker_name);
    INFO(broker->log());
    const std::string id = "unit-" + std::to_string(++enrolled);
    MqttClient client(id, claim, kV5);
    REQUIRE(client.connect(broker->port(), 3s) == 0);
    const Answer accepted = ask(client, id, SignerSite::request(site.make_csr(id, id)));
    INFO(accepted.body.dump());
    REQUIRE(accepted.result == "accepted");
    CHECK(accepted.body["device_id"] == id);
    CHECK(site.claim_json("line-m")["quota_used"] == enrolled);
  }
  // Each enrolment is audited under the certificate its broker used, named by its fingerprint.
  CHECK(
      site.actors_of("device.enroll") ==
      std::vector<std::string>{
          "provision:broker:" + SignerSite::sha256_of(site.cert("broker-signer")).substr(0, 16),
          "provision:broker:" + SignerSite::sha256_of(site.cert("broker-2-signer")).substr(0, 16)});
  {
    // Another certificate of the same CA: the handshake verifies it, the signer refuses it (401),
    // and the device is told signer_unavailable; nothing is spent.
    auto broker = site.start_broker_with_certificate("imposter");
    INFO(broker->log());
    MqttClient client("unit-9", claim, kV5);
    REQUIRE(client.connect(broker->port(), 3s) == 0);
    require_rejected(ask(client, "unit-9", SignerSite::request(site.make_csr("unit-9", "unit-9"))),
                     "signer_unavailable", true);
    CHECK(broker->wait_for_log("the signer answered HTTP 401"));
    CHECK(site.claim_json("line-m")["quota_used"] == 2);
  }

  // At the route itself: the right certificate is let through (a request that is no CSR is
  // handled and rejected invalid_csr), no certificate, another one, or the right one beside an
  // Authorization header (which then decides: the signer has no secret) are 401.
  auto post = [&](const std::string& client, const std::string& header) {
    std::vector<std::string> options;
    if (!client.empty())
      options.insert(options.end(),
                     {"--cert", site.cert(client).string(), "--key", site.key(client).string()});
    if (!header.empty()) options.insert(options.end(), {"-H", "Authorization: " + header});
    return site.post_to_signer("/v1/provision/line-m/unit-3", options);
  };
  const std::string handled = post("broker-signer", "");
  CHECK(handled.find("status=200") != std::string::npos);
  CHECK(handled.find("X-Provision-Code: invalid_csr") != std::string::npos);
  CHECK(post("", "").find("status=401") != std::string::npos);
  CHECK(post("imposter", "").find("status=401") != std::string::npos);
  CHECK(post("broker-signer", "Bearer 3f9c2a7d51e84b06a1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6")
            .find("status=401") != std::string::npos);
  // Any Authorization header decides alone, a malformed one too: refused beside the right
  // certificate rather than passed over.
  for (const std::string header : {"Basic YnJva2VyOnNpZ25lcg==", "Bearer", "Bearer  ", "Token x"}) {
    INFO(header);
    CHECK(post("broker-signer", header).find("status=401") != std::string::npos);
  }
  // A header line with no value at all is dropped by the HTTP parser: it is no header, and the
  // certificate decides (docs/provisioning.md).
  const std::string empty_header = site.post_to_signer(
      "/v1/provision/line-m/unit-3", {"--cert", site.cert("broker-signer").string(), "--key",
                                      site.key("broker-signer").string(), "-H", "Authorization;"});
  CHECK(empty_header.find("status=200") != std::string::npos);

  // Revoked in the registry (`ca revoke`), the certificate no longer passes, though the handshake
  // (which knows no revocation) still verifies it.
  auto fingerprint = run({"/usr/bin/openssl", "x509", "-in", site.cert("broker-signer").string(),
                          "-noout", "-fingerprint", "-sha256"});
  Fleet::must(fingerprint);
  std::string sha256 = fingerprint.out.substr(fingerprint.out.find('=') + 1);
  while (!sha256.empty() && sha256.back() == '\n') sha256.pop_back();
  Fleet::must(site.ctl({"ca", "revoke", sha256}));
  CHECK(post("broker-signer", "").find("status=401") != std::string::npos);
  // The other broker's certificate still passes (the positive control).
  CHECK(post("broker-2-signer", "").find("status=200") != std::string::npos);
}
