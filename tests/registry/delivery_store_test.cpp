// The Store's credential-delivery and API-token records (schema version 2): held keys, batches,
// bundles with their one-time download, bearer-token hashes, and the migration from version 1.
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Transaction.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "registry/schema.h"
#include "registry/sqlite_store.h"
#include "tests/registry/fixtures.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::kAlice;
using onboard::test::kNow;
using onboard::test::kTestIssuer;
using onboard::test::must;
using onboard::test::new_device;
using onboard::test::open_test_store;
using onboard::test::registry_path;
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;

namespace {

const std::string kEncrypted =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";

// A record whose certificate carries `held_key` (empty: none).
NewCertificate certificate(std::string_view device_id, std::string held_key = "") {
  return test_certificate(device_id, kTestIssuer, std::move(held_key));
}

std::int64_t count(const TempDir& dir, const char* sql) {
  return onboard::test::raw_int64(dir, sql);
}

BundleRecord bundle_of(const std::string& id, const std::vector<Certificate>& certificates,
                       bool with_keys = true) {
  BundleRecord b;
  b.id = id;
  b.path = "/tmp/" + id + ".zip";
  b.sha256 = std::string(64, 'a');
  b.size = 1234;
  b.with_keys = with_keys;
  for (const auto& c : certificates) b.devices.push_back({c.device_id, c.sha256_fingerprint});
  return b;
}

Certificate active_certificate(Store& store, const std::string& id) {
  for (const auto& c : must(store.certificates_of(id))) {
    if (c.status == CertificateStatus::active) return c;
  }
  FAIL("no active certificate for " << id);
  return {};
}

}  // namespace

TEST_CASE("a held key lives exactly as long as its certificate may still be packaged") {
  TempDir dir;
  auto store = open_test_store(dir);
  must(store->register_device(new_device("dev-1"), certificate("dev-1", kEncrypted), kAlice));
  auto held = must(store->held_key("dev-1"));
  REQUIRE(held.has_value());
  CHECK(held->encrypted_pem == kEncrypted);
  CHECK(held->certificate_sha256 == active_certificate(*store, "dev-1").sha256_fingerprint);
  CHECK(held->created_at == kNow);

  SECTION("a plaintext key is refused and nothing is written") {
    auto plain =
        certificate("dev-2", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n");
    require_error(store->register_device(new_device("dev-2"), plain, kAlice), Errc::invalid_input,
                  "encrypted");
    CHECK(count(dir, "SELECT count(*) FROM devices WHERE id = 'dev-2'") == 0);
  }
  SECTION("a renewal that supersedes without a new held key erases the old one") {
    must(store->add_certificate("dev-1", certificate("dev-1"), true, kAlice));
    CHECK_FALSE(must(store->held_key("dev-1")).has_value());
  }
  SECTION("a renewal with a new held key replaces it") {
    auto renewed =
        must(store->add_certificate("dev-1", certificate("dev-1", kEncrypted), true, kAlice));
    auto now_held = must(store->held_key("dev-1"));
    REQUIRE(now_held.has_value());
    CHECK(now_held->certificate_sha256 == renewed.certificate.sha256_fingerprint);
  }
  SECTION("revoking the device erases it") {
    must(store->revoke_device("dev-1", RevocationReason::key_compromise, kAlice));
    CHECK_FALSE(must(store->held_key("dev-1")).has_value());
    CHECK(count(dir, "SELECT count(*) FROM held_keys") == 0);
  }
  SECTION("an unknown device is not found, not 'no key'") {
    require_error(store->held_key("nope"), Errc::not_found);
  }
}

TEST_CASE("recording a bundle erases the packaged keys, re-checking every device first") {
  TempDir dir;
  auto store = open_test_store(dir);
  must(store->create_batch("b1", "devices.csv", kAlice));
  for (const std::string id : {"dev-1", "dev-2", "dev-3"}) {
    must(store->register_device_in_batch(new_device(id), certificate(id, kEncrypted), "b1",
                                         id == "dev-1" ? 2 : 3, kAlice));
  }
  auto batch = must(store->get_batch("b1"));
  REQUIRE(batch.devices.size() == 3);
  CHECK(batch.devices[0].device_id == "dev-1");
  CHECK(batch.devices[0].line == 2);
  require_error(
      store->register_device_in_batch(new_device("dev-4"), certificate("dev-4"), "nope", 2, kAlice),
      Errc::not_found, "batch nope");
  CHECK(count(dir, "SELECT count(*) FROM devices WHERE id = 'dev-4'") == 0);
  require_error(store->create_batch("b1", "again.csv", kAlice), Errc::conflict);

  const auto c1 = active_certificate(*store, "dev-1");
  const auto c2 = active_certificate(*store, "dev-2");
  const auto c3 = active_certificate(*store, "dev-3");

  SECTION("the bundled devices' keys go, the others' stay") {
    auto b = bundle_of("bdl-1", {c1, c2});
    b.batch_id = "b1";
    auto recorded = must(store->record_bundle(b, kAlice));
    CHECK(recorded.created_at == kNow);
    CHECK(recorded.devices.size() == 2);
    CHECK(recorded.batch_id == "b1");
    CHECK_FALSE(must(store->held_key("dev-1")).has_value());
    CHECK_FALSE(must(store->held_key("dev-2")).has_value());
    CHECK(must(store->held_key("dev-3")).has_value());
    CHECK(must(store->bundles_of_device("dev-1")).size() == 1);
    CHECK(must(store->bundles_of_device("dev-3")).empty());
    require_error(store->record_bundle(bundle_of("bdl-1", {c3}), kAlice), Errc::conflict);
    CHECK(must(store->verify_audit()).ok());
  }
  SECTION("a certificates-only bundle leaves the held keys alone") {
    must(store->record_bundle(bundle_of("bdl-2", {c1}, false), kAlice));
    CHECK(must(store->held_key("dev-1")).has_value());
  }
  SECTION("a disabled device, or a certificate that is no longer active, fails the whole bundle") {
    must(store->set_device_enabled("dev-2", false, kAlice));
    require_error(store->record_bundle(bundle_of("bdl-3", {c1, c2}), kAlice), Errc::conflict,
                  "dev-2 is disabled");
    CHECK(must(store->held_key("dev-1")).has_value());  // rolled back with the rest
    must(store->add_certificate("dev-3", certificate("dev-3"), true, kAlice));
    require_error(store->record_bundle(bundle_of("bdl-4", {c3}), kAlice), Errc::conflict,
                  "no longer its active certificate");
    CHECK(count(dir, "SELECT count(*) FROM bundles") == 0);
  }
  SECTION("bad records are refused before any SQL") {
    auto b = bundle_of("bad id", {c1});
    require_error(store->record_bundle(b, kAlice), Errc::invalid_input);
    b = bundle_of("bdl-5", {});
    require_error(store->record_bundle(b, kAlice), Errc::invalid_input);
    b = bundle_of("bdl-5", {c1});
    b.sha256 = "xyz";
    require_error(store->record_bundle(b, kAlice), Errc::invalid_input);
  }
  SECTION("a bundle is claimed for download exactly once") {
    must(store->record_bundle(bundle_of("bdl-6", {c1}), kAlice));
    const Actor later{"rest:integration", kNow + 60};
    auto first = must(store->claim_bundle_download("bdl-6", "127.0.0.1", later));
    CHECK(first.downloaded_at == kNow + 60);
    CHECK(first.downloaded_by == "127.0.0.1");
    require_error(store->claim_bundle_download("bdl-6", "127.0.0.1", later), Errc::conflict,
                  "downloaded already");
    require_error(store->claim_bundle_download("bdl-none", "x", later), Errc::not_found);
    // Two stores, as two server workers: one claim wins.
    must(store->record_bundle(bundle_of("bdl-7", {c2}), kAlice));
    auto other = open_test_store(dir);
    auto a = store->claim_bundle_download("bdl-7", "a", later);
    auto b = other->claim_bundle_download("bdl-7", "b", later);
    CHECK(a.ok() != b.ok());
    CHECK(must(store->get_bundle("bdl-7")).downloaded_by == "a");
  }
}

TEST_CASE("API tokens are stored as hashes, found while active, and revoked once") {
  TempDir dir;
  auto store = open_test_store(dir);
  const std::string hash(64, 'b');
  auto token = must(store->create_api_token("ci", ApiRole::operator_role, hash, kAlice));
  CHECK(token.name == "ci");
  CHECK(token.role == ApiRole::operator_role);
  CHECK(must(store->find_api_token(hash)).name == "ci");
  CHECK(must(store->find_api_token(std::string(64, 'B'))).name == "ci");  // case does not matter
  require_error(store->create_api_token("ci", ApiRole::reader, std::string(64, 'c'), kAlice),
                Errc::conflict);
  require_error(store->create_api_token("other", ApiRole::reader, hash, kAlice), Errc::conflict);
  require_error(store->create_api_token("bad name", ApiRole::reader, std::string(64, 'd'), kAlice),
                Errc::invalid_input);
  require_error(store->create_api_token("short", ApiRole::reader, "abc", kAlice),
                Errc::invalid_input);
  require_error(store->find_api_token(std::string(64, 'e')), Errc::not_found);

  CHECK(must(store->revoke_api_token("ci", kAlice)) == true);
  CHECK(must(store->revoke_api_token("ci", kAlice)) == false);
  require_error(store->find_api_token(hash), Errc::not_found);
  require_error(store->revoke_api_token("nobody", kAlice), Errc::not_found);
  auto tokens = must(store->list_api_tokens());
  REQUIRE(tokens.size() == 1);
  CHECK(tokens[0].revoked_at == kNow);
  // Nothing but the hash is kept.
  CHECK(count(dir,
              "SELECT count(*) FROM api_tokens WHERE token_sha256 = "
              "'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'") == 1);
}

TEST_CASE("record_event appends an audit row and accepts only a JSON object") {
  TempDir dir;
  auto store = open_test_store(dir);
  CHECK(
      store->record_event("bundle.download_refused", "bdl-1", R"({"why":"expired"})", kAlice).ok());
  auto rows = must(store->audit_list(0));
  CHECK(rows.back().action == "bundle.download_refused");
  CHECK(rows.back().details == R"({"why":"expired"})");
  CHECK_FALSE(store->record_event("x", "y", "[1]", kAlice).ok());
  CHECK_FALSE(store->record_event("x", "y", "not json", kAlice).ok());
  CHECK_FALSE(store->record_event("", "y", "{}", kAlice).ok());
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a version 1 registry is upgraded in place, keeping its data", "[sqlite]") {
  TempDir dir;
  {
    // A file as version 1 wrote it, with one device and its certificate.
    SQLite::Database raw(registry_path(dir), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec("PRAGMA journal_mode = WAL");
    SQLite::Transaction transaction(raw);
    schema::migrate(raw, 0, kNow, 1);
    raw.exec(
        "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
        "updated_at, metadata) VALUES ('dev-1', 'dev-1', '', '', '', 'active', 1, 1, '{}');"
        "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, device_id, subject, "
        "not_before, not_after, status, pem) VALUES ('01', 'CN=CA', '" +
        std::string(64, 'a') + "', 'dev-1', 'CN=dev-1', 1, 2, 'active', 'p')");
    transaction.commit();
  }
  auto read_only = open_sqlite_store(registry_path(dir), OpenMode::read_only);
  require_error(read_only, Errc::corrupt, "open it once with onboardctl");
  auto store = open_test_store(dir);
  CHECK(must(store->get_device("dev-1")).id == "dev-1");
  CHECK_FALSE(must(store->held_key("dev-1")).has_value());
  CHECK(count(dir, "SELECT schema_version FROM meta") == schema::kCurrentVersion);
  CHECK(must(store->certificates_of("dev-1")).size() == 1);
  auto rows = must(store->audit_list(0));
  CHECK(rows.back().action == "registry.migrate");
  CHECK(must(store->verify_audit()).ok());
  CHECK(open_sqlite_store(registry_path(dir), OpenMode::read_only).ok());
}

TEST_CASE("a bundle of a claim's credential is recorded only for an active claim and no device") {
  TempDir dir;
  auto store = open_test_store(dir);
  must(store->create_claim(NewClaim{"line-1", 5, "sensor-[0-9]+", ""}, test_certificate("line-1"),
                           kAlice));
  must(store->register_device(new_device("dev-1"), certificate("dev-1"), kAlice));
  auto of_claim = [](const std::string& id, const std::string& claim) {
    BundleRecord b = bundle_of(id, {});
    b.claim = claim;
    return b;
  };

  // Refused, and nothing recorded: an unknown claim, a claim and devices, a bad claim name.
  require_error(store->record_bundle(of_claim("b-1", "line-9"), kAlice), Errc::not_found,
                "claim line-9");
  BundleRecord both = bundle_of("b-1", {active_certificate(*store, "dev-1")});
  both.claim = "line-1";
  require_error(store->record_bundle(both, kAlice), Errc::invalid_input, "no device");
  require_error(store->record_bundle(of_claim("b-1", "line/1"), kAlice), Errc::invalid_input);
  require_error(store->get_bundle("b-1"), Errc::not_found);

  // An active claim's: recorded with no device, its audit row naming the claim.
  const BundleRecord recorded = must(store->record_bundle(of_claim("b-1", "line-1"), kAlice));
  CHECK(recorded.devices.empty());
  CHECK(recorded.with_keys);
  CHECK(must(store->get_bundle("b-1")).sha256 == std::string(64, 'a'));
  const auto rows = must(store->audit_list(0));
  REQUIRE(rows.back().action == "bundle.create");
  CHECK(nlohmann::json::parse(rows.back().details)["claim"] == "line-1");
  // It is downloaded once, as any bundle.
  must(store->claim_bundle_download("b-1", "127.0.0.1", kAlice));
  require_error(store->claim_bundle_download("b-1", "127.0.0.1", kAlice), Errc::conflict);

  // A revoked claim's credential is not bundled.
  must(store->revoke_claim("line-1", RevocationReason::cessation_of_operation, kAlice));
  require_error(store->record_bundle(of_claim("b-2", "line-1"), kAlice), Errc::conflict, "revoked");
  require_error(store->get_bundle("b-2"), Errc::not_found);
  CHECK(must(store->verify_audit()).ok());
}
