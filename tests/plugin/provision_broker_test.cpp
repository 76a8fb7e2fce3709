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

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
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

  void start_signer() {
    signer_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{ONBOARDCTL_PATH, "--data-dir", data().string(), "serve",
                                 "--listen", "127.0.0.1:0", "--provision-token-file",
                                 token_file().string()},
        dir() / "serve.log");
    const std::string line = signer_->read_line();
    INFO(line);
    REQUIRE(line.starts_with("serving on http://127.0.0.1:"));
    signer_url_ = line.substr(std::string("serving on ").size());
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

  const std::string& signer_url() const { return signer_url_; }

  json claim_json(const std::string& name) {
    auto r = ctl({"claim", "show", name, "--json"});
    must(r);
    return json::parse(r.out);
  }

 private:
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
  std::ofstream(site.dir() / "body") << R"({"csr":"x"})";
  // The HTTP status, and the X-Provision-Result header when there is one.
  auto post = [&](const std::string& bearer, const std::string& path) {
    std::vector<std::string> args{"/usr/bin/curl",
                                  "-s",
                                  "-o",
                                  "/dev/null",
                                  "-D",
                                  "-",
                                  "-w",
                                  "status=%{http_code}",
                                  "-X",
                                  "POST",
                                  "-H",
                                  "Content-Type: application/octet-stream",
                                  "--data-binary",
                                  "@" + (site.dir() / "body").string()};
    if (!bearer.empty()) args.insert(args.end(), {"-H", "Authorization: Bearer " + bearer});
    args.push_back(site.signer_url() + path);
    return run(args).out;
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
