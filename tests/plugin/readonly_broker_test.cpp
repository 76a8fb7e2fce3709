// The broker reads the SQLite registry without any write access to it: the registry, its -wal and
// -shm files 0640 and the data directory 2750, the broker running as user mosquitto in the group.
// It must still start with no writer running, after the WAL was truncated, and take up every
// change live, also across WAL restarts. Real broker (dropping to user mosquitto), real mTLS
// clients, certificates and changes made by the real onboardctl.
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <sqlite3.h>

#include <array>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <fstream>

#include "core/time.h"
#include "registry/sqlite_store.h"
#include "tests/plugin/fleet.h"
#include "tests/support/as_user.h"

using namespace onboard::test;
using namespace std::chrono_literals;

namespace {

// Owner and mode of each of the registry's files, "uid:gid:mode" (or "missing").
std::string files_of(const Fleet& fleet) {
  std::string out;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st {};
    const auto path = fleet.registry().string() + suffix;
    if (::stat(path.c_str(), &st) != 0) {
      out += "missing ";
      continue;
    }
    out += std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + ":" +
           std::to_string(st.st_mode & 07777) + " ";
  }
  return out;
}

std::string expected_files(const Fleet& fleet) {
  struct stat st {};
  REQUIRE(::stat(fleet.registry().c_str(), &st) == 0);
  const std::string one = std::to_string(::geteuid()) + ":" +
                          std::to_string(::getgrnam("mosquitto")->gr_gid) + ":" +
                          std::to_string(0640) + " ";
  return one + one + one;
}

// The WAL header's two salts: SQLite draws new ones each time it starts the log over.
std::array<char, 8> wal_salts(const Fleet& fleet) {
  std::array<char, 8> salts{};
  std::ifstream wal(fleet.registry().string() + "-wal", std::ios::binary);
  wal.seekg(16);
  wal.read(salts.data(), salts.size());
  return salts;
}

// errno of opening each registry file for writing, and of creating a file beside them, as the
// broker's user.
std::string broker_user_write_errors(const Fleet& fleet) {
  const auto account = broker_account();
  REQUIRE(account);
  return run_as(*account, [&] {
    std::string out;
    for (const auto& path :
         {fleet.registry().string(), fleet.registry().string() + "-wal",
          fleet.registry().string() + "-shm", (fleet.data() / "planted").string()}) {
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
      out += std::to_string(fd < 0 ? errno : 0) + " ";
      if (fd >= 0) ::close(fd);
    }
    return out;
  });
}

// A device connects and its message comes back: the broker decides from the registry.
void check_delivers(const std::string& id, const Credentials& creds, int port) {
  auto client = connected(id, creds, port);
  REQUIRE(client->subscribe("devices/" + id + "/#") == 1);
  CHECK(client->publish("devices/" + id + "/temp", "21"));
  auto m = client->next_message();
  REQUIRE(m);
  CHECK(m->payload == "21");
}

}  // namespace

TEST_CASE("the broker reads the registry without write access when no writer is running") {
  if (!Fleet::as_root()) {
    WARN("skipped: needs root and the mosquitto user, for the broker to drop to it");
    return;
  }
  Fleet fleet;
  auto kept = fleet.add_device("dev-kept");
  auto revoked = fleet.add_device("dev-revoked");
  fleet.must(fleet.ctl({"device", "revoke", "dev-revoked", "--reason", "keyCompromise"}));
  // onboardctl has exited: the files the broker reads through are there, and the owner's.
  CHECK(files_of(fleet) == expected_files(fleet));
  {
    auto broker = fleet.start_with();
    check_delivers("dev-kept", kept, broker->port());
    MqttClient refused("dev-revoked", revoked);
    CHECK(refused.connect(broker->port()) == kNotAuthorized);
    CHECK(files_of(fleet) == expected_files(fleet));  // the broker created or changed nothing
  }
  // As `scrub` leaves it after a delivery with keys: every frame checkpointed, the WAL cut to zero.
  {
    SQLite::Database owner(fleet.registry().string(), SQLite::OPEN_READWRITE);
    int persist = 1;
    sqlite3_file_control(owner.getHandle(), "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    owner.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  REQUIRE(std::filesystem::file_size(fleet.registry().string() + "-wal") == 0);
  REQUIRE(files_of(fleet) == expected_files(fleet));
  auto broker = fleet.start_with();
  check_delivers("dev-kept", kept, broker->port());
  MqttClient refused("dev-revoked", revoked);
  CHECK(refused.connect(broker->port()) == kNotAuthorized);
}

TEST_CASE("a revocation reaches a broker without write access, also after the WAL started over") {
  if (!Fleet::as_root()) {
    WARN("skipped: needs root and the mosquitto user, for the broker to drop to it");
    return;
  }
  Fleet fleet;
  auto kept = fleet.add_device("dev-kept");
  auto first = fleet.add_device("dev-first");
  auto second = fleet.add_device("dev-second");
  fleet.add_device("dev-busy");
  auto broker = fleet.start_with();

  auto first_client = connected("dev-first", first, broker->port());
  auto second_client = connected("dev-second", second, broker->port());
  fleet.must(fleet.ctl({"device", "revoke", "dev-first", "--reason", "keyCompromise"}));
  CHECK(first_client->wait_disconnected(3s));
  CHECK_FALSE(second_client->wait_disconnected(200ms));
  check_delivers("dev-kept", kept, broker->port());
  // Meanwhile the broker's user could not have written any of it.
  CHECK(files_of(fleet) == expected_files(fleet));
  CHECK(broker_user_write_errors(fleet) == "13 13 13 13 ");  // EACCES

  // Enough commits for checkpoints to run and the WAL to start over (new salts), with the
  // broker reading all along.
  const auto salts = wal_salts(fleet);
  {
    auto store = onboard::registry::open_sqlite_store(fleet.registry(),
                                                      onboard::registry::OpenMode::read_write);
    REQUIRE(store.ok());
    bool enabled = true;
    for (int i = 0; i < 3000 && wal_salts(fleet) == salts; ++i) {
      enabled = !enabled;
      auto changed =
          store.value()->set_device_enabled("dev-busy", enabled, {"test", onboard::unix_now()});
      REQUIRE(changed.ok());
      if (i % 50 == 0) std::this_thread::sleep_for(20ms);  // let the broker read in between
    }
  }
  REQUIRE(wal_salts(fleet) != salts);
  CHECK(files_of(fleet) == expected_files(fleet));

  fleet.must(fleet.ctl({"device", "revoke", "dev-second", "--reason", "keyCompromise"}));
  CHECK(second_client->wait_disconnected(3s));
  MqttClient refused("dev-second", second);
  CHECK(refused.connect(broker->port()) == kNotAuthorized);
  check_delivers("dev-kept", kept, broker->port());
}

TEST_CASE("the broker still reads a registry tightened from an older installation") {
  if (!Fleet::as_root()) {
    WARN("skipped: needs root and the mosquitto user, for the broker to drop to it");
    return;
  }
  Fleet fleet;
  auto kept = fleet.add_device("dev-kept");
  auto later = fleet.add_device("dev-later");
  // As an older init and broker left it: folder 2770, registry 0660, WAL files the broker's.
  const auto mosquitto = ::getpwnam("mosquitto");
  REQUIRE(::chmod(fleet.data().c_str(), 02770) == 0);
  REQUIRE(::chmod(fleet.registry().c_str(), 0660) == 0);
  for (const char* suffix : {"-wal", "-shm"}) {
    const auto side = fleet.registry().string() + suffix;
    REQUIRE(::chown(side.c_str(), mosquitto->pw_uid, mosquitto->pw_gid) == 0);
    REQUIRE(::chmod(side.c_str(), 0660) == 0);
  }
  fleet.must(fleet.ctl({"device", "list"}));  // any command
  CHECK(files_of(fleet) == expected_files(fleet));
  struct stat st {};
  REQUIRE(::stat(fleet.data().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 02750);

  auto broker = fleet.start_with();
  check_delivers("dev-kept", kept, broker->port());
  auto later_client = connected("dev-later", later, broker->port());
  fleet.must(fleet.ctl({"device", "disable", "dev-later"}));
  CHECK(later_client->wait_disconnected(3s));
}
