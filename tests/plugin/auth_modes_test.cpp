// Broker configurations around the plugin's connect check, on real brokers with real clients:
// listeners that make Mosquitto skip the check (use_identity_as_username, use_subject_as_username)
// and a second listener for username/password clients (plugin_opt_clients_without_certificate).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "tests/plugin/fleet.h"

using namespace onboard::test;
using namespace std::chrono_literals;

namespace {

// Username/password clients for the plain listener: a password_file (hashed by mosquitto_passwd,
// so no password is on a command line) and an acl_file giving each user its topics.
//  - backend: reads every device's topics, owns backend/#;
//  - dev-a: a password user that happens to carry a device's name; owns dashboard/dev-a/# only.
void write_password_clients(const Fleet& fleet, BrokerOptions& options) {
  const auto passwords = fleet.dir() / "passwd";
  const auto acl = fleet.dir() / "acl";
  std::ofstream(passwords) << "backend:backend-pw\ndev-a:dev-a-pw\n";
  auto r = run({"/usr/bin/mosquitto_passwd", "-U", passwords.string()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  std::ofstream(acl) << "user backend\n"
                        "topic readwrite backend/#\n"
                        "topic read devices/#\n"
                        "user dev-a\n"
                        "topic readwrite dashboard/dev-a/#\n";
  // The broker reads both after dropping to user mosquitto.
  REQUIRE(::chmod(passwords.c_str(), 0644) == 0);
  REQUIRE(::chmod(acl.c_str(), 0644) == 0);
  options.extra_lines.push_back("password_file " + passwords.string());
  options.extra_lines.push_back("acl_file " + acl.string());
  options.plain_listener = true;
}

const PasswordLogin kBackend{"backend", "backend-pw"};

// True when `client` receives exactly `payload` next.
bool receives(MqttClient& client, const std::string& payload) {
  auto m = client.next_message();
  return m && m->payload == payload;
}

// Under a listener that skips BASIC_AUTH, and an init check that cannot see it: every certificate
// client gets in (Mosquitto does not ask the plugin), and the plugin must deny and disconnect it.
void unaccepted_clients_are_denied_and_disconnected(bool subject) {
  Fleet fleet;
  auto valid = fleet.add_device("dev-a");
  auto revoked = fleet.add_device("dev-r");
  fleet.must(fleet.ctl({"device", "revoke", "dev-r", "--reason", "keyCompromise"}));
  auto ghost = fleet.unregistered("ghost");

  auto options = fleet.broker_options({"clients_without_certificate defer"});
  (subject ? options.use_subject_as_username : options.use_identity_as_username) = true;
  options.config_on_stdin = true;  // the init check cannot read a pipe again
  write_password_clients(fleet, options);
  auto broker = fleet.start(options);
  CHECK(broker->log().find("could not check the broker configuration") != std::string::npos);

  // An observer that reads every device topic, with a positive control: it does receive.
  auto observer = connected("observer", kBackend, broker->plain_port());
  REQUIRE(observer->subscribe("devices/#") == 1);
  REQUIRE(observer->subscribe("backend/#") == 1);
  REQUIRE(observer->publish("backend/probe", "before"));
  REQUIRE(receives(*observer, "before"));

  struct Case {
    const char* what;
    std::string client_id;
    Credentials credentials;
    std::string topic;
  };
  for (const auto& c : {Case{"a revoked certificate", "dev-r", revoked, "devices/dev-r/state"},
                        Case{"an unregistered certificate", "ghost", ghost, "devices/ghost/state"},
                        Case{"a client id that is not the certificate's", "impostor", valid,
                             "devices/dev-a/state"}}) {
    INFO(c.what);
    MqttClient publisher(c.client_id, c.credentials);
    REQUIRE(publisher.connect(broker->port()) == 0);  // Mosquitto never asked the plugin
    for (int i = 0; i < 5; ++i) publisher.publish(c.topic, "should not arrive", 0);
    CHECK(publisher.wait_disconnected(3s));
    CHECK_FALSE(observer->next_message(300ms));

    MqttClient subscriber(c.client_id, c.credentials);
    REQUIRE(subscriber.connect(broker->port()) == 0);
    CHECK(subscriber.subscribe(c.topic) == kRefused);
    CHECK(subscriber.wait_disconnected(3s));
  }
  CHECK(broker->log().find("use_identity_as_username or use_subject_as_username true") !=
        std::string::npos);
  // One line per connection, however many checks it failed: six refused connections, six lines.
  std::size_t lines = 0;
  const std::string log = broker->log();
  for (auto at = log.find("did not accept it"); at != std::string::npos;
       at = log.find("did not accept it", at + 1))
    ++lines;
  INFO(log);
  CHECK(lines == 6);

  // The broker and the observer are fine afterwards.
  REQUIRE(observer->publish("backend/probe", "after"));
  CHECK(receives(*observer, "after"));
}

}  // namespace

TEST_CASE("the broker refuses to start when a listener makes Mosquitto skip the connect check") {
  Fleet fleet;
  fleet.add_device("dev-a");
  SECTION("use_identity_as_username true") {
    auto options = fleet.broker_options();
    options.use_identity_as_username = true;
    Broker broker(fleet.dir().path(), options);
    CHECK_FALSE(broker.started());
    CHECK(broker.wait_exit() != 0);
    CHECK(broker.log().find("onboard: cannot start: use_identity_as_username is true in") !=
          std::string::npos);
  }
  SECTION("use_subject_as_username true") {
    auto options = fleet.broker_options();
    options.use_subject_as_username = true;
    Broker broker(fleet.dir().path(), options);
    CHECK_FALSE(broker.started());
    CHECK(broker.wait_exit() != 0);
    CHECK(broker.log().find("onboard: cannot start: use_subject_as_username is true in") !=
          std::string::npos);
  }
  SECTION("both false: it starts and a device works") {
    auto broker = fleet.start(fleet.broker_options());
    auto a = connected("dev-a", fleet.credentials("dev-a"), broker->port());
    REQUIRE(a->subscribe("devices/dev-a/#") == 1);
    REQUIRE(a->publish("devices/dev-a/temp", "20"));
    CHECK(receives(*a, "20"));
  }
}

TEST_CASE("use_identity_as_username true unseen at init: unaccepted clients are denied and cut") {
  unaccepted_clients_are_denied_and_disconnected(false);
}

TEST_CASE("use_subject_as_username true unseen at init: unaccepted clients are denied and cut") {
  unaccepted_clients_are_denied_and_disconnected(true);
}

TEST_CASE("with both settings false the same clients are refused at connect and a device works") {
  Fleet fleet;
  auto valid = fleet.add_device("dev-a");
  auto revoked = fleet.add_device("dev-r");
  fleet.must(fleet.ctl({"device", "revoke", "dev-r", "--reason", "keyCompromise"}));
  auto ghost = fleet.unregistered("ghost");
  auto options = fleet.broker_options();
  options.config_on_stdin = true;  // the same route as above, so only the setting differs
  auto broker = fleet.start(options);

  auto a = connected("dev-a", valid, broker->port());
  REQUIRE(a->subscribe("devices/dev-a/#") == 1);
  REQUIRE(a->publish("devices/dev-a/temp", "21"));
  CHECK(receives(*a, "21"));
  CHECK(MqttClient("dev-r", revoked).connect(broker->port()) == kNotAuthorized);
  CHECK(MqttClient("ghost", ghost).connect(broker->port()) == kNotAuthorized);
  CHECK(MqttClient("impostor", valid).connect(broker->port()) == kNotAuthorized);
  CHECK(broker->log().find("did not accept it") == std::string::npos);
}

TEST_CASE("an accepted device's will and offline session work after its socket closed") {
  Fleet fleet;
  auto a_creds = fleet.add_device("dev-a");
  auto b_creds = fleet.add_device("dev-b");
  fleet.must(fleet.ctl({"acl", "grant", "--device", "dev-b", "--access", "subscribe|read",
                        "--topic", "devices/dev-a/status"}));
  fleet.must(fleet.ctl({"acl", "grant", "--device", "dev-b", "--access", "publish", "--topic",
                        "devices/dev-a/inbox"}));
  auto broker = fleet.start(fleet.broker_options());
  auto b = connected("dev-b", b_creds, broker->port());
  REQUIRE(b->subscribe("devices/dev-a/status") == 1);

  SECTION("the will is published when the connection is lost") {
    MqttClient a("dev-a", a_creds);
    a.set_will("devices/dev-a/status", "gone");
    REQUIRE(a.connect(broker->port()) == 0);
    REQUIRE(a.publish("devices/dev-a/status", "here"));
    REQUIRE(receives(*b, "here"));
    a.drop_connection();
    CHECK(receives(*b, "gone"));
  }
  SECTION("messages queued for the offline session are delivered at the reconnect") {
    {
      MqttClient a("dev-a", a_creds, 4, /*clean_session=*/false);
      REQUIRE(a.connect(broker->port()) == 0);
      REQUIRE(a.subscribe("devices/dev-a/inbox") == 1);
    }  // a clean DISCONNECT; the session stays
    REQUIRE(b->publish("devices/dev-a/inbox", "while away"));
    MqttClient again("dev-a", a_creds, 4, /*clean_session=*/false);
    REQUIRE(again.connect(broker->port()) == 0);
    CHECK(receives(again, "while away"));
  }
}

TEST_CASE("a SIGHUP keeps connected devices and password clients and offline sessions working") {
  Fleet fleet;
  auto a_creds = fleet.add_device("dev-a");
  auto b_creds = fleet.add_device("dev-b");
  fleet.must(fleet.ctl({"acl", "grant", "--device", "dev-b", "--access", "publish", "--topic",
                        "devices/dev-a/inbox"}));
  auto options = fleet.broker_options({"clients_without_certificate defer"});
  write_password_clients(fleet, options);
  auto broker = fleet.start(options);
  {
    MqttClient a("dev-a", a_creds, 4, /*clean_session=*/false);
    REQUIRE(a.connect(broker->port()) == 0);
    REQUIRE(a.subscribe("devices/dev-a/inbox") == 1);
  }  // dev-a is away; its session stays
  auto b = connected("dev-b", b_creds, broker->port());
  REQUIRE(b->subscribe("devices/dev-b/#") == 1);
  auto backend = connected("backend-1", kBackend, broker->plain_port());
  REQUIRE(backend->subscribe("devices/#") == 1);

  // Mosquitto re-runs BASIC_AUTH for every session, the offline one included (no certificate).
  broker->hangup();
  REQUIRE(broker->wait_for_log("Reloading config."));
  std::this_thread::sleep_for(200ms);

  REQUIRE(b->publish("devices/dev-b/temp", "26"));
  CHECK(receives(*b, "26"));
  CHECK(receives(*backend, "26"));
  REQUIRE(b->publish("devices/dev-a/inbox", "after the reload"));
  CHECK(receives(*backend, "after the reload"));
  MqttClient again("dev-a", a_creds, 4, /*clean_session=*/false);
  REQUIRE(again.connect(broker->port()) == 0);
  CHECK(receives(again, "after the reload"));
}

TEST_CASE("clients without a certificate can be left to password_file and acl_file") {
  Fleet fleet;
  auto a_creds = fleet.add_device("dev-a");
  auto revoked = fleet.add_device("dev-r");
  fleet.must(fleet.ctl({"device", "revoke", "dev-r", "--reason", "keyCompromise"}));
  auto ghost = fleet.unregistered("ghost");
  auto options = fleet.broker_options({"clients_without_certificate defer"});
  write_password_clients(fleet, options);
  auto broker = fleet.start(options);

  auto device = connected("dev-a", a_creds, broker->port());
  REQUIRE(device->subscribe("devices/dev-a/#") == 1);
  auto backend = connected("backend-1", kBackend, broker->plain_port());
  REQUIRE(backend->subscribe("devices/#") == 1);
  REQUIRE(backend->subscribe("backend/#") == 1);

  SECTION("a password client gets exactly its acl_file rights") {
    REQUIRE(device->publish("devices/dev-a/temp", "22"));
    CHECK(receives(*backend, "22"));  // read devices/#
    CHECK(receives(*device, "22"));
    REQUIRE(backend->publish("backend/jobs", "job"));
    CHECK(receives(*backend, "job"));                      // readwrite backend/#
    backend->publish("devices/dev-a/cmd", "not allowed");  // read only
    CHECK_FALSE(device->next_message(500ms));
  }
  SECTION("a wrong password is refused") {
    CHECK(
        MqttClient("backend-2", PasswordLogin{"backend", "wrong"}).connect(broker->plain_port()) ==
        kNotAuthorized);
    CHECK(MqttClient("nobody", PasswordLogin{"nobody", "x"}).connect(broker->plain_port()) ==
          kNotAuthorized);
  }
  SECTION("a password user named like a device gets none of the device's rights") {
    auto named = connected("dashboard-a", PasswordLogin{"dev-a", "dev-a-pw"}, broker->plain_port());
    REQUIRE(named->subscribe("dashboard/dev-a/#") == 1);
    REQUIRE(named->publish("dashboard/dev-a/view", "own"));
    REQUIRE(receives(*named, "own"));  // its own acl_file rights work
    // The device's registry rule (readwrite devices/%d/#) would allow both of these.
    named->subscribe("devices/dev-a/#");  // acl_file does not check subscriptions in 2.0
    named->publish("devices/dev-a/cmd", "take over");
    CHECK_FALSE(device->next_message(500ms));
    REQUIRE(device->publish("devices/dev-a/temp", "23"));
    CHECK(receives(*backend, "23"));  // delivered to those allowed...
    CHECK(receives(*device, "23"));
    CHECK_FALSE(named->next_message(500ms));  // ...and not to the password user
  }
  SECTION("a client without a certificate cannot take a device's client id") {
    MqttClient taker("dev-a", PasswordLogin{"backend", "backend-pw"});
    CHECK(taker.connect(broker->plain_port()) == kNotAuthorized);
    CHECK(broker->wait_for_log("its client id is a device id"));
    CHECK(device->connected());
    REQUIRE(device->publish("devices/dev-a/temp", "24"));
    CHECK(receives(*device, "24"));
  }
  SECTION("certificate clients are still decided by the registry, never deferred") {
    // Each also sends a login the password file accepts: deferred, it would get in.
    for (auto& [id, creds] :
         {std::pair{"dev-r", revoked}, std::pair{"ghost", ghost}, std::pair{"impostor", a_creds}}) {
      INFO(id);
      MqttClient client(id, creds);
      client.set_login(kBackend);
      CHECK(client.connect(broker->port()) == kNotAuthorized);
    }
    CHECK(broker->wait_for_log("certificate revoked"));
    CHECK(broker->wait_for_log("certificate not in the registry"));
    CHECK(broker->wait_for_log("client id is not the device id"));
    // The same login without a certificate, on the plain listener, is accepted.
    CHECK(MqttClient("backend-2", kBackend).connect(broker->plain_port()) == 0);
  }
}

TEST_CASE("by default a client without a certificate is refused even with the right password") {
  Fleet fleet;
  auto a_creds = fleet.add_device("dev-a");
  auto options = fleet.broker_options();
  write_password_clients(fleet, options);
  auto broker = fleet.start(options);

  CHECK(MqttClient("backend-1", kBackend).connect(broker->plain_port()) == kNotAuthorized);
  CHECK(broker->wait_for_log("no client certificate"));
  auto device = connected("dev-a", a_creds, broker->port());
  REQUIRE(device->subscribe("devices/dev-a/#") == 1);
  REQUIRE(device->publish("devices/dev-a/temp", "25"));
  CHECK(receives(*device, "25"));
}
