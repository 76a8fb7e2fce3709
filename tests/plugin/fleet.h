// A data directory made by the real onboardctl, a broker certificate, and devices registered on
// demand: what the plugin's integration tests start brokers from.
#pragma once

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bundle/zip.h"
#include "tests/support/broker.h"
#include "tests/support/mqtt_client.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

namespace onboard::test {

class Fleet {
 public:
  // `env` is added to every onboardctl run (e.g. ONBOARD_REGISTRY for a registry elsewhere);
  // `init_options` to `onboardctl init` (e.g. --intermediate).
  explicit Fleet(std::map<std::string, std::string> env = {},
                 const std::vector<std::string>& init_options = {})
      : env_(std::move(env)) {
    // The broker drops to user mosquitto before loading the plugin: it must be able to reach the
    // data directory, as in a real installation.
    std::filesystem::permissions(dir_.path(), std::filesystem::perms(0755));
    std::vector<std::string> init{"init", "--key-alg", "p256"};
    if (!as_root()) init.push_back("--no-group");
    init.insert(init.end(), init_options.begin(), init_options.end());
    must(ctl(init));
    must(ctl({"ca", "issue-server", "--dns", "localhost", "--ip", "127.0.0.1", "--key-alg", "p256",
              "--cert-out", (data() / "server.crt").string(), "--key-out",
              (data() / "server.key").string()}));
    if (as_root()) {
      // The broker reads its key after dropping privileges.
      REQUIRE(::chown((data() / "server.key").c_str(), static_cast<uid_t>(-1),
                      ::getgrnam("mosquitto")->gr_gid) == 0);
      REQUIRE(::chmod((data() / "server.key").c_str(), 0640) == 0);
    }
  }

  static bool as_root() { return ::geteuid() == 0 && ::getgrnam("mosquitto") != nullptr; }

  std::filesystem::path data() const { return dir_ / "data"; }
  std::filesystem::path registry() const { return data() / "registry.db"; }
  const TempDir& dir() const { return dir_; }

  RunResult ctl(std::vector<std::string> args,
                const std::map<std::string, std::string>& env = {}) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data().string()});
    auto all = env_;
    for (const auto& [key, value] : env) all[key] = value;
    return run(args, {}, all);
  }
  static void must(const RunResult& r) {
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
  }

  Credentials add_device(const std::string& id, const std::string& type = "") {
    std::vector<std::string> args{"device",         "register",   id,
                                  "--key-alg",      "p256",       "--key-out",
                                  key(id).string(), "--cert-out", cert(id).string()};
    if (!type.empty()) args.insert(args.end(), {"--type", type});
    must(ctl(args));
    return credentials(id);
  }
  // `onboardctl claim create`, then the certificate and key taken out of its zip.
  Credentials add_claim(const std::string& name, const std::vector<std::string>& options) {
    const auto zip = dir() / (name + ".zip");
    const auto password_file = dir() / (name + ".password");
    std::vector<std::string> args{
        "claim", "create", name, "--out", zip.string(), "--password-out", password_file.string()};
    args.insert(args.end(), options.begin(), options.end());
    must(ctl(args));
    std::ifstream in(password_file);
    std::string password;
    std::getline(in, password);
    auto files = bundle::read_encrypted_zip(zip, Secret(password));
    REQUIRE(files.ok());
    for (const auto& f : *files) {
      if (f.name == "claim.crt") std::ofstream(cert(name)) << f.content.view();
      if (f.name == "claim.key") std::ofstream(key(name)) << f.content.view();
    }
    return credentials(name);
  }
  // Signed by the fleet's CA, but never registered.
  Credentials unregistered(const std::string& id) {
    must(ctl({"ca", "issue", "--device", id, "--key-alg", "p256", "--cert-out", cert(id).string(),
              "--key-out", key(id).string()}));
    return credentials(id);
  }
  Credentials credentials(const std::string& id) const {
    return Credentials{data() / "ca" / "chain.pem", cert(id), key(id)};
  }
  std::filesystem::path cert(const std::string& id) const { return dir_ / (id + ".crt"); }
  std::filesystem::path key(const std::string& id) const { return dir_ / (id + ".key"); }

  BrokerOptions broker_options(std::vector<std::string> plugin_options = {}) const {
    BrokerOptions options;
    options.plugin = PLUGIN_PATH;
    options.registry = registry();
    options.cafile = data() / "ca" / "chain.pem";
    options.certfile = data() / "server.crt";
    options.keyfile = data() / "server.key";
    options.plugin_options = std::move(plugin_options);
    options.preload = BROKER_PRELOAD;
    return options;
  }
  // A broker with the plugin on this fleet's registry and `plugin_options` (`key value` lines).
  std::unique_ptr<Broker> start_with(std::vector<std::string> plugin_options = {}) {
    return start(broker_options(std::move(plugin_options)));
  }
  std::unique_ptr<Broker> start(const BrokerOptions& options) {
    auto broker = std::make_unique<Broker>(dir_.path(), options);
    INFO(broker->log());
    REQUIRE(broker->started());
    return broker;
  }

 private:
  TempDir dir_;
  std::map<std::string, std::string> env_;
};

constexpr int kRefused = 128;      // SUBACK "failure" (MQTT 3.1.1)
constexpr int kNotAuthorized = 5;  // CONNACK (MQTT 3.1.1)

// Registry changes reach the broker within a refresh interval: retry until `f` holds (or 3 s).
template <class F>
bool eventually(F f) {
  for (int i = 0; i < 60; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Connects and waits until the broker has accepted the connection (CONNACK 0).
inline std::unique_ptr<MqttClient> connected(const std::string& id, const Credentials& creds,
                                             int port) {
  auto client = std::make_unique<MqttClient>(id, creds);
  REQUIRE(client->connect(port) == 0);
  return client;
}
inline std::unique_ptr<MqttClient> connected(const std::string& id, const PasswordLogin& login,
                                             int port) {
  auto client = std::make_unique<MqttClient>(id, login);
  REQUIRE(client->connect(port) == 0);
  return client;
}

}  // namespace onboard::test
