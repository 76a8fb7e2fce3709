// Schema migrations on real files: a registry written by an older version opens, is migrated in
// place, and keeps everything it held.
#include "registry/schema.h"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "registry/sqlite_store.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::must;
using onboard::test::TempDir;

namespace {

constexpr UnixTime kNow = 1'700'000'000;
const std::string kFp1(64, 'a'), kFp2(64, 'b'), kFp3(64, 'c');

// A registry file as version 2 of onboardctl left it: two devices, an active certificate with a
// held key, a revoked one, and the rowids out of step with the serials.
void write_version_2_file(const std::string& path) {
  SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA foreign_keys = ON");
  SQLite::Transaction transaction(db);
  schema::migrate(db, 0, kNow, 2);
  db.exec(
      "INSERT INTO devices (id, name, type, location, firmware, status, created_at, updated_at, "
      "metadata) VALUES "
      "('dev-a', 'dev-a', '', '', '', 'active', 1, 1, '{}'), "
      "('dev-b', 'dev-b', '', '', '', 'revoked', 1, 2, '{}')");
  const std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  SQLite::Statement cert(db,
                         "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, "
                         "device_id, subject, not_before, not_after, status, revoked_at, "
                         "revocation_reason, pem) VALUES (?, 'CN=CA', ?, ?, ?, 1, 99999999999, ?, "
                         "?, ?, ?)");
  auto add = [&](const char* serial, const std::string& fp, const char* device, bool revoked) {
    cert.reset();
    cert.bind(1, serial);
    cert.bind(2, fp);
    cert.bind(3, device);
    cert.bind(4, std::string("CN=") + device);
    cert.bind(5, revoked ? "revoked" : "active");
    if (revoked) {
      cert.bind(6, static_cast<std::int64_t>(2));
      cert.bind(7, "keyCompromise");
    } else {
      cert.bind(6);
      cert.bind(7);
    }
    cert.bind(8, pem);
    cert.exec();
  };
  add("0B", kFp1, "dev-b", true);
  add("0A", kFp2, "dev-a", false);
  SQLite::Statement key(db,
                        "INSERT INTO held_keys (device_id, certificate_sha256, encrypted_pem, "
                        "created_at) VALUES ('dev-a', ?, ?, 1)");
  key.bind(1, kFp2);
  key.bind(2, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n");
  key.exec();
  transaction.commit();
}

std::int64_t scalar(const std::string& path, const char* sql) {
  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  return raw.execAndGet(sql).getInt64();
}

}  // namespace

TEST_CASE("a version 2 registry is migrated in place to version 3 and keeps what it held") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  write_version_2_file(path);
  REQUIRE(scalar(path, "SELECT schema_version FROM meta") == 2);

  auto store = must(open_sqlite_store(path, OpenMode::read_write));
  CHECK(scalar(path, "SELECT schema_version FROM meta") == schema::kCurrentVersion);
  CHECK(schema::kCurrentVersion == 6);

  // Every certificate is now a device certificate of its device, in its old order.
  const auto all = must(store->list_certificates({}));
  REQUIRE(all.size() == 2);
  CHECK(all[0].sha256_fingerprint == kFp1);
  CHECK(all[1].sha256_fingerprint == kFp2);
  for (const auto& c : all) CHECK(c.kind == CertificateKind::device);
  CHECK(all[0].device_id == "dev-b");
  CHECK(all[0].revocation_reason == RevocationReason::key_compromise);
  CHECK(must(store->certificates_of("dev-a")).size() == 1);

  // The held key survived the rebuild of the table it refers to, and its reference holds.
  const auto held = must(store->held_key("dev-a"));
  REQUIRE(held.has_value());
  CHECK(held->certificate_sha256 == kFp2);
  CHECK(scalar(path, "SELECT count(*) FROM pragma_foreign_key_check") == 0);
  {
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("PRAGMA integrity_check").getString() == "ok");
  }
  CHECK(scalar(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'certificates_revoked'") ==
        1);
  CHECK(scalar(path, "SELECT count(*) FROM sqlite_temp_schema") == 0);

  // What the CRL and the broker read still works.
  const auto revoked = must(store->revoked_certificates("CN=CA"));
  REQUIRE(revoked.size() == 1);
  CHECK(revoked[0].serial_hex == "0B");
  const auto access = must(store->read_access(AccessQuery::everything()));
  REQUIRE(access.devices.size() == 2);
  CHECK(access.devices[0].certificates.size() == 1);

  // The migration is audited, and the chain verifies.
  const auto events = must(store->audit_list(0));
  REQUIRE(events.size() == 1);
  CHECK(events[0].action == "registry.migrate");
  // Its row records the state the log vouches for from here on (version 4): every entity.
  const auto details = nlohmann::json::parse(events[0].details);
  CHECK(details["from_version"] == 2);
  CHECK(details["to_version"] == sql::kSchemaVersion);
  CHECK(details["attest"]["part"] == 1);
  std::vector<std::string> attested;
  for (const auto& [ref, digest] : details["attest"]["entities"].items()) attested.push_back(ref);
  CHECK(attested == std::vector<std::string>{"certificate:" + kFp1, "certificate:" + kFp2,
                                             "device:dev-a", "device:dev-b", "group:default",
                                             "rule:1"});
  const auto check = must(store->verify_audit());
  CHECK(check.ok());
  CHECK(check.entities_checked == 6);

  // And version 3 is in force: non-device certificates and the root CRL number.
  NewCertificate server{"0C",
                        "CN=CA",
                        kFp3,
                        "CN=broker",
                        1,
                        2,
                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                        {}};
  const Actor actor{"alice", kNow};
  CHECK(must(store->record_certificate(CertificateKind::server, server, actor)).kind ==
        CertificateKind::server);
  CHECK(must(store->next_root_crl_number(actor)) == 1);
  SQLite::Database raw(path, SQLite::OPEN_READWRITE);
  CHECK_THROWS(raw.exec(
      "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, kind, device_id, subject, "
      "not_before, not_after, status, pem) VALUES ('0D', 'CN=CA', 'dd', 'server', 'dev-a', 'CN=x', "
      "1, 2, 'active', 'p')"));
  CHECK_THROWS(raw.exec(
      "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, kind, device_id, subject, "
      "not_before, not_after, status, pem) VALUES ('0E', 'CN=CA', 'ee', 'device', NULL, 'CN=x', "
      "1, 2, 'active', 'p')"));
}

TEST_CASE("a version 4 registry is migrated in place to version 5 and keeps what it held") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  write_version_2_file(path);
  {
    // As version 4 left it: a server certificate beside the devices', and a change feed.
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA foreign_keys = ON");
    SQLite::Transaction transaction(db);
    schema::migrate(db, 2, kNow, 4);
    db.exec(
        "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, kind, subject, "
        "not_before, not_after, status, pem) VALUES ('0C', 'CN=CA', '" +
        kFp3 + "', 'server', 'CN=broker', 1, 2, 'active', 'p')");
    db.exec(
        "UPDATE meta SET change_seq = 2; INSERT INTO changes (seq, at, kind, subject) VALUES "
        "(1, 1, 'device', 'dev-a'), (2, 1, 'crl', '')");
    // Version 4 refuses what version 5 adds.
    CHECK_THROWS(
        db.exec("INSERT INTO changes (seq, at, kind, subject) VALUES (3, 1, 'claim', 'x')"));
    transaction.commit();
  }
  REQUIRE(scalar(path, "SELECT schema_version FROM meta") == 4);

  auto store = must(open_sqlite_store(path, OpenMode::read_write));
  CHECK(scalar(path, "SELECT schema_version FROM meta") == schema::kCurrentVersion);
  const auto all = must(store->list_certificates({}));
  REQUIRE(all.size() == 3);
  CHECK(all[0].sha256_fingerprint == kFp1);
  CHECK(all[2].kind == CertificateKind::server);
  REQUIRE(must(store->held_key("dev-a")).has_value());
  const auto changes = must(store->changes_since(0));
  REQUIRE(changes.size() >= 2);
  CHECK(changes[0].subject == "dev-a");
  CHECK(changes[1].kind == ChangeKind::crl);
  CHECK(scalar(path, "SELECT count(*) FROM pragma_foreign_key_check") == 0);
  {
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("PRAGMA integrity_check").getString() == "ok");
  }
  CHECK(scalar(path, "SELECT count(*) FROM sqlite_temp_schema") == 0);

  // Claims work, and the audit log vouches for everything, the migrated entities included.
  const Actor actor{"alice", kNow};
  NewCertificate claim_cert{"0D",
                            "CN=CA",
                            std::string(64, 'e'),
                            "CN=factory-1",
                            1,
                            kNow + 3600,
                            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                            {}};
  must(store->create_claim(NewClaim{"factory-1", 5, "sensor-.+", ""}, claim_cert, actor));
  must(store->revoke_claim("factory-1", RevocationReason::unspecified, actor));
  const auto check = must(store->verify_audit());
  INFO(check.problem);
  CHECK(check.ok());
  CHECK(check.entities_checked ==
        9);  // 2 devices, 4 certificates, the default group and rule, 1 claim
}

TEST_CASE("reopening a migrated registry does not migrate it again") {
  TempDir dir;
  const std::string path = (dir / "registry.db").string();
  write_version_2_file(path);
  must(open_sqlite_store(path, OpenMode::read_write));
  auto again = must(open_sqlite_store(path, OpenMode::read_write));
  CHECK(must(again->audit_list(0)).size() == 1);
  CHECK(must(again->list_certificates({})).size() == 2);
}
