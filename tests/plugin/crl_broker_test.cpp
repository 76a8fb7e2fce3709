// A broker configured as mosquitto.conf.example says, left running for weeks (its wall clock moved
// ahead with libfaketime), with and without the optional TLS-layer CRL. Real mosquitto, real
// plugin, real MQTT clients over mTLS, certificates and revocations from the real onboardctl.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/plugin/fleet.h"
#include "tests/support/broker.h"
#include "tests/support/mqtt_client.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard::test;
using namespace std::chrono_literals;

namespace {

constexpr int kNoConnack = -1;  // the TLS handshake failed

enum class CrlMode { none, tls_layer };

// A data directory from onboardctl, a broker certificate, devices, and a clock file that moves the
// broker's (and onboardctl's, when asked) wall clock.
class Site : public Fleet {
 public:
  explicit Site(const std::vector<std::string>& init_options = {}) : Fleet({}, init_options) {
    set_clock(0);
  }

  std::filesystem::path crl() const { return data() / "crl.pem"; }

  // Moves the faked wall clock to `days` ahead of the real one.
  void set_clock(int days) {
    std::ofstream(dir() / "clock") << (days >= 0 ? "+" : "") << days << "d\n";
  }

  // onboardctl, at the real time or on the moved clock.
  RunResult ctl(std::vector<std::string> args, bool moved_clock = false) const {
    std::map<std::string, std::string> env;
    if (moved_clock) {
      for (const auto& line : faketime_environment(dir() / "clock")) {
        const auto eq = line.find('=');
        env[line.substr(0, eq)] = line.substr(eq + 1);
      }
    }
    return Fleet::ctl(std::move(args), env);
  }

  // mosquitto.conf.example with this site's paths and a loopback port; in tls_layer mode with its
  // commented CRL lines switched on, as its comments tell an operator to.
  std::string example_config(CrlMode mode) const {
    std::ifstream in(std::string(ONBOARD_SOURCE_DIR) + "/mosquitto.conf.example");
    REQUIRE(in);
    std::ostringstream out;
    std::string line;
    while (std::getline(in, line)) {
      for (const char* crl_line : {"#crlfile ", "#plugin_opt_crl_file ", "#plugin_opt_crl_cafile "})
        if (mode == CrlMode::tls_layer && line.rfind(crl_line, 0) == 0) line.erase(0, 1);
      for (const auto& [from, to] :
           {std::pair<std::string, std::string>{"/var/lib/mosquitto-onboard", data().string()},
            {"/etc/mosquitto/certs", data().string()}}) {
        for (auto at = line.find(from); at != std::string::npos; at = line.find(from))
          line.replace(at, from.size(), to);
      }
      if (line.rfind("listener 8883", 0) == 0) line = "listener {port} 127.0.0.1";
      if (line.rfind("plugin /", 0) == 0) line = std::string("plugin ") + PLUGIN_PATH;
      out << line << "\n";
    }
    out << "log_dest stderr\nlog_type all\n";
    return out.str();
  }

  std::unique_ptr<Broker> start(CrlMode mode) {
    BrokerOptions options;
    options.config_text = example_config(mode);
    options.faketime_file = dir() / "clock";
    options.preload = BROKER_PRELOAD;
    return Fleet::start(options);
  }
};

// The broker reads the clock file at every clock call; a moment for the file to be complete.
void let_the_clock_move() { std::this_thread::sleep_for(100ms); }

int connect(const std::string& id, const Credentials& creds, const Broker& broker) {
  MqttClient client(id, creds);
  return client.connect(broker.port(), 3s);
}

// Retries until the revoked device's TLS handshake fails (the CRL reload takes a poll and a tick).
bool eventually_refused_by_tls(const std::string& id, const Credentials& creds,
                               const Broker& broker) {
  for (int i = 0; i < 30; ++i) {
    if (connect(id, creds, broker) == kNoConnack) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

}  // namespace

TEST_CASE("a broker set up as the example says still admits valid devices after 8 and 40 days") {
  Site site;
  auto valid = site.add_device("dev-ok");
  auto revoked = site.add_device("dev-gone");
  site.must(site.ctl({"device", "revoke", "dev-gone"}));
  auto broker = site.start(CrlMode::none);
  CHECK(connect("dev-ok", valid, *broker) == 0);

  for (int days : {8, 40}) {
    INFO("clock moved " << days << " days ahead; broker log:\n" << broker->log());
    site.set_clock(days);
    let_the_clock_move();
    CHECK(connect("dev-ok", valid, *broker) == 0);
    // Refused by the plugin at CONNECT, after the TLS handshake: the default mode's documented
    // cost.
    CHECK(connect("dev-gone", revoked, *broker) == kNotAuthorized);
  }
}

TEST_CASE(
    "with the TLS-layer CRL a revocation through onboardctl fails the device's TLS handshake "
    "without a manual SIGHUP") {
  Site site;
  auto valid = site.add_device("dev-ok");
  auto doomed = site.add_device("dev-doomed");
  auto broker = site.start(CrlMode::tls_layer);
  REQUIRE(broker->wait_for_log("watching CRL"));
  CHECK(connect("dev-doomed", doomed, *broker) == 0);

  site.must(site.ctl({"device", "revoke", "dev-doomed"}));
  const auto revoked_at = std::chrono::steady_clock::now();
  INFO(broker->log());
  CHECK(eventually_refused_by_tls("dev-doomed", doomed, *broker));
  WARN("revoke to TLS refusal: " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - revoked_at)
                                        .count()
                                 << " ms (the last handshake attempt included)");
  CHECK(broker->log().find("changed and checked: reloading the broker") != std::string::npos);
  CHECK(connect("dev-ok", valid, *broker) == 0);
  // The plugin raised that SIGHUP itself: no full registry read for it.
  CHECK(broker->log().find("reload: reading the registry in full") == std::string::npos);
}

TEST_CASE(
    "with the TLS-layer CRL and the refresh running a broker admits valid devices after 8 and 40 "
    "days and refuses revoked ones") {
  Site site;
  auto valid = site.add_device("dev-ok");
  auto revoked = site.add_device("dev-gone");
  site.must(site.ctl({"device", "revoke", "dev-gone"}));
  auto broker = site.start(CrlMode::tls_layer);
  CHECK(connect("dev-ok", valid, *broker) == 0);
  CHECK(connect("dev-gone", revoked, *broker) == kNoConnack);

  for (int days : {8, 40}) {
    INFO("clock moved " << days << " days ahead; broker log:\n" << broker->log());
    site.set_clock(days);
    let_the_clock_move();
    if (days == 8) {
      // Nothing re-issued the CRL yet: the broker holds an expired one, and the plugin says so.
      CHECK(connect("dev-ok", valid, *broker) == kNoConnack);
      CHECK(broker->wait_for_log("expired at"));
    }
    // What the timer (or onboardctl serve) does, on the same clock.
    auto refresh = site.ctl({"crl", "--if-expiring-within", "3d"}, true);
    INFO(refresh.out << refresh.err);
    REQUIRE(refresh.exit_code == 0);
    CHECK(refresh.out.find("written to") != std::string::npos);
    bool admitted = false;
    for (int i = 0; i < 30 && !admitted; ++i) {
      admitted = connect("dev-ok", valid, *broker) == 0;
      if (!admitted) std::this_thread::sleep_for(100ms);
    }
    CHECK(admitted);
    CHECK(connect("dev-gone", revoked, *broker) == kNoConnack);
  }
}

TEST_CASE("a corrupt CRL file is not handed to the broker") {
  Site site;
  auto valid = site.add_device("dev-ok");
  auto revoked = site.add_device("dev-gone");
  site.must(site.ctl({"device", "revoke", "dev-gone"}));
  auto broker = site.start(CrlMode::tls_layer);
  CHECK(connect("dev-gone", revoked, *broker) == kNoConnack);

  {
    const auto temp = site.crl().string() + ".tmp";
    std::ofstream(temp) << "-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n";
    std::filesystem::rename(temp, site.crl());
  }
  REQUIRE(broker->wait_for_log("not handed to the broker"));
  std::this_thread::sleep_for(500ms);  // a reload, had there been one, would have happened by now
  INFO(broker->log());
  CHECK(broker->log().find("reloading the broker") == std::string::npos);
  CHECK(connect("dev-ok", valid, *broker) == 0);
  // Still refused by TLS: the broker kept the good CRL (a corrupt one would have let it through).
  CHECK(connect("dev-gone", revoked, *broker) == kNoConnack);
}

TEST_CASE("an operator's SIGHUP makes the plugin read the registry in full") {
  Site site;
  auto valid = site.add_device("dev-ok");
  auto broker = site.start(CrlMode::none);
  CHECK(connect("dev-ok", valid, *broker) == 0);
  broker->hangup();
  CHECK(broker->wait_for_log("reload: reading the registry in full"));
  CHECK(broker->wait_for_log("read in full (reload requested): 1 devices"));
  CHECK(connect("dev-ok", valid, *broker) == 0);
}

TEST_CASE(
    "after an issuing CA rotation devices of the old and the new issuer connect through the "
    "TLS-layer CRL and an old one revoked afterwards is refused") {
  Site site({"--intermediate"});
  auto old_device = site.add_device("dev-old");
  auto broker = site.start(CrlMode::tls_layer);
  REQUIRE(broker->wait_for_log("watching CRL"));
  CHECK(connect("dev-old", old_device, *broker) == 0);

  site.must(site.ctl({"ca", "rotate", "--key-alg", "p256"}));
  auto new_device = site.add_device("dev-new");
  // The plugin reads plugin_opt_crl_cafile once, at start, and Mosquitto its cafile at start and
  // on SIGHUP: the documented step after a rotation is a restart.
  broker.reset();
  broker = site.start(CrlMode::tls_layer);
  REQUIRE(broker->wait_for_log("watching CRL"));
  INFO(broker->log());
  // Both issuers' devices pass OpenSSL's CRL check: crl.pem holds a CRL for each issuing CA.
  CHECK(connect("dev-old", old_device, *broker) == 0);
  CHECK(connect("dev-new", new_device, *broker) == 0);

  {
    // The control: a crlfile with the new issuer's CRL alone (the first of crl.pem) fails the
    // old issuer's devices in the handshake, unrevoked as they are.
    auto crls = onboard::test::run({"/usr/bin/openssl", "crl", "-in", site.crl().string()});
    REQUIRE(crls.exit_code == 0);
    std::ofstream(site.dir() / "first-crl.pem") << crls.out;
    std::string config = site.example_config(CrlMode::none);
    config += "crlfile " + (site.dir() / "first-crl.pem").string() + "\n";
    BrokerOptions options;
    options.config_text = config;
    options.preload = BROKER_PRELOAD;
    auto partial = site.Fleet::start(options);
    CHECK(connect("dev-new", new_device, *partial) == 0);
    CHECK(connect("dev-old", old_device, *partial) == kNoConnack);
  }

  site.must(site.ctl({"device", "revoke", "dev-old"}));
  // Refused in the handshake: the old issuer's CRL, which it still signs, lists it.
  CHECK(eventually_refused_by_tls("dev-old", old_device, *broker));
  CHECK(connect("dev-new", new_device, *broker) == 0);
}
