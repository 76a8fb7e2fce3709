// Certificates of every kind in the registry: what the CA signs outside the device registry
// (servers, others) is recorded, audited, listed and revocable, and never reaches the broker.
#include <SQLiteCpp/Database.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>

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
using onboard::test::require_error;
using onboard::test::TempDir;
using onboard::test::test_certificate;

namespace {

std::int64_t audit_rows(Store& store) {
  return static_cast<std::int64_t>(must(store.audit_list(0)).size());
}

const DeviceAccess* find_access(const AccessData& data, std::string_view id) {
  auto it = std::find_if(data.devices.begin(), data.devices.end(),
                         [&](const DeviceAccess& d) { return d.id == id; });
  return it == data.devices.end() ? nullptr : &*it;
}

}  // namespace

TEST_CASE("server and other certificates are recorded audited and listed with their kind") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto own = test_certificate("dev");
  must(store->register_device(new_device("dev"), own, kAlice));
  const auto server = test_certificate("broker.example");
  const auto other = test_certificate("dev");  // a CN equal to a device id changes nothing

  const auto recorded = must(store->record_certificate(CertificateKind::server, server, kAlice));
  CHECK(recorded.kind == CertificateKind::server);
  CHECK(recorded.device_id.empty());
  CHECK(recorded.status == CertificateStatus::active);
  must(store->record_certificate(CertificateKind::other, other, kAlice));

  const auto all = must(store->list_certificates({}));
  REQUIRE(all.size() == 3);  // oldest first
  CHECK(all[0].kind == CertificateKind::device);
  CHECK(all[0].device_id == "dev");
  CHECK(all[1].kind == CertificateKind::server);
  CHECK(all[1].serial_hex == server.serial_hex);
  CHECK(all[1].device_id.empty());
  CHECK(all[2].kind == CertificateKind::other);
  CHECK(all[2].subject == "CN=dev");

  const auto servers = must(store->list_certificates({CertificateKind::server, std::nullopt}));
  REQUIRE(servers.size() == 1);
  CHECK(servers[0].sha256_fingerprint == server.sha256_fingerprint);
  CHECK(must(store->list_certificates({std::nullopt, CertificateStatus::revoked})).empty());

  const auto events = must(store->audit_list(2, audit_rows(*store) - 2));
  REQUIRE(events.size() == 2);
  CHECK(events[0].action == "certificate.record");
  CHECK(events[0].subject == server.serial_hex);
  CHECK(events[0].details.find("\"kind\":\"server\"") != std::string::npos);
  CHECK(events[1].details.find("\"kind\":\"other\"") != std::string::npos);
  CHECK(must(store->verify_audit()).ok());

  // Found by fingerprint and by serial, in either case.
  CHECK(must(store->find_certificate_by_fingerprint(other.sha256_fingerprint)).kind ==
        CertificateKind::other);
  std::string lower = server.serial_hex;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  CHECK(must(store->find_certificate_by_serial(lower)).kind == CertificateKind::server);
  require_error(store->find_certificate_by_serial("ABCDEF"), Errc::not_found, "ABCDEF");
  require_error(store->find_certificate_by_serial("xyz"), Errc::invalid_input);
}

TEST_CASE(
    "the broker's access data holds only device certificates even for a CN that is a device id") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto own = test_certificate("dev");
  must(store->register_device(new_device("dev"), own, kAlice));
  const auto other = test_certificate("dev");
  const auto server = test_certificate("dev");
  must(store->record_certificate(CertificateKind::other, other, kAlice));
  must(store->record_certificate(CertificateKind::server, server, kAlice));

  // Both ways the plugin loads: everything at start, and the devices a change names.
  const auto everything = must(store->read_access(AccessQuery::everything()));
  const auto listed = must(store->read_access(AccessQuery::listed({"dev"}, {})));
  for (const AccessData* data : {&everything, &listed}) {
    const auto* dev = find_access(*data, "dev");
    REQUIRE(dev != nullptr);
    REQUIRE(dev->certificates.size() == 1);  // the device's own: the positive control
    CHECK(dev->certificates[0].sha256_fingerprint == own.sha256_fingerprint);
  }
  REQUIRE(must(store->certificates_of("dev")).size() == 1);
}

TEST_CASE("record_certificate refuses a device kind a held key and a duplicate") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto before = audit_rows(*store);
  require_error(store->record_certificate(CertificateKind::device, test_certificate("x"), kAlice),
                Errc::invalid_input, "with its device");
  auto with_key = test_certificate("x");
  with_key.held_key_pem = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n";
  require_error(store->record_certificate(CertificateKind::other, with_key, kAlice),
                Errc::invalid_input, "keys of devices only");
  const auto once = test_certificate("x");
  must(store->record_certificate(CertificateKind::other, once, kAlice));
  require_error(store->record_certificate(CertificateKind::server, once, kAlice), Errc::conflict,
                "already exists");
  CHECK(audit_rows(*store) == before + 1);
  CHECK(must(store->list_certificates({})).size() == 1);
}

TEST_CASE(
    "a revoked server certificate is on its issuer's CRL only and a second revoke writes nothing") {
  TempDir dir;
  auto store = open_test_store(dir);
  const auto server = test_certificate("broker");
  const auto bystander = test_certificate("other-host");
  must(store->record_certificate(CertificateKind::server, server, kAlice));
  must(store->record_certificate(CertificateKind::other, bystander, kAlice));
  const auto seq_before = must(store->change_seq());

  const Actor bob{"bob", kNow + 50};
  const auto outcome = must(
      store->revoke_certificate(server.sha256_fingerprint, RevocationReason::key_compromise, bob));
  CHECK_FALSE(outcome.already_revoked);
  CHECK(outcome.certificate.status == CertificateStatus::revoked);
  CHECK(outcome.certificate.revoked_at == kNow + 50);

  const auto crl = must(store->revoked_certificates(kTestIssuer));
  REQUIRE(crl.size() == 1);
  CHECK(crl[0].serial_hex == server.serial_hex);
  CHECK(crl[0].reason == RevocationReason::key_compromise);
  CHECK(must(store->revoked_certificates("CN=Some Other CA")).empty());
  CHECK(must(store->find_certificate_by_fingerprint(bystander.sha256_fingerprint)).status ==
        CertificateStatus::active);
  // Nothing the broker loads changed: no change row.
  CHECK(must(store->change_seq()) == seq_before);
  const auto last = must(store->audit_list(1, audit_rows(*store) - 1));
  REQUIRE(last.size() == 1);
  CHECK(last[0].action == "certificate.revoke");
  CHECK(last[0].actor == "bob");

  const auto rows = audit_rows(*store);
  const auto again = must(
      store->revoke_certificate(server.sha256_fingerprint, RevocationReason::superseded, kAlice));
  CHECK(again.already_revoked);
  CHECK(again.certificate.revocation_reason == RevocationReason::key_compromise);
  CHECK(audit_rows(*store) == rows);
  require_error(
      store->revoke_certificate(std::string(64, 'f'), RevocationReason::unspecified, kAlice),
      Errc::not_found);
}

TEST_CASE(
    "revoking one device certificate keeps the device names it in the change feed and drops its "
    "held key") {
  TempDir dir;
  auto store = open_test_store(dir);
  auto held = test_certificate("dev");
  held.held_key_pem = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n";
  must(store->register_device(new_device("dev"), held, kAlice));
  must(store->register_device(new_device("bystander"), test_certificate("bystander"), kAlice));
  REQUIRE(must(store->held_key("dev")).has_value());
  const auto seq = must(store->change_seq());

  must(
      store->revoke_certificate(held.sha256_fingerprint, RevocationReason::key_compromise, kAlice));
  CHECK(must(store->get_device("dev")).status == DeviceStatus::active);
  CHECK_FALSE(must(store->held_key("dev")).has_value());
  const auto changes = must(store->changes_since(seq));
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].kind == ChangeKind::device);
  CHECK(changes[0].subject == "dev");
  const auto access = must(store->read_access(AccessQuery::changed_since(seq)));
  const auto* dev = find_access(access, "dev");
  REQUIRE(dev != nullptr);
  REQUIRE(dev->certificates.size() == 1);
  CHECK(dev->certificates[0].status == CertificateStatus::revoked);
  CHECK(find_access(access, "bystander") == nullptr);
  CHECK(must(store->revoked_certificates(kTestIssuer)).size() == 1);
}

TEST_CASE("a serial two issuers share is ambiguous and the fingerprint still finds each") {
  TempDir dir;
  auto store = open_test_store(dir);
  auto first = test_certificate("a");
  auto second = test_certificate("b", "CN=Root");
  second.serial_hex = first.serial_hex;
  must(store->record_certificate(CertificateKind::other, first, kAlice));
  must(store->record_certificate(CertificateKind::other, second, kAlice));
  require_error(store->find_certificate_by_serial(first.serial_hex), Errc::conflict, "fingerprint");
  CHECK(must(store->find_certificate_by_fingerprint(second.sha256_fingerprint)).issuer ==
        "CN=Root");
}

TEST_CASE("root CRL numbers are a sequence apart from the CRL numbers") {
  TempDir dir;
  auto store = open_test_store(dir);
  CHECK(must(store->next_crl_number(kAlice)) == 1);
  CHECK(must(store->next_crl_number(kAlice)) == 2);
  CHECK(must(store->next_root_crl_number(kAlice)) == 1);
  CHECK(must(store->next_root_crl_number(kAlice)) == 2);
  CHECK(must(store->crl_state()).number == 2);
  const auto last = must(store->audit_list(1, audit_rows(*store) - 1));
  CHECK(last[0].action == "crl.issue_root");
}
