// Backing up and restoring a registry in use: the copy is consistent and checked, and a restore
// replaces the state in one transaction without undoing any revocation made since the backup,
// while a broker's open connection sees the change and who it must disconnect.
#include "registry/sqlite_backup.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <SQLiteCpp/Database.h>

#include "registry/snapshot_loader.h"
#include "registry/sqlite_access.h"
#include "registry/sqlite_store.h"
#include "tests/registry/fixtures.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::kNow;
using onboard::test::kTestIssuer;
using onboard::test::must;
using onboard::test::register_test_device;
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;

namespace {

const Actor kLater{"operator", kNow + 3600};
const std::string kTokenHash(64, 'a');

std::unique_ptr<Store> open(const std::string& path) {
  return must(open_sqlite_store(path, OpenMode::read_write));
}

DeviceStatus status_of(Store& store, const std::string& id) {
  return must(store.get_device(id)).status;
}

bool on_crl(Store& store, const NewCertificate& certificate) {
  for (const auto& entry : must(store.revoked_certificates(kTestIssuer)))
    if (entry.serial_hex == certificate.serial_hex) return true;
  return false;
}

}  // namespace

TEST_CASE("a backup is a checked copy of the registry that never overwrites a file") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  {
    auto store = open(path);
    register_test_device(*store, "dev-1");
    register_test_device(*store, "dev-2");
  }
  auto keep_open = open(path);  // a writer's connection stays open, as onboardctl serve's does
  const auto target = dir / "backup.db";
  auto summary = must(backup_sqlite_registry(path, target));
  CHECK(summary.devices == 2);
  CHECK(summary.audit_rows >= 2);

  struct stat st {};
  REQUIRE(::stat(target.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto copy = must(open_sqlite_store(target, OpenMode::read_only));
  CHECK(must(copy->get_device("dev-2")).id == "dev-2");
  CHECK(must(copy->verify_audit()).ok());
  CHECK(must(copy->verify_audit()).head_hash == summary.audit_head);

  // Never over an existing file, whatever it is; and nothing left behind.
  require_error(backup_sqlite_registry(path, target), Errc::conflict, "exists already");
  std::ofstream(dir / "other.db") << "precious";
  require_error(backup_sqlite_registry(path, dir / "other.db"), Errc::conflict);
  std::ifstream kept(dir / "other.db");
  CHECK(std::string(std::istreambuf_iterator<char>(kept), {}) == "precious");
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    CHECK(entry.path().filename().string().find(".partial-") == std::string::npos);
  require_error(backup_sqlite_registry(dir / "missing.db", dir / "b2.db"), Errc::not_found);
}

TEST_CASE("a restore brings the backup's state back but never undoes a revocation") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  NewCertificate cert1, cert3;
  {
    auto store = open(path);
    cert1 = register_test_device(*store, "dev-1");
    register_test_device(*store, "dev-2");
    cert3 = register_test_device(*store, "dev-3");
    must(store->create_api_token("ci", ApiRole::reader, kTokenHash, onboard::test::kAlice));
  }
  const auto backup = dir / "backup.db";
  must(backup_sqlite_registry(path, backup));

  // After the backup: a new device, a disable, two revocations, a revoked token, and a device
  // registered and revoked that the backup has never heard of.
  auto store = open(path);
  register_test_device(*store, "dev-4");
  must(store->set_device_enabled("dev-2", false, kLater));
  must(store->revoke_device("dev-1", RevocationReason::key_compromise, kLater));
  const auto cert5 = register_test_device(*store, "dev-5");
  must(store->revoke_device("dev-5", RevocationReason::key_compromise, kLater));
  must(store->revoke_api_token("ci", kLater));
  const auto crl_number_before = must(store->next_crl_number(kLater));  // a CRL signed since
  const auto seq_before = must(store->change_seq());

  // A broker's connection, open across the restore.
  auto broker = must(open_sqlite_access(path));
  auto snapshot = must(load_snapshot(*broker));

  auto restored = must(restore_sqlite_registry(path, backup, kLater));
  CHECK(restored.restored.devices == 3);  // dev-1..3; dev-4 and dev-5 came after the backup
  CHECK(restored.replaced.devices == 5);
  CHECK(restored.revocations_kept >= 3);  // dev-1, its certificate, the token, dev-5's certificate

  // The audit log verifies, and its last row says what was replaced.
  CHECK(must(store->verify_audit()).ok());
  auto audit = must(store->audit_list(0));
  REQUIRE_FALSE(audit.empty());
  CHECK(audit.back().action == "registry.restore");
  CHECK(audit.back().details.find(restored.replaced.audit_head) != std::string::npos);

  // The backup's state: dev-4 is unknown again and dev-2 is enabled again.
  require_error(store->get_device("dev-4"), Errc::not_found);
  CHECK(status_of(*store, "dev-2") == DeviceStatus::active);
  CHECK(status_of(*store, "dev-3") == DeviceStatus::active);
  // Revocations stand: dev-1 and its certificate, the token, and dev-5's certificate, which the
  // backup never had, is still on the CRL.
  CHECK(status_of(*store, "dev-1") == DeviceStatus::revoked);
  CHECK(on_crl(*store, cert1));
  CHECK(on_crl(*store, cert5));
  CHECK_FALSE(on_crl(*store, cert3));
  require_error(store->find_api_token(kTokenHash), Errc::not_found);
  // Numbers never go back.
  CHECK(must(store->next_crl_number(kLater)) > crl_number_before);
  CHECK(must(store->change_seq()) > seq_before);

  // The broker's open connection sees it, and is told to disconnect the devices the backup does
  // not know (dev-4, dev-5) and the revoked dev-1; not dev-2 or dev-3.
  auto refresh = must(refresh_snapshot(*broker, *snapshot));
  REQUIRE(refresh.has_value());
  REQUIRE(refresh->snapshot);
  std::sort(refresh->kicks.begin(), refresh->kicks.end());
  CHECK(refresh->kicks == std::vector<std::string>{"dev-1", "dev-4", "dev-5"});
  CHECK(refresh->snapshot->find_device("dev-4") == nullptr);
  CHECK(refresh->snapshot->find_device("dev-2")->status() == DeviceStatus::active);
}

TEST_CASE("a restore refuses a backup that is not a sound registry and changes nothing") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  {
    auto store = open(path);
    register_test_device(*store, "dev-1");
  }
  const auto backup = dir / "backup.db";
  must(backup_sqlite_registry(path, backup));
  auto store = open(path);
  register_test_device(*store, "dev-2");
  const auto seq = must(store->change_seq());

  SECTION("not a registry") {
    std::ofstream(dir / "junk.db") << "not a database";
    require_error(restore_sqlite_registry(path, dir / "junk.db", kLater), Errc::corrupt);
  }
  SECTION("the registry itself, by its name or through a link") {
    require_error(restore_sqlite_registry(path, path, kLater), Errc::invalid_input,
                  "the registry itself");
    std::filesystem::create_hard_link(path, dir / "link.db");
    require_error(restore_sqlite_registry(path, dir / "link.db", kLater), Errc::invalid_input,
                  "the registry itself");
  }
  SECTION("missing") {
    require_error(restore_sqlite_registry(path, dir / "none.db", kLater), Errc::not_found);
  }
  SECTION("an audit log edited behind the tool's back") {
    {
      SQLite::Database db(backup.string(), SQLite::OPEN_READWRITE);
      db.exec("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1");
    }
    require_error(restore_sqlite_registry(path, backup, kLater), Errc::corrupt,
                  "audit log does not verify");
  }
  SECTION("a device renamed in the backup behind the tool's back") {
    {
      SQLite::Database db(backup.string(), SQLite::OPEN_READWRITE);
      db.exec("UPDATE devices SET name = 'mallory' WHERE id = 'dev-1'");
    }
    require_error(restore_sqlite_registry(path, backup, kLater), Errc::corrupt,
                  "audit log does not verify: device dev-1 differs from row");
  }
  CHECK(must(store->change_seq()) == seq);
  CHECK(must(store->get_device("dev-2")).id == "dev-2");

  // Control: the untouched backup restores.
  if (std::filesystem::exists(backup) &&
      must(open_sqlite_store(backup, OpenMode::read_only))->verify_audit().value().ok()) {
    must(restore_sqlite_registry(path, backup, kLater));
    require_error(store->get_device("dev-2"), Errc::not_found);
  }
}
