// Claims in the registry (ClaimStore): recorded with their certificate, audited with their state,
// fed to the broker through the change feed, revoked with their certificate. Conformance suite:
// runs on SQLite and PostgreSQL.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/registry/fixtures.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::kAlice;
using onboard::test::kNow;
using onboard::test::kTestIssuer;
using onboard::test::must;
using onboard::test::open_test_store;
using onboard::test::raw_exec;
using onboard::test::register_test_device;
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;

namespace {

NewClaim new_claim(std::string name, std::int64_t quota = 10,
                   std::string pattern = "sensor-[0-9]{4}", std::string type = "sensors") {
  return NewClaim{std::move(name), quota, std::move(pattern), std::move(type)};
}

const ClaimAccess* find(const std::vector<ClaimAccess>& claims, std::string_view name) {
  for (const auto& c : claims) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("a claim is recorded with its certificate and reaches the broker's read") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto seq_before = must(store->change_seq());
  const auto cert = test_certificate("factory-1");
  const Claim claim = must(store->create_claim(new_claim("factory-1"), cert, kAlice));
  CHECK(claim.status == ClaimStatus::active);
  CHECK(claim.quota == 10);
  CHECK(claim.quota_used == 0);
  CHECK(claim.expires_at == cert.not_after);
  CHECK(claim.created_by == "alice");
  CHECK(claim.certificate_sha256 == cert.sha256_fingerprint);

  const Claim read = must(store->get_claim("factory-1"));
  CHECK(read.id_pattern == "sensor-[0-9]{4}");
  CHECK(read.device_type == "sensors");
  REQUIRE(must(store->list_claims()).size() == 1);

  // Its certificate is recorded as a claim's: no device, never loaded as a device certificate.
  const auto recorded = must(store->find_certificate_by_fingerprint(cert.sha256_fingerprint));
  CHECK(recorded.kind == CertificateKind::claim);
  CHECK(recorded.device_id.empty());

  // The broker learns of it from the change feed.
  const auto changed = must(store->read_access(AccessQuery::changed_since(seq_before)));
  REQUIRE(changed.claims.has_value());
  const ClaimAccess* access = find(*changed.claims, "factory-1");
  REQUIRE(access != nullptr);
  CHECK(access->certificate_sha256 == cert.sha256_fingerprint);
  CHECK(access->certificate_status == CertificateStatus::active);
  CHECK(access->not_after == cert.not_after);
  CHECK(changed.devices.empty());
  const auto everything = must(store->read_access(AccessQuery::everything()));
  REQUIRE(everything.claims.has_value());
  CHECK(everything.claims->size() == 1);
  CHECK(everything.devices.empty());

  // A device change alone does not make the broker read the claims again.
  const auto seq_after = must(store->change_seq());
  register_test_device(*store, "dev-1");
  CHECK_FALSE(must(store->read_access(AccessQuery::changed_since(seq_after))).claims.has_value());

  const auto events = must(store->audit_list(0));
  CHECK(events.back().action == "device.register");
  CHECK(events[events.size() - 2].action == "claim.create");
  const auto check = must(store->verify_audit());
  CHECK(check.ok());
}

TEST_CASE("a claim with bad input or a taken name is refused and nothing is written") {
  TempDir dir;
  auto store = open_test_store(dir);
  must(store->create_claim(new_claim("factory-1"), test_certificate("factory-1"), kAlice));
  const auto audit_rows = must(store->audit_list(0)).size();
  require_error(store->create_claim(new_claim("factory-2", 0), test_certificate("x"), kAlice),
                Errc::invalid_input, "quota must be 1");
  require_error(
      store->create_claim(new_claim("factory-2", 5, "sensor-(a|b)"), test_certificate("x"), kAlice),
      Errc::invalid_input, "id pattern");
  require_error(store->create_claim(new_claim("factory/2"), test_certificate("x"), kAlice),
                Errc::invalid_input, "claim name contains '/'");
  require_error(store->create_claim(new_claim("factory-2", 5, "x+", "bad type"),
                                    test_certificate("x"), kAlice),
                Errc::invalid_input, "");
  require_error(store->create_claim(new_claim("factory-1"), test_certificate("x"), kAlice),
                Errc::conflict, "claim factory-1 already exists");
  CHECK(must(store->audit_list(0)).size() == audit_rows);
  CHECK(must(store->list_claims()).size() == 1);
  // A claim certificate is never recorded on its own.
  require_error(store->record_certificate(CertificateKind::claim, test_certificate("y"), kAlice),
                Errc::invalid_input, "claim create");
}

TEST_CASE("revoking a claim revokes its certificate and tells the broker") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto cert = test_certificate("factory-1");
  must(store->create_claim(new_claim("factory-1"), cert, kAlice));
  const auto seq = must(store->change_seq());
  const Actor later{"bob", kNow + 60};
  const auto revoked =
      must(store->revoke_claim("factory-1", RevocationReason::key_compromise, later));
  CHECK_FALSE(revoked.already_revoked);
  CHECK(revoked.claim.status == ClaimStatus::revoked);
  CHECK(revoked.claim.revoked_at == kNow + 60);
  CHECK(revoked.serial_hex == cert.serial_hex);
  // On the CRL, and read by the broker as revoked.
  const auto listed = must(store->revoked_certificates(kTestIssuer));
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].serial_hex == cert.serial_hex);
  const auto changed = must(store->read_access(AccessQuery::changed_since(seq)));
  REQUIRE(changed.claims.has_value());
  CHECK(changed.claims->at(0).status == ClaimStatus::revoked);
  CHECK(changed.claims->at(0).certificate_status == CertificateStatus::revoked);

  // Again: an answer, nothing written.
  const auto rows = must(store->audit_list(0)).size();
  CHECK(must(store->revoke_claim("factory-1", RevocationReason::key_compromise, later))
            .already_revoked);
  CHECK(must(store->audit_list(0)).size() == rows);
  require_error(store->revoke_claim("nobody", RevocationReason::unspecified, later),
                Errc::not_found, "claim nobody does not exist");
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("revoking a claim's certificate directly revokes the claim too") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto cert = test_certificate("factory-1");
  must(store->create_claim(new_claim("factory-1"), cert, kAlice));
  const auto seq = must(store->change_seq());
  must(store->revoke_certificate(cert.sha256_fingerprint, RevocationReason::unspecified, kAlice));
  CHECK(must(store->get_claim("factory-1")).status == ClaimStatus::revoked);
  CHECK(must(store->read_access(AccessQuery::changed_since(seq))).claims.has_value());
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a claim changed behind the store is named by audit verify") {
  TempDir dir;
  auto store = open_test_store(dir);
  must(store->create_claim(new_claim("factory-1", 10), test_certificate("factory-1"), kAlice));
  REQUIRE(must(store->verify_audit()).ok());
  raw_exec(dir, "UPDATE claims SET quota = 1000000 WHERE name = 'factory-1'");
  const auto check = must(store->verify_audit());
  CHECK_FALSE(check.ok());
  CHECK(check.entity == "claim factory-1");
  CHECK_THAT(check.problem, Catch::Contains("changed outside the registry"));
}

// ---- renewal over MQTT ----------------------------------------------------------------------

namespace {

// The same-key check a renewal makes, here by fingerprint: records carry no real key.
SameKey key_of(const NewCertificate& certificate) {
  return [fingerprint = certificate.sha256_fingerprint](const Certificate& c) {
    return c.sha256_fingerprint == fingerprint;
  };
}
SameKey no_key() {
  return [](const Certificate&) { return false; };
}

CertificateStatus status_of(Store& store, const NewCertificate& certificate) {
  return must(store.find_certificate_by_fingerprint(certificate.sha256_fingerprint)).status;
}

// The grace period's sweep as serve runs it: the scan, then the revocation of what it found.
std::vector<std::string> sweep(Store& store, UnixTime renewed_by, const Actor& actor = kAlice) {
  return must(store.supersede_renewed(must(store.renewals_due(renewed_by)), renewed_by, actor));
}

// A renewal of `presented` recorded as a new certificate (its not_before `issued`), at `issued`
// or once `presented` is in date.
NewCertificate renew_from(Store& store, const std::string& id, const NewCertificate& presented,
                          UnixTime issued = kNow) {
  auto next = test_certificate(id);
  next.not_before = issued;
  const Actor at{"alice", std::max(issued, presented.not_before)};
  const auto outcome =
      must(store.renew_device(id, presented.sha256_fingerprint, next, no_key(), at));
  REQUIRE(outcome.refusal == RenewRefusal::none);
  REQUIRE_FALSE(outcome.repeated);
  return next;
}

// A new store with dev-1 registered (A) and renewed once (B, issued at kNow), B not connected yet.
struct RenewedOnce {
  TempDir dir;
  std::unique_ptr<Store> store = open_test_store(dir);
  NewCertificate a = register_test_device(*store, "dev-1");
  NewCertificate b = renew_from(*store, "dev-1", a, kNow);
};

// The registry in `dir` (its store closed) as version 5 left it: no column for a certificate's
// renewal link (the renewals' audit rows name it). SQLite goes back to version 4, whose version 5
// step rebuilds the certificates table without the column.
void back_to_before_renewal_links(const TempDir& dir) {
  if (onboard::test::kTestBackend == Backend::sqlite) {
    raw_exec(dir, "DROP TABLE claims; UPDATE meta SET schema_version = 4");
  } else {
    raw_exec(dir,
             "ALTER TABLE certificates DROP COLUMN renews; UPDATE meta SET schema_version = 5");
  }
}

std::vector<std::string> connect_with(Store& store, const std::string& id,
                                      const NewCertificate& with) {
  return must(store.supersede_predecessors(id, with.sha256_fingerprint, kAlice));
}

}  // namespace

TEST_CASE(
    "a renewal records the new certificate beside the presented one and a retry writes "
    "nothing") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto old_cert = register_test_device(*store, "dev-1");
  const auto seq = must(store->change_seq());
  const auto next = test_certificate("dev-1");

  const auto renewed =
      must(store->renew_device("dev-1", old_cert.sha256_fingerprint, next, no_key(), kAlice));
  CHECK(renewed.refusal == RenewRefusal::none);
  CHECK_FALSE(renewed.repeated);
  CHECK(renewed.certificate.sha256_fingerprint == next.sha256_fingerprint);
  CHECK(status_of(*store, old_cert) == CertificateStatus::active);
  CHECK(status_of(*store, next) == CertificateStatus::active);
  const auto changed = must(store->read_access(AccessQuery::changed_since(seq)));
  REQUIRE(changed.devices.size() == 1);
  CHECK(changed.devices[0].certificates.size() == 2);
  CHECK(must(store->audit_list(0)).back().action == "certificate.renew");

  // A retry whose key is the new certificate's: that certificate, and nothing written.
  const auto seq_after = must(store->change_seq());
  const auto retry = must(store->renew_device("dev-1", old_cert.sha256_fingerprint,
                                              test_certificate("dev-1"), key_of(next), kAlice));
  CHECK(retry.repeated);
  CHECK(retry.certificate.sha256_fingerprint == next.sha256_fingerprint);
  CHECK(must(store->change_seq()) == seq_after);
  CHECK(must(store->certificates_of("dev-1")).size() == 2);
  // The presented certificate's own key is no retry: it is the one being replaced.
  const auto same_key = must(store->renew_device("dev-1", next.sha256_fingerprint,
                                                 test_certificate("dev-1"), key_of(next), kAlice));
  CHECK_FALSE(same_key.repeated);
  CHECK(must(store->certificates_of("dev-1")).size() == 3);
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a renewal is refused for an unknown or inactive device and a certificate not current") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto one = register_test_device(*store, "dev-1");
  const auto two = register_test_device(*store, "dev-2");
  const auto seq = must(store->change_seq());
  auto refusal = [&](std::string_view id, const NewCertificate& presented, const Actor& actor) {
    return must(store->renew_device(id, presented.sha256_fingerprint, test_certificate(id),
                                    no_key(), actor))
        .refusal;
  };
  CHECK(refusal("dev-9", one, kAlice) == RenewRefusal::device_unknown);
  CHECK(refusal("dev-1", two, kAlice) == RenewRefusal::certificate_not_current);
  const Actor expired{"alice", one.not_after};
  CHECK(refusal("dev-1", one, expired) == RenewRefusal::certificate_not_current);
  must(store->set_device_enabled("dev-2", false, kAlice));
  CHECK(refusal("dev-2", two, kAlice) == RenewRefusal::device_not_active);
  must(store->revoke_certificate(one.sha256_fingerprint, RevocationReason::unspecified, kAlice));
  CHECK(refusal("dev-1", one, kAlice) == RenewRefusal::certificate_not_current);
  require_error(
      store->renew_device("dev-1", "not hex", test_certificate("dev-1"), no_key(), kAlice),
      Errc::invalid_input);
  // Only the disable and the revoke above wrote anything.
  CHECK(must(store->change_seq()) == seq + 2);
  CHECK(must(store->certificates_of("dev-1")).size() == 1);
  CHECK(must(store->certificates_of("dev-2")).size() == 1);
}

TEST_CASE("a device cannot pile up renewed certificates that never connect") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto current = register_test_device(*store, "dev-1");
  std::vector<NewCertificate> pending;
  for (std::size_t i = 0; i < kMaxPendingRenewals; ++i) {
    pending.push_back(test_certificate("dev-1"));
    REQUIRE(must(store->renew_device("dev-1", current.sha256_fingerprint, pending.back(), no_key(),
                                     kAlice))
                .refusal == RenewRefusal::none);
  }
  const auto seq = must(store->change_seq());
  CHECK(must(store->renew_device("dev-1", current.sha256_fingerprint, test_certificate("dev-1"),
                                 no_key(), kAlice))
            .refusal == RenewRefusal::too_many_pending);
  CHECK(must(store->change_seq()) == seq);
  // A retry of a pending one is still answered, and one connect clears the way.
  CHECK(must(store->renew_device("dev-1", current.sha256_fingerprint, test_certificate("dev-1"),
                                 key_of(pending[0]), kAlice))
            .repeated);
  must(store->supersede_predecessors("dev-1", pending.back().sha256_fingerprint, kAlice));
  CHECK(must(store->renew_device("dev-1", pending.back().sha256_fingerprint,
                                 test_certificate("dev-1"), no_key(), kAlice))
            .refusal == RenewRefusal::none);
}

TEST_CASE("the successor's connect and the end of the grace period supersede the old certificate") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto a1 = register_test_device(*store, "dev-a");
  const auto b1 = register_test_device(*store, "dev-b");
  const auto c1 = register_test_device(*store, "dev-c");
  auto a2 = test_certificate("dev-a"), b2 = test_certificate("dev-b"),
       c2 = test_certificate("dev-c");
  b2.not_before = kNow + 100;  // issued later than a2
  for (auto [id, old_cert, next] : {std::tuple{"dev-a", &a1, &a2}, std::tuple{"dev-b", &b1, &b2},
                                    std::tuple{"dev-c", &c1, &c2}}) {
    REQUIRE(must(store->renew_device(id, old_cert->sha256_fingerprint, *next, no_key(), kAlice))
                .refusal == RenewRefusal::none);
  }

  // The old certificate connecting supersedes nothing; the new one supersedes the old.
  CHECK(must(store->supersede_predecessors("dev-a", a1.sha256_fingerprint, kAlice)).empty());
  CHECK(status_of(*store, a1) == CertificateStatus::active);
  const auto seq = must(store->change_seq());
  CHECK(must(store->supersede_predecessors("dev-a", a2.sha256_fingerprint, kAlice)) ==
        std::vector<std::string>{a1.serial_hex});
  const auto revoked = must(store->find_certificate_by_fingerprint(a1.sha256_fingerprint));
  CHECK(revoked.status == CertificateStatus::revoked);
  CHECK(revoked.revocation_reason == RevocationReason::superseded);
  CHECK(status_of(*store, a2) == CertificateStatus::active);
  const auto changed = must(store->read_access(AccessQuery::changed_since(seq)));
  REQUIRE(changed.devices.size() == 1);
  CHECK(changed.devices[0].id == "dev-a");
  CHECK(must(store->audit_list(0)).back().action == "certificate.supersede");
  CHECK(must(store->supersede_predecessors("dev-a", a2.sha256_fingerprint, kAlice)).empty());
  // Another device's certificate supersedes nothing of this one.
  CHECK(must(store->supersede_predecessors("dev-b", c2.sha256_fingerprint, kAlice)).empty());
  CHECK(status_of(*store, b1) == CertificateStatus::active);

  // The grace period: successors issued at or before the cut-off end their predecessors'. dev-b's
  // was issued after it; dev-c is disabled and left as it is.
  must(store->set_device_enabled("dev-c", false, kAlice));
  CHECK(sweep(*store, kNow - 1).empty());
  CHECK(sweep(*store, kNow + 50).empty());
  CHECK(status_of(*store, b1) == CertificateStatus::active);
  CHECK(status_of(*store, c1) == CertificateStatus::active);
  CHECK(sweep(*store, kNow + 100) == std::vector<std::string>{b1.serial_hex});
  CHECK(must(store->find_certificate_by_fingerprint(b1.sha256_fingerprint)).revocation_reason ==
        RevocationReason::superseded);
  CHECK(status_of(*store, b2) == CertificateStatus::active);
  CHECK(status_of(*store, c1) == CertificateStatus::active);
  CHECK(sweep(*store, kNow + 1000).empty());
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("two renewals with different keys: the first installed wins and is never swept") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  const auto c = renew_from(*store, "dev-1", a, kNow + 10);  // B's answer lost, another key

  // No connect within the grace period: only what was renewed goes, never a renewal, since the
  // device may hold either.
  CHECK(sweep(*store, kNow + 1000) == std::vector<std::string>{a.serial_hex});
  CHECK(status_of(*store, b) == CertificateStatus::active);
  CHECK(status_of(*store, c) == CertificateStatus::active);
  CHECK(sweep(*store, kNow + 100'000).empty());

  // The device installs B (a late answer): its connect supersedes its waiting sibling C.
  CHECK(connect_with(*store, "dev-1", b) == std::vector<std::string>{c.serial_hex});
  CHECK(status_of(*store, b) == CertificateStatus::active);
  CHECK(must(store->find_certificate_by_fingerprint(c.sha256_fingerprint)).revocation_reason ==
        RevocationReason::superseded);
  CHECK(sweep(*store, kNow + 100'000).empty());
  CHECK(status_of(*store, b) == CertificateStatus::active);
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a connect with either of two renewals supersedes the renewed one and the other") {
  for (const bool first : {true, false}) {
    RenewedOnce renewed;
    auto& [dir, store, a, b] = renewed;
    const auto c = renew_from(*store, "dev-1", a, kNow + 10);
    const auto& kept = first ? b : c;
    const auto& other = first ? c : b;
    // Within the grace period: the old certificate connecting supersedes nothing.
    CHECK(connect_with(*store, "dev-1", a).empty());
    std::vector<std::string> expected{a.serial_hex, other.serial_hex};
    std::sort(expected.begin(), expected.end());
    auto got = connect_with(*store, "dev-1", kept);
    std::sort(got.begin(), got.end());
    CHECK(got == expected);
    CHECK(status_of(*store, kept) == CertificateStatus::active);
    CHECK(status_of(*store, a) == CertificateStatus::revoked);
    CHECK(status_of(*store, other) == CertificateStatus::revoked);
    // The device renews again from the one it holds: the way is clear.
    const auto d = renew_from(*store, "dev-1", kept, kNow + 20);
    CHECK(connect_with(*store, "dev-1", d) == std::vector<std::string>{kept.serial_hex});
  }
}

TEST_CASE("the grace period is counted from the latest waiting renewal") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  const auto c = renew_from(*store, "dev-1", a, kNow + 100);
  // B's grace is over, C's is not: the device renewed A again and may still be waiting for C.
  CHECK(sweep(*store, kNow + 50).empty());
  CHECK(status_of(*store, a) == CertificateStatus::active);
  CHECK(sweep(*store, kNow + 100) == std::vector<std::string>{a.serial_hex});
  // A renewal an operator revoked holds nothing back, and one left active still counts.
  const auto x = register_test_device(*store, "dev-2");
  const auto y = renew_from(*store, "dev-2", x, kNow + 500);
  const auto z = renew_from(*store, "dev-2", x, kNow);
  must(store->revoke_certificate(y.sha256_fingerprint, RevocationReason::unspecified, kAlice));
  CHECK(sweep(*store, kNow + 100) == std::vector<std::string>{x.serial_hex});
  CHECK(status_of(*store, z) == CertificateStatus::active);
  // A certificate whose only renewal was revoked is not renewed: nothing to end.
  const auto p = register_test_device(*store, "dev-3");
  const auto q = renew_from(*store, "dev-3", p, kNow);
  must(store->revoke_certificate(q.sha256_fingerprint, RevocationReason::unspecified, kAlice));
  CHECK(sweep(*store, kNow + 100'000).empty());
  CHECK(status_of(*store, p) == CertificateStatus::active);
}

TEST_CASE("a renewal of a renewed certificate: the sweep ends each step and a connect the rest") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  const auto c = renew_from(*store, "dev-1", a, kNow + 10);
  // The grace period ends A; the device, holding B, renews it (C still waits: one pending).
  CHECK(sweep(*store, kNow + 50) == std::vector<std::string>{a.serial_hex});
  const auto d = renew_from(*store, "dev-1", b, kNow + 100);
  // Three certificates besides one: a renewal of B beyond kMaxPendingRenewals is refused.
  CHECK(must(store->renew_device("dev-1", b.sha256_fingerprint, test_certificate("dev-1"), no_key(),
                                 kAlice))
            .refusal == RenewRefusal::too_many_pending);

  // D connects: B (what it renews) and C (a renewal of B's parent, beside D's line) go.
  std::vector<std::string> expected{b.serial_hex, c.serial_hex};
  std::sort(expected.begin(), expected.end());
  auto got = connect_with(*store, "dev-1", d);
  std::sort(got.begin(), got.end());
  CHECK(got == expected);
  CHECK(status_of(*store, d) == CertificateStatus::active);
  CHECK(sweep(*store, kNow + 100'000).empty());
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("a connect with C instead supersedes B and B's own renewal") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  const auto c = renew_from(*store, "dev-1", a, kNow + 10);
  CHECK(sweep(*store, kNow + 50) == std::vector<std::string>{a.serial_hex});
  const auto d = renew_from(*store, "dev-1", b, kNow + 100);
  // The grace period of D ends B, never D nor C (renewals the device may hold).
  CHECK(sweep(*store, kNow + 200) == std::vector<std::string>{b.serial_hex});
  CHECK(status_of(*store, c) == CertificateStatus::active);
  CHECK(status_of(*store, d) == CertificateStatus::active);
  // C connects after all: D, a descendant of C's parent A but not of C, goes.
  CHECK(connect_with(*store, "dev-1", c) == std::vector<std::string>{d.serial_hex});
  CHECK(status_of(*store, c) == CertificateStatus::active);
}

TEST_CASE("a connect never supersedes a renewal of the certificate it connected with") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  CHECK(connect_with(*store, "dev-1", b) == std::vector<std::string>{a.serial_hex});
  // B renews to D, whose answer is lost; the device connects with B again.
  const auto d = renew_from(*store, "dev-1", b, kNow + 10);
  CHECK(connect_with(*store, "dev-1", b).empty());
  CHECK(status_of(*store, d) == CertificateStatus::active);
  // A certificate of another device, or not active, supersedes nothing (the positive control is
  // D's own connect below).
  const auto other = register_test_device(*store, "dev-2");
  CHECK(connect_with(*store, "dev-1", other).empty());
  CHECK(connect_with(*store, "dev-1", a).empty());
  CHECK(status_of(*store, b) == CertificateStatus::active);
  CHECK(connect_with(*store, "dev-1", d) == std::vector<std::string>{b.serial_hex});
}

TEST_CASE("a connect that replaces nothing does not wait for the write lock", "[sqlite]") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  auto second = open_test_store(dir);  // opened (which may write) before the lock is taken
  // Another writer holds the registry's write lock.
  SQLite::Database other(onboard::test::registry_path(dir), SQLite::OPEN_READWRITE);
  other.exec("BEGIN IMMEDIATE");
  // The old certificate's connect while its renewal waits: answered at once, nothing written.
  const auto started = std::chrono::steady_clock::now();
  CHECK(connect_with(*store, "dev-1", a).empty());
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(1));
  // The renewal's connect has something to revoke: it waits for the lock (the positive control),
  // and revokes A once the other writer is done.
  auto pending = std::async(std::launch::async, [&] {
    return second->supersede_predecessors("dev-1", b.sha256_fingerprint, kAlice);
  });
  CHECK(pending.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout);
  other.exec("COMMIT");
  CHECK(must(pending.get()) == std::vector<std::string>{a.serial_hex});
}

TEST_CASE("the sweep's write looks again at what its scan found") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  const auto p = register_test_device(*store, "dev-2");
  renew_from(*store, "dev-2", p, kNow);
  const auto x = register_test_device(*store, "dev-3");
  renew_from(*store, "dev-3", x, kNow);
  const auto m = register_test_device(*store, "dev-4");
  renew_from(*store, "dev-4", m, kNow);
  const auto due = must(store->renewals_due(kNow + 50));
  REQUIRE(due.size() == 4);
  // Between the scan and the write: dev-1's renewal connects, dev-2 is disabled, dev-3 renews
  // again (a new deadline for its old certificate).
  CHECK(connect_with(*store, "dev-1", b) == std::vector<std::string>{a.serial_hex});
  must(store->set_device_enabled("dev-2", false, kAlice));
  renew_from(*store, "dev-3", x, kNow + 100);
  const auto revoked_at = must(store->find_certificate_by_fingerprint(a.sha256_fingerprint));
  const auto seq = must(store->change_seq());

  const Actor later{"alice", kNow + 5000};
  // Only dev-4's is still due (the positive control).
  CHECK(must(store->supersede_renewed(due, kNow + 50, later)) ==
        std::vector<std::string>{m.serial_hex});
  CHECK(must(store->change_seq()) == seq + 1);
  // dev-1's is not revoked twice: its record is the connect's.
  const auto a_now = must(store->find_certificate_by_fingerprint(a.sha256_fingerprint));
  CHECK(a_now.revoked_at == revoked_at.revoked_at);
  CHECK(status_of(*store, p) == CertificateStatus::active);
  CHECK(status_of(*store, x) == CertificateStatus::active);
  // A candidate named with another device, or unknown, is never revoked.
  CHECK(must(store->supersede_renewed(
                 {{"dev-9", x.sha256_fingerprint}, {"dev-3", std::string(64, 'f')}}, kNow + 200,
                 later))
            .empty());
  CHECK(status_of(*store, x) == CertificateStatus::active);
  CHECK(must(store->change_seq()) == seq + 1);
  CHECK(must(store->verify_audit()).ok());
}

TEST_CASE("an upgraded registry links the renewals already waiting to what they renew") {
  TempDir dir;
  NewCertificate a, b, c;
  {
    auto store = open_test_store(dir);
    a = register_test_device(*store, "dev-1");
    b = renew_from(*store, "dev-1", a, kNow);
    c = renew_from(*store, "dev-1", a, kNow + 10);
  }
  back_to_before_renewal_links(dir);
  auto store = open_test_store(dir);
  CHECK(onboard::test::raw_int64(dir, "SELECT schema_version FROM meta") == sql::kSchemaVersion);
  CHECK(onboard::test::raw_int64(dir, "SELECT count(*) FROM certificates WHERE renews = '" +
                                          a.sha256_fingerprint + "'") == 2);
  CHECK(onboard::test::raw_int64(dir, "SELECT count(*) FROM certificates WHERE renews IS NULL") ==
        1);
  // The rules hold for them: B's connect supersedes A and C.
  std::vector<std::string> expected{a.serial_hex, c.serial_hex};
  std::sort(expected.begin(), expected.end());
  auto got = connect_with(*store, "dev-1", b);
  std::sort(got.begin(), got.end());
  CHECK(got == expected);
  const auto check = must(store->verify_audit());
  INFO(check.problem);
  CHECK(check.ok());
}

TEST_CASE("a renewal link to another device's certificate never revokes it") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto a = register_test_device(*store, "dev-1");
  const auto x = register_test_device(*store, "dev-2");
  // A damaged or forged row: dev-2's certificate recorded as renewing dev-1's.
  raw_exec(dir, "UPDATE certificates SET renews = '" + a.sha256_fingerprint +
                    "' WHERE sha256_fingerprint = '" + x.sha256_fingerprint + "'");
  CHECK(must(store->renewals_due(kNow + 100'000)).empty());
  CHECK(sweep(*store, kNow + 100'000).empty());
  CHECK(status_of(*store, a) == CertificateStatus::active);
  // Handed in by name anyway, it is not due under the write lock either.
  CHECK(must(store->supersede_renewed({{"dev-1", a.sha256_fingerprint}}, kNow + 100'000, kAlice))
            .empty());
  CHECK(status_of(*store, a) == CertificateStatus::active);
  // dev-2 connecting with it supersedes nothing of dev-1's.
  CHECK(connect_with(*store, "dev-2", x).empty());
  CHECK(must(store->predecessors_of("dev-2", x.sha256_fingerprint)).empty());
  CHECK(status_of(*store, a) == CertificateStatus::active);

  // dev-1's own renewal is what makes A due (the positive control), and the foreign link, issued
  // later than any cut-off here, does not hold it back.
  raw_exec(dir, "UPDATE certificates SET not_before = " + std::to_string(kNow + 1'000'000) +
                    " WHERE sha256_fingerprint = '" + x.sha256_fingerprint + "'");
  const auto b = renew_from(*store, "dev-1", a, kNow);
  CHECK(sweep(*store, kNow + 100) == std::vector<std::string>{a.serial_hex});
  CHECK(status_of(*store, b) == CertificateStatus::active);
  CHECK(status_of(*store, x) == CertificateStatus::active);
}

TEST_CASE("the sweep's write takes one bounded batch of candidates") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto a = register_test_device(*store, "dev-1");
  renew_from(*store, "dev-1", a, kNow);
  // A batch of candidates: dev-1's, the rest unknown (left as they are).
  std::vector<DueRenewal> due{{"dev-1", a.sha256_fingerprint}};
  for (std::size_t i = 1; i < kSupersedeBatch; ++i) {
    char fingerprint[65];
    std::snprintf(fingerprint, sizeof fingerprint, "%064zx", i);
    due.push_back({"dev-" + std::to_string(i + 1), fingerprint});
  }
  const auto seq = must(store->change_seq());
  // One more than a batch is refused whole, nothing written.
  auto too_many = due;
  too_many.push_back({"dev-1", a.sha256_fingerprint});
  require_error(store->supersede_renewed(too_many, kNow + 100, kAlice), Errc::invalid_input);
  CHECK(must(store->change_seq()) == seq);
  CHECK(status_of(*store, a) == CertificateStatus::active);
  // A full batch is taken (the positive control).
  CHECK(must(store->supersede_renewed(due, kNow + 100, kAlice)) ==
        std::vector<std::string>{a.serial_hex});
  CHECK(status_of(*store, a) == CertificateStatus::revoked);
}

TEST_CASE("what a connect would supersede is read without writing") {
  RenewedOnce renewed;
  auto& [dir, store, a, b] = renewed;
  const auto seq = must(store->change_seq());
  CHECK(must(store->predecessors_of("dev-1", a.sha256_fingerprint)).empty());
  CHECK(must(store->predecessors_of("dev-9", b.sha256_fingerprint)).empty());
  CHECK(must(store->predecessors_of("dev-1", b.sha256_fingerprint)) ==
        std::vector<std::string>{a.serial_hex});
  CHECK(must(store->change_seq()) == seq);
  CHECK(status_of(*store, a) == CertificateStatus::active);
  require_error(store->predecessors_of("dev-1", "not hex"), Errc::invalid_input);
  require_error(store->predecessors_of("not an id!", b.sha256_fingerprint), Errc::invalid_input);
  // What the connect then revokes is what was read.
  CHECK(connect_with(*store, "dev-1", b) == std::vector<std::string>{a.serial_hex});
  CHECK(must(store->predecessors_of("dev-1", b.sha256_fingerprint)).empty());
}

TEST_CASE("an upgrade links a renewal only to a certificate of the same device") {
  TempDir dir;
  NewCertificate a, b, c, x;
  {
    auto store = open_test_store(dir);
    a = register_test_device(*store, "dev-1");
    x = register_test_device(*store, "dev-2");
    b = renew_from(*store, "dev-1", a, kNow);
    c = renew_from(*store, "dev-1", a, kNow + 10);
  }
  // B's audit row made to name dev-2's certificate as the renewal of dev-1's A.
  raw_exec(dir, "UPDATE audit_events SET details = replace(details, '" + b.sha256_fingerprint +
                    "', '" + x.sha256_fingerprint + "') WHERE action = 'certificate.renew'");
  back_to_before_renewal_links(dir);
  auto store = open_test_store(dir);
  CHECK(onboard::test::raw_int64(dir, "SELECT schema_version FROM meta") == sql::kSchemaVersion);
  // dev-2's certificate is linked to nothing; C, whose row is intact, to A (the positive control).
  CHECK(onboard::test::raw_int64(dir,
                                 "SELECT count(*) FROM certificates WHERE renews IS NOT NULL "
                                 "AND sha256_fingerprint = '" +
                                     x.sha256_fingerprint + "'") == 0);
  CHECK(onboard::test::raw_int64(dir, "SELECT count(*) FROM certificates WHERE renews = '" +
                                          a.sha256_fingerprint + "'") == 1);
  CHECK(must(store->find_certificate_by_fingerprint(c.sha256_fingerprint)).renews ==
        a.sha256_fingerprint);
  CHECK(must(store->find_certificate_by_fingerprint(x.sha256_fingerprint)).renews.empty());
}

TEST_CASE("a group commit of enrolments rolls back only the one that fails and keeps the quota") {
  TempDir dir;
  auto store = open_test_store(dir);
  must(store->create_claim(new_claim("line", 2, "dev-[0-9]"), test_certificate("line"), kAlice));
  auto item = [](std::string id, NewCertificate cert) {
    NewDevice device;
    device.id = std::move(id);
    return EnrollItem{"line", device, std::move(cert), kAlice};
  };
  const auto first = test_certificate("dev-1");
  // dev-2 brings dev-1's certificate again: refused by the registry after its quota unit was
  // spent, which its savepoint must give back for dev-3 to get in.
  const std::vector<EnrollItem> items{item("dev-1", first), item("dev-2", first),
                                      item("dev-3", test_certificate("dev-3")),
                                      item("dev-4", test_certificate("dev-4"))};
  const auto results = store->enroll_devices(items);
  REQUIRE(results.size() == 4);
  REQUIRE(results[0].ok());
  CHECK(results[0]->refusal == EnrollRefusal::none);
  CHECK(results[0]->device.type == "sensors");
  CHECK_FALSE(results[1].ok());
  REQUIRE(results[2].ok());
  CHECK(results[2]->refusal == EnrollRefusal::none);
  REQUIRE(results[3].ok());
  CHECK(results[3]->refusal == EnrollRefusal::claim_used_up);
  CHECK(must(store->get_claim("line")).quota_used == 2);
  CHECK(store->get_device("dev-1").ok());
  CHECK_FALSE(store->get_device("dev-2").ok());
  CHECK(store->get_device("dev-3").ok());
  CHECK_FALSE(store->get_device("dev-4").ok());
  const auto audit = must(store->audit_list(0));
  CHECK(std::count_if(audit.begin(), audit.end(),
                      [](const auto& e) { return e.action == "device.enroll"; }) == 2);
  CHECK(must(store->verify_audit()).ok());
}
