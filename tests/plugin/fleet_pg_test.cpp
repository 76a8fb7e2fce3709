// A fleet of brokers on one PostgreSQL registry: every broker decides live from it, a revocation
// disconnects the device from each of them, and none goes down with the database. Real brokers
// with the built plugin, real mTLS clients with certificates onboardctl issued, a real PostgreSQL
// cluster; each broker connects with a role that may only read.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <pwd.h>
#include <atomic>
#include <chrono>
#include <fstream>
#include <regex>

#include "registry/pg_database.h"
#include "tests/plugin/fleet.h"
#include "tests/support/postgres.h"
#include "tests/support/result.h"

using namespace onboard;
using namespace onboard::test;
using namespace std::chrono_literals;

namespace {

std::string keyword(const std::string& conninfo, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(conninfo, m, std::regex("(^| )" + key + "=([^ ]+)"))) return "";
  return m[2];
}

void sql_as(const std::string& conninfo, const std::string& sql) {
  auto db = must(registry::pg::connect({registry::Backend::postgresql, conninfo}, {}));
  db->exec(sql);
}

// A fresh registry database in a cluster, made by `onboardctl init` as the cluster's superuser
// (the writer here), and a role for the brokers that has only what `onboardctl registry grants`
// gives it, with its password in a pgpass file only the broker's user can read.
struct PgRegistry {
  std::string writer;  // libpq keyword string: the cluster's superuser on the registry database
  std::string broker;  // URI: the broker's role, its password in a passfile
  std::unique_ptr<Fleet> fleet;

  PgRegistry(const std::string& database, const std::string& cluster) : writer(database) {
    fleet =
        std::make_unique<Fleet>(std::map<std::string, std::string>{{"ONBOARD_REGISTRY", writer}});
    static std::atomic<int> count{0};
    const std::string suffix = std::to_string(::getpid()) + "_" + std::to_string(++count);
    const std::string broker_role = "broker_" + suffix, writer_role = "writer_" + suffix;
    const std::string password = "pw" + suffix + "x" + std::to_string(::time(nullptr));
    sql_as(cluster, "CREATE ROLE " + broker_role + " LOGIN PASSWORD '" + password +
                        "'; CREATE ROLE " + writer_role);
    auto grants = fleet->ctl(
        {"registry", "grants", "--broker-role", broker_role, "--writer-role", writer_role});
    Fleet::must(grants);
    sql_as(writer, grants.out);

    const auto passfile = fleet->dir() / "broker.pgpass";
    std::ofstream(passfile) << "127.0.0.1:" << keyword(writer, "port") << ":"
                            << keyword(writer, "dbname") << ":" << broker_role << ":" << password
                            << "\n";
    ::chmod(passfile.c_str(), 0600);
    if (Fleet::as_root()) {
      REQUIRE(::chown(passfile.c_str(), ::getpwnam("mosquitto")->pw_uid, -1) == 0);
    }
    broker = "postgresql://" + broker_role + "@127.0.0.1:" + keyword(writer, "port") + "/" +
             keyword(writer, "dbname") + "?passfile=" + passfile.string() + "&connect_timeout=2";
  }

  std::unique_ptr<Broker> start_broker(std::vector<std::string> options = {}) {
    auto broker_options = fleet->broker_options(std::move(options));
    broker_options.registry = broker;
    return fleet->start(broker_options);
  }
};

}  // namespace

TEST_CASE(
    "a revoke on a PostgreSQL registry disconnects the device from every broker of the fleet") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  PgRegistry registry(fresh_test_database("fleet"), *test_cluster_conninfo());
  Fleet& fleet = *registry.fleet;
  auto one = fleet.add_device("dev-1");
  auto two = fleet.add_device("dev-2");
  auto a = registry.start_broker();
  auto b = registry.start_broker();

  auto one_a = connected("dev-1", one, a->port());
  auto one_b = connected("dev-1", one, b->port());
  auto two_a = connected("dev-2", two, a->port());
  auto two_b = connected("dev-2", two, b->port());

  fleet.must(fleet.ctl({"device", "revoke", "dev-1", "--reason", "keyCompromise"}));
  CHECK(one_a->wait_disconnected(3s));
  CHECK(one_b->wait_disconnected(3s));
  MqttClient again_a("dev-1", one), again_b("dev-1", one);
  CHECK(again_a.connect(a->port()) == kNotAuthorized);
  CHECK(again_b.connect(b->port()) == kNotAuthorized);

  // Control: the other device stays connected to both and keeps its rights.
  for (auto* client : {two_a.get(), two_b.get()}) {
    REQUIRE(client->subscribe("devices/dev-2/#") == 1);
    CHECK(client->publish("devices/dev-2/temp", "21"));
    auto m = client->next_message();
    REQUIRE(m);
    CHECK(m->payload == "21");
  }
}

TEST_CASE("an ACL change on a PostgreSQL registry applies on every broker at the next message") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  PgRegistry registry(fresh_test_database("fleetacl"), *test_cluster_conninfo());
  Fleet& fleet = *registry.fleet;
  auto creds = fleet.add_device("dev-1");
  auto a = registry.start_broker();
  auto b = registry.start_broker();
  std::vector<std::unique_ptr<MqttClient>> clients;
  clients.push_back(connected("dev-1", creds, a->port()));
  clients.push_back(connected("dev-1", creds, b->port()));
  for (auto& c : clients) {
    REQUIRE(c->subscribe("devices/dev-1/#") == 1);
    CHECK(c->publish("devices/dev-1/secret", "before"));
    auto m = c->next_message();
    REQUIRE(m);  // control: delivered while allowed
    CHECK(m->payload == "before");
  }

  fleet.must(fleet.ctl({"acl", "deny", "--device", "dev-1", "--access", "read", "--topic",
                        "devices/dev-1/secret", "--priority", "10"}));
  for (auto& c : clients) {
    bool denied = eventually([&] {
      c->publish("devices/dev-1/secret", "after");
      c->publish("devices/dev-1/open", "marker");
      auto m = c->next_message(1s);
      if (!m || m->payload != "marker") {
        while (c->next_message(200ms)) {
        }
        return false;
      }
      return true;  // the marker came first: the denied message was not delivered
    });
    CHECK(denied);
  }
}

TEST_CASE("the brokers' database role reads the registry and cannot change a row") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  PgRegistry registry(fresh_test_database("fleetrole"), *test_cluster_conninfo());
  registry.fleet->add_device("dev-1");
  // As the broker's role, through its passfile (readable here: the test runs as root or its owner).
  const std::string as_broker = registry.broker;
  auto db = must(registry::pg::connect({registry::Backend::postgresql, as_broker}, {}));
  CHECK(registry::sql::query_int64(*db, "SELECT count(*) FROM devices") == 1);  // control
  for (const char* write :
       {"UPDATE devices SET status = 'active'", "DELETE FROM certificates",
        "INSERT INTO changes (seq, at, kind, subject) VALUES (999, 0, 'crl', '')",
        "UPDATE meta SET change_seq = 0", "SELECT count(*) FROM held_keys",
        "SELECT count(*) FROM api_tokens", "CREATE TABLE mine (x int)"}) {
    INFO(write);
    try {
      db->exec(write);
      FAIL("the broker's role was allowed: " << write);
    } catch (const registry::sql::Failure& f) {
      CHECK(std::string(f.what()).find("permission denied") != std::string::npos);
    }
  }
}

TEST_CASE("brokers keep deciding while PostgreSQL is down and take up changes once it is back") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  PrivateCluster cluster(PG_CLUSTER_SCRIPT);
  PgRegistry registry(cluster.fresh_database("outage"), cluster.conninfo());
  Fleet& fleet = *registry.fleet;
  auto one = fleet.add_device("dev-1");
  auto two = fleet.add_device("dev-2");
  auto three = fleet.unregistered("dev-3");
  auto a = registry.start_broker({"staleness_limit_s 120"});
  auto b = registry.start_broker({"staleness_limit_s 120"});
  auto one_a = connected("dev-1", one, a->port());
  auto one_b = connected("dev-1", one, b->port());

  cluster.down();
  CHECK(a->wait_for_log("cannot read the registry", 15000));
  CHECK(b->wait_for_log("cannot read the registry", 15000));
  // Decisions go on from the last snapshot: traffic flows, a known device connects.
  REQUIRE(one_a->subscribe("devices/dev-1/#") == 1);
  CHECK(one_a->publish("devices/dev-1/temp", "down"));
  auto m = one_a->next_message();
  REQUIRE(m);
  CHECK(m->payload == "down");
  auto two_b = connected("dev-2", two, b->port());
  MqttClient stranger("dev-3", three);
  CHECK(stranger.connect(a->port()) == kNotAuthorized);

  cluster.up();
  fleet.must(fleet.ctl({"device", "revoke", "dev-1", "--reason", "keyCompromise"}));
  // Each broker reconnects (after its backoff) and applies the revocation it missed.
  CHECK(one_a->wait_disconnected(20s));
  CHECK(one_b->wait_disconnected(20s));
  CHECK(a->wait_for_log("registry readable again", 5000));
  CHECK(b->wait_for_log("registry readable again", 5000));
  MqttClient again("dev-1", one);
  CHECK(again.connect(b->port()) == kNotAuthorized);
  // Control: the other device was not touched.
  CHECK_FALSE(two_b->wait_disconnected(300ms));
}

TEST_CASE("a broker restarted while PostgreSQL is down starts from its cache file and catches up") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  PrivateCluster cluster(PG_CLUSTER_SCRIPT);
  PgRegistry registry(cluster.fresh_database("cache"), cluster.conninfo());
  Fleet& fleet = *registry.fleet;
  auto one = fleet.add_device("dev-1");
  auto two = fleet.add_device("dev-2");
  auto stranger = fleet.unregistered("dev-3");
  // A directory the broker's user may write its cache in.
  const auto cache_dir = fleet.dir() / "cache";
  std::filesystem::create_directory(cache_dir);
  if (Fleet::as_root()) {
    REQUIRE(::chown(cache_dir.c_str(), ::getpwnam("mosquitto")->pw_uid, -1) == 0);
  }
  const std::string cache = "cache_file " + (cache_dir / "snapshot").string();
  auto broker = registry.start_broker({cache});
  REQUIRE(eventually([&] { return std::filesystem::exists(cache_dir / "snapshot"); }));

  cluster.down();
  broker.reset();  // stopped while the database is down
  const auto written = std::filesystem::last_write_time(cache_dir / "snapshot");
  broker = registry.start_broker({cache});
  CHECK(broker->log().find("starting from the cache file") != std::string::npos);
  // The cache it started from is not rewritten (its age is what it is trusted by) until the
  // registry has been read again.
  std::this_thread::sleep_for(2500ms);
  CHECK(std::filesystem::last_write_time(cache_dir / "snapshot") == written);
  auto one_client = connected("dev-1", one, broker->port());
  MqttClient unknown("dev-3", stranger);
  CHECK(unknown.connect(broker->port()) == kNotAuthorized);

  // Without a cache file a broker cannot start while the registry is down, and says what to do.
  auto options = fleet.broker_options();
  options.registry = registry.broker;
  Broker without(fleet.dir().path(), options);
  CHECK_FALSE(without.started());
  CHECK(without.log().find("plugin_opt_cache_file") != std::string::npos);

  cluster.up();
  fleet.must(fleet.ctl({"device", "revoke", "dev-1", "--reason", "keyCompromise"}));
  CHECK(one_client->wait_disconnected(20s));
  // Control: the other device connects once the registry is back.
  auto two_client = connected("dev-2", two, broker->port());
  // Read from the registry again, the cache is rewritten.
  CHECK(eventually(
      [&] { return std::filesystem::last_write_time(cache_dir / "snapshot") != written; }));
}

TEST_CASE("a quiet PostgreSQL registry never counts as stale, even with a short staleness limit") {
  ONBOARD_REQUIRE_TEST_CLUSTER();
  PgRegistry registry(fresh_test_database("quiet"), *test_cluster_conninfo());
  auto creds = registry.fleet->add_device("dev-1");
  auto broker = registry.start_broker({"staleness_limit_s 2"});
  // Nothing changes for longer than the limit; each connect is still decided on a fresh read.
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(1500ms);
    MqttClient client("dev-1", creds);
    CHECK(client.connect(broker->port()) == 0);
  }
  CHECK(broker->log().find("refusing new connections") == std::string::npos);
}
