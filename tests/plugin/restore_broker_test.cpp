// A registry restored from a backup under a running broker: the broker takes the restored state
// up at once, disconnects whoever it no longer allows, and no revocation made since the backup is
// undone. Real broker, real mTLS clients, certificates onboardctl issued.
#include <catch2/catch.hpp>

#include <chrono>

#include "tests/plugin/fleet.h"

using namespace onboard::test;
using namespace std::chrono_literals;

TEST_CASE("a registry restored under a running broker takes effect at once and keeps revocations") {
  Fleet fleet;
  auto kept = fleet.add_device("dev-kept");
  auto revoked = fleet.add_device("dev-revoked");
  const std::string backup = (fleet.data() / "backup.db").string();
  fleet.must(fleet.ctl({"registry", "backup", backup}));
  auto later = fleet.add_device("dev-later");  // unknown to the backup
  fleet.must(fleet.ctl({"device", "revoke", "dev-revoked", "--reason", "keyCompromise"}));

  auto broker = fleet.start_with();
  auto later_client = connected("dev-later", later, broker->port());
  auto kept_client = connected("dev-kept", kept, broker->port());
  REQUIRE(kept_client->subscribe("devices/dev-kept/#") == 1);

  // Destructive: refused without --yes, and nothing changes.
  auto unconfirmed = fleet.ctl({"registry", "restore", backup});
  CHECK(unconfirmed.exit_code != 0);
  CHECK(unconfirmed.err.find("--yes") != std::string::npos);
  CHECK_FALSE(later_client->wait_disconnected(300ms));

  auto restore = fleet.ctl({"registry", "restore", backup, "--yes"});
  INFO(restore.out << restore.err);
  REQUIRE(restore.exit_code == 0);
  CHECK(restore.out.find("restored from") != std::string::npos);

  // The device the backup does not know is disconnected and refused.
  REQUIRE(later_client->wait_disconnected(3s));
  MqttClient later_again("dev-later", later);
  CHECK(later_again.connect(broker->port()) == kNotAuthorized);
  // The revocation made after the backup stands.
  MqttClient revoked_again("dev-revoked", revoked);
  CHECK(revoked_again.connect(broker->port()) == kNotAuthorized);
  // Control: the device the backup knows keeps its connection and its rights.
  CHECK(kept_client->publish("devices/dev-kept/temp", "20"));
  auto m = kept_client->next_message();
  REQUIRE(m);
  CHECK(m->payload == "20");

  // The audit log verifies and names the restore; a backup is never written over.
  fleet.must(fleet.ctl({"audit", "verify"}));
  auto audit = fleet.ctl({"audit", "list", "--json"});
  CHECK(audit.out.find("registry.restore") != std::string::npos);
  CHECK(fleet.ctl({"registry", "backup", backup}).exit_code != 0);
}
