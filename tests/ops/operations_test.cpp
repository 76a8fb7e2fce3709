// The operations both front ends (the CLI and the REST server) call, against a real SQLite
// registry and a real CA in a temporary directory: what each records, hands out, refuses, and
// leaves behind when it fails.
#include "ops/operations.h"

#include <SQLiteCpp/Database.h>
#include <openssl/bn.h>
#include <openssl/x509.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "ca/crl.h"
#include "ca/csr.h"
#include "core/digest.h"
#include "core/x509.h"
#include "registry/sqlite_store.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

namespace {

namespace ops = onboard::ops;  // where the operations live: one line to change if they move
using namespace onboard;
using onboard::test::must;
using onboard::test::require_error;
using onboard::test::TempDir;
using registry::DeviceStatus;

// A strong passphrase for held keys (bundle::password_problem accepts it) and a weak one.
const Secret& hold_passphrase() {
  static const Secret passphrase("violet tractor 83 humming Lantern quarry");
  return passphrase;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A registry and a CA of its own (P-256, to keep the suite fast) in a fresh directory.
struct World {
  TempDir dir;
  std::unique_ptr<registry::Store> store;
  std::unique_ptr<ca::Authority> ca;
  std::filesystem::path crl = dir / "crl.pem";
  registry::Actor actor{"alice", unix_now()};

  explicit World(bool intermediate = false) {
    store = must(registry::open_sqlite_store(db_path(), registry::OpenMode::read_write));
    ca::CaInitOptions options;
    options.common_name = "Ops Test Root";
    options.root_key_alg = ca::KeyAlg::p256;
    options.intermediate = intermediate;
    options.intermediate_key_alg = ca::KeyAlg::p256;
    ca = std::make_unique<ca::Authority>(
        must(ca::Authority::create(dir / "data", options, unix_now())));
    REQUIRE(ca->can_sign());
  }
  std::filesystem::path db_path() const { return dir / "registry.db"; }

  ops::RegisterRequest request(const std::string& id) const {
    ops::RegisterRequest r;
    r.device.id = id;
    r.key.key_alg = ca::KeyAlg::p256;
    return r;
  }
  ops::Registered register_one(const std::string& id) {
    return must(ops::register_device(*store, *ca, request(id), actor));
  }
  std::size_t audit_rows() { return must(ops::list_audit(*store, 0, 0)).size(); }
  std::size_t certificates() {
    return must(ops::list_all_certificates(*store, registry::CertificateFilter{})).size();
  }
};

ossl::Ptr<X509_CRL> read_crl(const std::filesystem::path& path) {
  return must(ca::crl_from_pem(read_text(path)));
}

bool crl_lists(const X509_CRL* crl, const std::string& serial_hex) {
  BIGNUM* bn = nullptr;
  REQUIRE(BN_hex2bn(&bn, serial_hex.c_str()) > 0);
  ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
  BN_free(bn);
  REQUIRE(serial != nullptr);
  X509_REVOKED* entry = nullptr;
  const int found = X509_CRL_get0_by_serial(const_cast<X509_CRL*>(crl), &entry, serial);
  ASN1_INTEGER_free(serial);
  return found == 1;
}

long crl_number(const X509_CRL* crl) {
  auto* number =
      static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl, NID_crl_number, nullptr, nullptr));
  REQUIRE(number != nullptr);
  const long value = ASN1_INTEGER_get(number);
  ASN1_INTEGER_free(number);
  return value;
}

bool signed_by(const X509_CRL* crl, const X509* issuer) {
  return X509_CRL_verify(const_cast<X509_CRL*>(crl), X509_get0_pubkey(issuer)) == 1;
}

bool certifies(const ca::IssuedCertificate& issued, const EVP_PKEY* key) {
  return ca::same_public_key(X509_get0_pubkey(issued.cert.get()), key);
}

std::string csr_for(const EVP_PKEY* key, const std::string& cn) {
  return ca::csr_to_pem(must(ca::make_csr(key, cn)).get());
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

// ---- register_device -------------------------------------------------------------------------

TEST_CASE("register_device with a CSR certifies the device's own key and keeps no key") {
  World w;
  auto device_key = must(ca::generate_key(ca::KeyAlg::p256));
  auto request = w.request("sensor-001");
  request.device.name = "Boiler sensor";
  request.device.type = "thermo";
  request.key.csr_pem = csr_for(device_key.get(), "sensor-001");
  auto registered = must(ops::register_device(*w.store, *w.ca, request, w.actor));

  CHECK(registered.device.id == "sensor-001");
  CHECK(registered.device.name == "Boiler sensor");
  CHECK(registered.device.status == DeviceStatus::active);
  CHECK(certifies(registered.issuance.certificate, device_key.get()));
  CHECK(registered.issuance.certificate.info.subject == "CN=sensor-001");
  CHECK(registered.issuance.private_key == nullptr);
  CHECK_FALSE(registered.issuance.key_held);
  // The certificate verifies under the CA that issued it.
  CHECK(X509_verify(registered.issuance.certificate.cert.get(), X509_get0_pubkey(w.ca->issuer())) ==
        1);

  auto details = must(ops::device_details(*w.store, "sensor-001"));
  CHECK(details.device.type == "thermo");
  REQUIRE(details.certificates.size() == 1);
  CHECK(details.certificates[0].sha256_fingerprint ==
        registered.issuance.certificate.info.sha256_fingerprint);
  CHECK(details.certificates[0].status == registry::CertificateStatus::active);
  CHECK_FALSE(details.held_key);
}

TEST_CASE(
    "register_device refuses a CSR for another id or with a key to hold and records nothing") {
  World w;
  auto device_key = must(ca::generate_key(ca::KeyAlg::p256));
  auto request = w.request("sensor-001");
  request.key.csr_pem = csr_for(device_key.get(), "sensor-002");
  request.key.csr_label = "sensor.csr";
  require_error(ops::register_device(*w.store, *w.ca, request, w.actor), Errc::invalid_input,
                "sensor.csr: the CSR's CN is 'sensor-002', not the device id 'sensor-001'");

  request.key.csr_pem = csr_for(device_key.get(), "sensor-001");
  request.key.hold_passphrase = &hold_passphrase();
  require_error(ops::register_device(*w.store, *w.ca, request, w.actor), Errc::invalid_input,
                "there is no key to hold");

  request.key.csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n";
  request.key.hold_passphrase = nullptr;
  require_error(ops::register_device(*w.store, *w.ca, request, w.actor), Errc::invalid_input,
                "sensor.csr: ");

  require_error(ops::get_device(*w.store, "sensor-001"), Errc::not_found);
  CHECK(w.certificates() == 0);
  // Positive control: the matching CSR alone is accepted.
  request.key.csr_pem = csr_for(device_key.get(), "sensor-001");
  CHECK(ops::register_device(*w.store, *w.ca, request, w.actor).ok());
}

TEST_CASE("register_device without a CSR hands out the key it made and keeps no copy") {
  World w;
  auto registered = w.register_one("sensor-001");
  REQUIRE(registered.issuance.private_key != nullptr);
  CHECK_FALSE(registered.issuance.key_held);
  CHECK(certifies(registered.issuance.certificate, registered.issuance.private_key.get()));
  CHECK_FALSE(must(w.store->held_key("sensor-001")));
  // The key is of the algorithm asked for.
  CHECK(EVP_PKEY_get_base_id(registered.issuance.private_key.get()) == EVP_PKEY_EC);
}

TEST_CASE("register_device with a hold passphrase keeps the key encrypted and hands out none") {
  World w;
  auto request = w.request("sensor-001");
  request.key.hold_passphrase = &hold_passphrase();
  auto registered = must(ops::register_device(*w.store, *w.ca, request, w.actor));
  CHECK(registered.issuance.private_key == nullptr);
  CHECK(registered.issuance.key_held);

  auto held = must(w.store->held_key("sensor-001"));
  REQUIRE(held);
  CHECK(held->certificate_sha256 == registered.issuance.certificate.info.sha256_fingerprint);
  CHECK(held->encrypted_pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
  // It opens with the passphrase, and it is the certified key...
  auto key = must(ca::private_key_from_pem(held->encrypted_pem, &hold_passphrase()));
  CHECK(certifies(registered.issuance.certificate, key.get()));
  // ...and with nothing else.
  const Secret wrong("violet tractor 83 humming Lantern quarrY");
  require_error(ca::private_key_from_pem(held->encrypted_pem, &wrong), Errc::bad_passphrase);
  require_error(ca::private_key_from_pem(held->encrypted_pem), Errc::bad_passphrase);
}

TEST_CASE("register_device refuses a weak hold passphrase before making anything") {
  World w;
  const Secret weak("password");
  auto request = w.request("sensor-001");
  request.key.hold_passphrase = &weak;
  int handed_out = 0;
  auto result = ops::register_device(*w.store, *w.ca, request, w.actor, [&](const ops::Issuance&) {
    ++handed_out;
    return ok_status();
  });
  require_error(result, Errc::invalid_input, "hold passphrase: ");
  CHECK(handed_out == 0);
  require_error(ops::get_device(*w.store, "sensor-001"), Errc::not_found);
  CHECK(w.certificates() == 0);
  CHECK(ops::hold_passphrase_problem(weak));
  CHECK_FALSE(ops::hold_passphrase_problem(hold_passphrase()));
}

TEST_CASE("register_device refuses a duplicate id as a conflict before any key is made") {
  World w;
  auto first = w.register_one("sensor-001");
  const auto audit_before = w.audit_rows();
  int handed_out = 0;
  auto again = ops::register_device(*w.store, *w.ca, w.request("sensor-001"), w.actor,
                                    [&](const ops::Issuance&) {
                                      ++handed_out;
                                      return ok_status();
                                    });
  require_error(again, Errc::conflict, "device sensor-001 already exists");
  CHECK(handed_out == 0);
  CHECK(w.audit_rows() == audit_before);
  auto certificates = must(ops::list_certificates(*w.store, "sensor-001"));
  REQUIRE(certificates.size() == 1);
  CHECK(certificates[0].sha256_fingerprint == first.issuance.certificate.info.sha256_fingerprint);
}

TEST_CASE("register_device refuses a bad id or bad descriptive fields naming the field") {
  World w;
  struct Case {
    const char* what;
    std::function<void(ops::RegisterRequest&)> spoil;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"empty id", [](auto& r) { r.device.id = ""; }, ""},
      {"id with a slash", [](auto& r) { r.device.id = "a/b"; }, ""},
      {"id with a wildcard", [](auto& r) { r.device.id = "a+b"; }, ""},
      {"name with a newline", [](auto& r) { r.device.name = "a\nb"; }, "name holds a control"},
      {"long name", [](auto& r) { r.device.name = std::string(129, 'n'); }, "name is 129 bytes"},
      {"location with ESC", [](auto& r) { r.device.location = "\x1b[2J"; }, "location holds"},
      {"long firmware", [](auto& r) { r.device.firmware = std::string(65, 'f'); },
       "firmware is 65"},
      {"bad type", [](auto& r) { r.device.type = "a b"; }, "type: "},
      {"metadata not an object", [](auto& r) { r.device.metadata = "[1]"; }, "metadata: "},
      {"metadata not JSON", [](auto& r) { r.device.metadata = "{"; }, "metadata: "},
      {"metadata value with a control", [](auto& r) { r.device.metadata = R"({"k":"a\u001bb"})"; },
       "metadata value holds"},
      {"metadata key with a control", [](auto& r) { r.device.metadata = R"({"a\nb":1})"; },
       "metadata key holds"},
      {"metadata too long",
       [](auto& r) { r.device.metadata = R"({"k":")" + std::string(4100, 'x') + "\"}"; },
       "the limit is 4096"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto request = w.request("sensor-001");
    c.spoil(request);
    require_error(ops::register_device(*w.store, *w.ca, request, w.actor), Errc::invalid_input,
                  c.says);
  }
  CHECK(w.certificates() == 0);
  CHECK(must(ops::list_devices(*w.store, registry::DeviceFilter{})).devices.empty());
  // Positive control: the largest valid values are accepted.
  auto request = w.request("sensor-001");
  request.device.name = std::string(128, 'n');
  request.device.location = "Kühlraum 7";
  request.device.firmware = std::string(64, 'f');
  request.device.metadata = R"({"floor":2,"tags":["a"]})";
  auto registered = must(ops::register_device(*w.store, *w.ca, request, w.actor));
  CHECK(registered.device.location == "Kühlraum 7");
}

TEST_CASE("register_device calls the hand-out hook after issuance and before recording") {
  World w;
  bool called = false;
  auto registered = ops::register_device(*w.store, *w.ca, w.request("sensor-001"), w.actor,
                                         [&](const ops::Issuance& issuance) -> Status {
                                           called = true;
                                           // The CLI writes key and certificate here: both exist...
                                           CHECK(issuance.private_key != nullptr);
                                           CHECK(issuance.certificate.cert != nullptr);
                                           // ...and the registry does not know the device yet.
                                           CHECK_FALSE(w.store->get_device("sensor-001").ok());
                                           return ok_status();
                                         });
  REQUIRE(registered.ok());
  CHECK(called);
  CHECK(ops::get_device(*w.store, "sensor-001").ok());
}

TEST_CASE("register_device records nothing when the hand-out hook fails") {
  World w;
  const auto audit_before = w.audit_rows();
  auto result = ops::register_device(*w.store, *w.ca, w.request("sensor-001"), w.actor,
                                     [](const ops::Issuance&) -> Status {
                                       return make_error(Errc::io, "sensor-001.key: disk full");
                                     });
  require_error(result, Errc::io, "sensor-001.key: disk full");
  require_error(ops::get_device(*w.store, "sensor-001"), Errc::not_found);
  CHECK(w.certificates() == 0);
  CHECK(w.audit_rows() == audit_before);
  // Nothing half-made blocks a retry.
  CHECK(ops::register_device(*w.store, *w.ca, w.request("sensor-001"), w.actor).ok());
}

// ---- update, enable, list --------------------------------------------------------------------

TEST_CASE("update_device changes only the fields given and keeps them") {
  World w;
  auto request = w.request("sensor-001");
  request.device.name = "Old";
  request.device.location = "Hall A";
  must(ops::register_device(*w.store, *w.ca, request, w.actor));
  registry::DeviceUpdate update;
  update.name = "New";
  update.metadata = R"({"floor":3})";
  w.actor.now += 60;
  auto updated = must(ops::update_device(*w.store, "sensor-001", update, w.actor));
  CHECK(updated.name == "New");
  CHECK(updated.location == "Hall A");
  CHECK(updated.metadata == R"({"floor":3})");
  CHECK(updated.updated_at == w.actor.now);
  auto stored = must(ops::get_device(*w.store, "sensor-001"));
  CHECK(stored.name == "New");
  CHECK(stored.location == "Hall A");
}

TEST_CASE("update_device refuses nothing to change bad fields unknown and revoked devices") {
  World w;
  w.register_one("sensor-001");
  require_error(ops::update_device(*w.store, "sensor-001", {}, w.actor), Errc::invalid_input,
                "nothing to update");
  registry::DeviceUpdate bad;
  bad.name = "ok";
  bad.firmware = "1.0\n";
  require_error(ops::update_device(*w.store, "sensor-001", bad, w.actor), Errc::invalid_input,
                "firmware holds a control character");
  CHECK(must(ops::get_device(*w.store, "sensor-001")).name != "ok");  // nothing half-applied

  registry::DeviceUpdate good;
  good.name = "fine";
  require_error(ops::update_device(*w.store, "nobody", good, w.actor), Errc::not_found);
  require_error(ops::update_device(*w.store, "bad/id", good, w.actor), Errc::invalid_input);
  must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001",
                          RevocationReason::cessation_of_operation, w.actor));
  require_error(ops::update_device(*w.store, "sensor-001", good, w.actor), Errc::conflict);
  // Positive control: the same update on a live device works.
  w.register_one("sensor-002");
  CHECK(must(ops::update_device(*w.store, "sensor-002", good, w.actor)).name == "fine");
}

TEST_CASE("set_device_enabled switches a device and reports when nothing changed") {
  World w;
  w.register_one("sensor-001");
  CHECK(must(ops::set_device_enabled(*w.store, "sensor-001", false, w.actor)));
  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::disabled);
  const auto audit_before = w.audit_rows();
  CHECK_FALSE(must(ops::set_device_enabled(*w.store, "sensor-001", false, w.actor)));
  CHECK(w.audit_rows() == audit_before);  // nothing written
  // A disabled device is refused whatever the rules say.
  auto refused =
      must(ops::explain_access(*w.store, "sensor-001", "publish", "devices/sensor-001/t"));
  CHECK_FALSE(refused.allowed);
  CHECK(refused.reason == "the device is disabled");
  CHECK(must(ops::set_device_enabled(*w.store, "sensor-001", true, w.actor)));
  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::active);
  CHECK(
      must(ops::explain_access(*w.store, "sensor-001", "publish", "devices/sensor-001/t")).allowed);
  require_error(ops::set_device_enabled(*w.store, "nobody", false, w.actor), Errc::not_found);
  require_error(ops::set_device_enabled(*w.store, "a#b", false, w.actor), Errc::invalid_input);
}

TEST_CASE("a revoked device can be neither enabled nor disabled") {
  World w;
  w.register_one("sensor-001");
  must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001", RevocationReason::unspecified,
                          w.actor));
  require_error(ops::set_device_enabled(*w.store, "sensor-001", true, w.actor), Errc::conflict);
  require_error(ops::set_device_enabled(*w.store, "sensor-001", false, w.actor), Errc::conflict);
  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::revoked);
}

TEST_CASE("device_filter and list_devices page through devices in id order") {
  World w;
  for (const char* id : {"c", "a", "b"}) w.register_one(id);
  must(ops::set_device_enabled(*w.store, "b", false, w.actor));
  auto page = must(ops::list_devices(*w.store, must(ops::device_filter("", "", 2, ""))));
  REQUIRE(page.devices.size() == 2);
  CHECK(page.devices[0].id == "a");
  CHECK(page.devices[1].id == "b");
  REQUIRE(page.next_after);
  auto rest =
      must(ops::list_devices(*w.store, must(ops::device_filter("", "", 2, *page.next_after))));
  REQUIRE(rest.devices.size() == 1);
  CHECK(rest.devices[0].id == "c");
  CHECK_FALSE(rest.next_after);
  auto disabled =
      must(ops::list_devices(*w.store, must(ops::device_filter("disabled", "", 0, ""))));
  REQUIRE(disabled.devices.size() == 1);
  CHECK(disabled.devices[0].id == "b");
  require_error(ops::device_filter("gone", "", 0, ""), Errc::invalid_input, "status must be");
  require_error(ops::device_filter("", "a b", 0, ""), Errc::invalid_input, "type: ");
  require_error(ops::device_filter("", "", 0, "a/b"), Errc::invalid_input, "after: ");
}

// ---- revoke, renew ---------------------------------------------------------------------------

TEST_CASE("revoke_device revokes every certificate and rewrites the signed CRL") {
  World w;
  auto revoked_one = w.register_one("sensor-001");
  auto kept = w.register_one("sensor-002");
  auto result = must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001",
                                        RevocationReason::key_compromise, w.actor));
  CHECK_FALSE(result.outcome.already_revoked);
  const auto& serial = revoked_one.issuance.certificate.info.serial_hex;
  CHECK(result.outcome.revoked_serials == std::vector<std::string>{serial});
  REQUIRE(result.crl_number);

  auto crl = read_crl(w.crl);
  CHECK(signed_by(crl.get(), w.ca->issuer()));
  CHECK(crl_number(crl.get()) == static_cast<long>(*result.crl_number));
  CHECK(crl_lists(crl.get(), serial));
  CHECK_FALSE(crl_lists(crl.get(), kept.issuance.certificate.info.serial_hex));  // control

  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::revoked);
  auto certificates = must(ops::list_certificates(*w.store, "sensor-001"));
  REQUIRE(certificates.size() == 1);
  CHECK(certificates[0].status == registry::CertificateStatus::revoked);
  CHECK(certificates[0].revocation_reason == RevocationReason::key_compromise);
  // The broker's decision follows: refused now, the other device still allowed.
  CHECK_FALSE(
      must(ops::explain_access(*w.store, "sensor-001", "publish", "devices/sensor-001/t")).allowed);
  CHECK(
      must(ops::explain_access(*w.store, "sensor-002", "publish", "devices/sensor-002/t")).allowed);
}

TEST_CASE("revoke_device reports an already revoked device and leaves the CRL alone") {
  World w;
  w.register_one("sensor-001");
  auto first = must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001",
                                       RevocationReason::superseded, w.actor));
  REQUIRE(first.crl_number);
  const std::string crl_before = read_text(w.crl);
  const auto audit_before = w.audit_rows();
  auto again = must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001",
                                       RevocationReason::key_compromise, w.actor));
  CHECK(again.outcome.already_revoked);
  CHECK(again.outcome.revoked_serials.empty());
  CHECK_FALSE(again.crl_number);
  CHECK(read_text(w.crl) == crl_before);
  CHECK(w.audit_rows() == audit_before);
  // The first reason stands.
  CHECK(must(ops::list_certificates(*w.store, "sensor-001"))[0].revocation_reason ==
        RevocationReason::superseded);
  require_error(
      ops::revoke_device(*w.store, *w.ca, w.crl, "nobody", RevocationReason::unspecified, w.actor),
      Errc::not_found);
}

TEST_CASE("revoke_device says the registry changed when the CRL cannot be written") {
  World w;
  w.register_one("sensor-001");
  const auto unwritable = w.dir / "no-such-dir" / "crl.pem";
  auto result = ops::revoke_device(*w.store, *w.ca, unwritable, "sensor-001",
                                   RevocationReason::unspecified, w.actor);
  REQUIRE_FALSE(result.ok());
  INFO(result.error().message);
  CHECK(contains(result.error().message,
                 "revoked sensor-001 in the registry, but the CRL was not "
                 "rewritten"));
  CHECK(contains(result.error().message, "'onboardctl crl'"));
  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::revoked);
  // The remedy works: a CRL written afterwards lists the certificate.
  must(ops::rewrite_crl(*w.store, *w.ca, w.crl, "", w.actor));
  CHECK(crl_lists(read_crl(w.crl).get(),
                  must(ops::list_certificates(*w.store, "sensor-001"))[0].serial_hex));
}

TEST_CASE("renew_certificate supersedes the old certificate and puts it on the CRL") {
  World w;
  auto old = w.register_one("sensor-001");
  const auto old_serial = old.issuance.certificate.info.serial_hex;
  auto renewed = must(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-001",
                                             w.request("sensor-001").key, w.actor));
  CHECK_FALSE(renewed.crl_error);
  REQUIRE(renewed.issuance.private_key != nullptr);
  CHECK(certifies(renewed.issuance.certificate, renewed.issuance.private_key.get()));
  CHECK_FALSE(certifies(renewed.issuance.certificate, old.issuance.private_key.get()));
  CHECK(renewed.added.superseded_serials == std::vector<std::string>{old_serial});
  const auto new_serial = renewed.issuance.certificate.info.serial_hex;
  CHECK(new_serial != old_serial);

  auto crl = read_crl(w.crl);
  CHECK(crl_number(crl.get()) == static_cast<long>(renewed.crl_number));
  CHECK(crl_lists(crl.get(), old_serial));
  CHECK_FALSE(crl_lists(crl.get(), new_serial));

  auto certificates = must(ops::list_certificates(*w.store, "sensor-001"));
  REQUIRE(certificates.size() == 2);
  for (const auto& c : certificates) {
    if (c.serial_hex == old_serial) {
      CHECK(c.status == registry::CertificateStatus::revoked);
      CHECK(c.revocation_reason == RevocationReason::superseded);
    } else {
      CHECK(c.serial_hex == new_serial);
      CHECK(c.status == registry::CertificateStatus::active);
    }
  }
  // The device itself stays active.
  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::active);
}

TEST_CASE("renew_certificate with a CSR certifies the new key and needs the same CN") {
  World w;
  w.register_one("sensor-001");
  auto key = must(ca::generate_key(ca::KeyAlg::p256));
  ops::KeyPlan plan;
  plan.csr_pem = csr_for(key.get(), "sensor-999");
  require_error(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-001", plan, w.actor),
                Errc::invalid_input, "the CSR's CN is 'sensor-999'");
  CHECK(must(ops::list_certificates(*w.store, "sensor-001")).size() == 1);
  plan.csr_pem = csr_for(key.get(), "sensor-001");
  auto renewed = must(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-001", plan, w.actor));
  CHECK(certifies(renewed.issuance.certificate, key.get()));
  CHECK(renewed.issuance.private_key == nullptr);
}

TEST_CASE("renew_certificate refuses revoked and unknown devices and bad validity") {
  World w;
  w.register_one("sensor-001");
  w.register_one("sensor-002");
  must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001", RevocationReason::unspecified,
                          w.actor));
  const auto plan = w.request("x").key;
  require_error(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-001", plan, w.actor),
                Errc::conflict, "device sensor-001 is revoked");
  require_error(ops::renew_certificate(*w.store, *w.ca, w.crl, "nobody", plan, w.actor),
                Errc::not_found);
  for (int days : {0, 3651}) {
    auto bad = plan;
    bad.days = days;
    require_error(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-002", bad, w.actor),
                  Errc::invalid_input, "days must be 1 to 3650");
  }
  // A disabled device may be renewed (and stays disabled).
  must(ops::set_device_enabled(*w.store, "sensor-002", false, w.actor));
  CHECK(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-002", plan, w.actor).ok());
  CHECK(must(ops::get_device(*w.store, "sensor-002")).status == DeviceStatus::disabled);
}

TEST_CASE("renew_certificate keeps the old certificate when the hand-out hook fails") {
  World w;
  auto old = w.register_one("sensor-001");
  auto result = ops::renew_certificate(
      *w.store, *w.ca, w.crl, "sensor-001", w.request("sensor-001").key, w.actor,
      [](const ops::Issuance&) -> Status { return make_error(Errc::io, "cannot write"); });
  require_error(result, Errc::io, "cannot write");
  auto certificates = must(ops::list_certificates(*w.store, "sensor-001"));
  REQUIRE(certificates.size() == 1);
  CHECK(certificates[0].serial_hex == old.issuance.certificate.info.serial_hex);
  CHECK(certificates[0].status == registry::CertificateStatus::active);
  CHECK_FALSE(std::filesystem::exists(w.crl));
}

TEST_CASE("renew_certificate records the renewal and reports a CRL it could not write") {
  World w;
  auto old = w.register_one("sensor-001");
  auto renewed = must(ops::renew_certificate(*w.store, *w.ca, w.dir / "missing" / "crl.pem",
                                             "sensor-001", w.request("sensor-001").key, w.actor));
  REQUIRE(renewed.crl_error);
  CHECK(contains(renewed.crl_error->message, "renewed sensor-001 in the registry"));
  // The new certificate is recorded and must still be handed out.
  REQUIRE(renewed.issuance.private_key != nullptr);
  auto certificates = must(ops::list_certificates(*w.store, "sensor-001"));
  CHECK(certificates.size() == 2);
  CHECK(renewed.added.superseded_serials ==
        std::vector<std::string>{old.issuance.certificate.info.serial_hex});
}

// ---- rules -----------------------------------------------------------------------------------

TEST_CASE("add_rule list_rules explain_access and remove_rule agree with each other") {
  World w;
  w.register_one("sensor-001");
  // Control: outside its own tree nothing is allowed by the fresh registry's default rule.
  auto before = must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/1/temp"));
  CHECK_FALSE(before.allowed);
  CHECK(before.reason == "no rule matches (default deny)");
  CHECK_FALSE(before.rule_id);

  ops::RuleRequest request;
  request.subject_kind = registry::SubjectKind::device;
  request.subject = "sensor-001";
  request.access = "publish";
  request.topic = "plant/+/temp";
  auto rule = must(ops::add_rule(*w.store, request, w.actor));
  CHECK(rule.id > 0);
  CHECK(rule.access == registry::kAccessPublish);
  CHECK(rule.pattern == "plant/+/temp");
  auto rules = must(ops::list_rules(*w.store, registry::SubjectKind::device, "sensor-001"));
  REQUIRE(rules.size() == 1);
  CHECK(rules[0].id == rule.id);

  auto allowed = must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/1/temp"));
  CHECK(allowed.allowed);
  CHECK(allowed.rule_id == rule.id);
  CHECK(allowed.reason == "rule " + std::to_string(rule.id) +
                              ": allow publish 'plant/+/temp' "
                              "priority 0");
  // Publish only: subscribing to the same topic is not allowed.
  CHECK_FALSE(
      must(ops::explain_access(*w.store, "sensor-001", "subscribe", "plant/1/temp")).allowed);

  must(ops::remove_rule(*w.store, rule.id, w.actor));
  CHECK(must(ops::list_rules(*w.store, registry::SubjectKind::device, "sensor-001")).empty());
  CHECK_FALSE(must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/1/temp")).allowed);
  require_error(ops::remove_rule(*w.store, rule.id, w.actor), Errc::not_found);
}

TEST_CASE("a higher priority deny rule of a group overrides a device's allow") {
  World w;
  w.register_one("sensor-001");
  ops::RuleRequest allow;
  allow.subject_kind = registry::SubjectKind::device;
  allow.subject = "sensor-001";
  allow.access = "readwrite";
  allow.topic = "plant/#";
  auto allow_rule = must(ops::add_rule(*w.store, allow, w.actor));
  ops::RuleRequest deny;
  deny.subject_kind = registry::SubjectKind::group;
  deny.subject = std::string(registry::kDefaultGroup);
  deny.access = "publish";
  deny.topic = "plant/secret/#";
  deny.effect = registry::RuleEffect::deny;
  deny.priority = 10;
  auto deny_rule = must(ops::add_rule(*w.store, deny, w.actor));
  auto denied = must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/secret/x"));
  CHECK_FALSE(denied.allowed);
  CHECK(denied.rule_id == deny_rule.id);
  auto still = must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/open/x"));
  CHECK(still.allowed);
  CHECK(still.rule_id == allow_rule.id);
}

TEST_CASE("add_rule refuses bad subjects access topics and priorities naming what is wrong") {
  World w;
  w.register_one("sensor-001");
  ops::RuleRequest good;
  good.subject_kind = registry::SubjectKind::device;
  good.subject = "sensor-001";
  good.access = "subscribe";
  good.topic = "a/#";
  struct Case {
    const char* what;
    std::function<void(ops::RuleRequest&)> spoil;
    Errc code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"no subject", [](auto& r) { r.subject = ""; }, Errc::invalid_input, "needs a device"},
      {"bad device id", [](auto& r) { r.subject = "a/b"; }, Errc::invalid_input, ""},
      {"bad group",
       [](auto& r) {
         r.subject_kind = registry::SubjectKind::group;
         r.subject = "a b";
       },
       Errc::invalid_input, "group: "},
      {"unknown device", [](auto& r) { r.subject = "nobody"; }, Errc::not_found, ""},
      {"unknown access", [](auto& r) { r.access = "write"; }, Errc::invalid_input, "access must"},
      {"empty topic", [](auto& r) { r.topic = ""; }, Errc::invalid_input, "topic: "},
      {"hash not last", [](auto& r) { r.topic = "a/#/b"; }, Errc::invalid_input, "topic: "},
      {"priority too high", [](auto& r) { r.priority = ops::kMaxRulePriority + 1; },
       Errc::invalid_input, "priority must be within"},
      {"priority too low", [](auto& r) { r.priority = -ops::kMaxRulePriority - 1; },
       Errc::invalid_input, "priority must be within"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto request = good;
    c.spoil(request);
    require_error(ops::add_rule(*w.store, request, w.actor), c.code, c.says);
  }
  CHECK(must(ops::list_rules(*w.store, registry::SubjectKind::device, "sensor-001")).empty());
  // Positive control, at the priority bounds.
  good.priority = ops::kMaxRulePriority;
  CHECK(ops::add_rule(*w.store, good, w.actor).ok());
  good.priority = -ops::kMaxRulePriority;
  CHECK(ops::add_rule(*w.store, good, w.actor).ok());
}

TEST_CASE("remove_rule_of removes a rule only through the subject it belongs to") {
  World w;
  w.register_one("a");
  w.register_one("b");
  ops::RuleRequest request;
  request.subject_kind = registry::SubjectKind::device;
  request.subject = "b";
  request.access = "read";
  request.topic = "x";
  auto rule = must(ops::add_rule(*w.store, request, w.actor));
  require_error(ops::remove_rule_of(*w.store, registry::SubjectKind::device, "a", rule.id, w.actor),
                Errc::not_found, "rule " + std::to_string(rule.id) + " of device a does not exist");
  CHECK(must(ops::list_rules(*w.store, registry::SubjectKind::device, "b")).size() == 1);
  must(ops::remove_rule_of(*w.store, registry::SubjectKind::device, "b", rule.id, w.actor));
  CHECK(must(ops::list_rules(*w.store, registry::SubjectKind::device, "b")).empty());
  require_error(ops::remove_rule(*w.store, 0, w.actor), Errc::invalid_input, "positive");
}

TEST_CASE("parse_rule_id takes a positive whole number and nothing else") {
  CHECK(must(ops::parse_rule_id("7")) == 7);
  for (const char* bad : {"", "0", "-1", "7a", " 7", "1.0", "99999999999999999999"}) {
    INFO(bad);
    require_error(ops::parse_rule_id(bad), Errc::invalid_input, "positive whole number");
  }
}

TEST_CASE("explain_access refuses what the broker refuses before any rule") {
  World w;
  w.register_one("sensor-001");
  require_error(ops::explain_access(*w.store, "sensor-001", "publish", "devices/+/t"),
                Errc::invalid_input, "not a valid topic name");
  require_error(ops::explain_access(*w.store, "sensor-001", "publish", ""), Errc::invalid_input,
                "not a valid topic name");
  require_error(ops::explain_access(*w.store, "sensor-001", "subscribe", "devices/a#"),
                Errc::invalid_input, "not a valid subscription filter");
  require_error(ops::explain_access(*w.store, "sensor-001", "readwrite", "devices/sensor-001/t"),
                Errc::invalid_input, "access must be one of");
  require_error(ops::explain_access(*w.store, "nobody", "publish", "devices/nobody/t"),
                Errc::not_found, "device nobody does not exist");
  // A wildcard filter is a valid subscription, and the default rule allows the device's own tree.
  auto own = must(ops::explain_access(*w.store, "sensor-001", "subscribe", "devices/sensor-001/#"));
  CHECK(own.allowed);
  CHECK(own.rule_id);
  CHECK_FALSE(
      must(ops::explain_access(*w.store, "sensor-001", "subscribe", "devices/other/#")).allowed);
}

// ---- tokens ----------------------------------------------------------------------------------

TEST_CASE("create_api_token hands out a token once that then authenticates with its role") {
  World w;
  auto created = must(ops::create_api_token(*w.store, "ci", "operator", w.actor));
  const std::string plaintext(created.plaintext.view());
  CHECK(plaintext.starts_with("onb_"));
  CHECK(plaintext.size() == 4 + 43);  // base64url of 32 bytes, unpadded
  CHECK(plaintext.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                    "0123456789-_",
                                    4) == std::string::npos);
  CHECK(created.token.name == "ci");
  CHECK(created.token.role == registry::ApiRole::operator_role);
  auto who = must(ops::authenticate_token(*w.store, plaintext));
  CHECK(who.name == "ci");
  CHECK(who.role == registry::ApiRole::operator_role);
  // A second token is a different secret.
  auto other = must(ops::create_api_token(*w.store, "dashboard", "reader", w.actor));
  CHECK(other.plaintext.view() != created.plaintext.view());
  CHECK(must(ops::authenticate_token(*w.store, other.plaintext.view())).role ==
        registry::ApiRole::reader);
  CHECK(must(ops::list_api_tokens(*w.store)).size() == 2);
}

TEST_CASE("authenticate_token refuses unknown and malformed tokens as not found") {
  World w;
  auto created = must(ops::create_api_token(*w.store, "ci", "operator", w.actor));
  std::string forged(created.plaintext.view());
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  for (const std::string& bad : {forged, std::string(created.plaintext.view()).substr(4),
                                 std::string(created.plaintext.view()) + "x", std::string(),
                                 "onb_" + std::string(43, '!'), std::string(64, 'a')}) {
    INFO(bad);
    require_error(ops::authenticate_token(*w.store, bad), Errc::not_found);
  }
  CHECK(ops::authenticate_token(*w.store, created.plaintext.view()).ok());  // control
}

TEST_CASE("a revoked token no longer authenticates and other tokens still do") {
  World w;
  auto ci = must(ops::create_api_token(*w.store, "ci", "operator", w.actor));
  auto dash = must(ops::create_api_token(*w.store, "dashboard", "reader", w.actor));
  CHECK(must(ops::revoke_api_token(*w.store, "ci", w.actor)));
  require_error(ops::authenticate_token(*w.store, ci.plaintext.view()), Errc::not_found);
  CHECK(ops::authenticate_token(*w.store, dash.plaintext.view()).ok());
  CHECK_FALSE(must(ops::revoke_api_token(*w.store, "ci", w.actor)));  // already revoked
  require_error(ops::revoke_api_token(*w.store, "nobody", w.actor), Errc::not_found);
  require_error(ops::revoke_api_token(*w.store, "a/b", w.actor), Errc::invalid_input);
  auto tokens = must(ops::list_api_tokens(*w.store));
  auto it = std::find_if(tokens.begin(), tokens.end(), [](auto& t) { return t.name == "ci"; });
  REQUIRE(it != tokens.end());
  CHECK(it->revoked_at);
}

TEST_CASE("create_api_token refuses bad names roles and duplicate names") {
  World w;
  require_error(ops::create_api_token(*w.store, "a b", "reader", w.actor), Errc::invalid_input,
                "token name: ");
  require_error(ops::create_api_token(*w.store, "ci", "admin", w.actor), Errc::invalid_input,
                "role must be operator or reader");
  CHECK(must(ops::list_api_tokens(*w.store)).empty());
  must(ops::create_api_token(*w.store, "ci", "reader", w.actor));
  require_error(ops::create_api_token(*w.store, "ci", "reader", w.actor), Errc::conflict);
}

TEST_CASE("a token's plaintext is never stored and only its SHA-256 is") {
  World w;
  auto created = must(ops::create_api_token(*w.store, "ci", "operator", w.actor));
  const std::string plaintext(created.plaintext.view());
  const std::string secret_part = plaintext.substr(4);
  {
    SQLite::Database raw(w.db_path().string(), SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("SELECT token_sha256 FROM api_tokens WHERE name = 'ci'").getString() ==
          must(ops::token_hash(plaintext)));
    CHECK(must(ops::token_hash(plaintext)) == must(sha256_hex(plaintext)));
    // Not in any column of any table: the audit row included. The scan does find the hash (a
    // control that it reads what is stored).
    bool hash_seen = false;
    SQLite::Statement tables(raw, "SELECT name FROM sqlite_master WHERE type = 'table'");
    while (tables.executeStep()) {
      const std::string table = tables.getColumn(0).getString();
      SQLite::Statement rows(raw, "SELECT * FROM \"" + table + "\"");
      while (rows.executeStep()) {
        for (int i = 0; i < rows.getColumnCount(); ++i) {
          INFO(table);
          const std::string value = rows.getColumn(i).getString();
          CHECK_FALSE(contains(value, secret_part));
          hash_seen = hash_seen || value == must(ops::token_hash(plaintext));
        }
      }
    }
    CHECK(hash_seen);
  }
  // Nor anywhere in the files on disk (database, journal, WAL), where the hash is.
  w.store.reset();
  std::string on_disk;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(w.dir.path())) {
    if (entry.is_regular_file()) on_disk += read_text(entry.path());
  }
  CHECK(contains(on_disk, must(ops::token_hash(plaintext))));
  CHECK_FALSE(contains(on_disk, secret_part));
}

// ---- audit -----------------------------------------------------------------------------------

TEST_CASE("list_audit shows each change with its actor oldest first and pages by seq") {
  World w;
  const auto start = w.audit_rows();  // what a fresh registry records about itself
  w.register_one("sensor-001");
  must(ops::set_device_enabled(*w.store, "sensor-001", false, w.actor));
  registry::Actor bob{"rest:bob", w.actor.now};
  must(ops::create_api_token(*w.store, "ci", "reader", bob));

  auto all = must(ops::list_audit(*w.store, 0, 0));
  REQUIRE(all.size() == start + 3);
  for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i].seq == all[i - 1].seq + 1);
  std::vector<std::string> actions;
  for (std::size_t i = start; i < all.size(); ++i) actions.push_back(all[i].action);
  CHECK(actions[0] == "device.register");
  CHECK(all[start].subject == "sensor-001");
  CHECK(all[start].actor == "alice");
  CHECK(all.back().action == "token.create");
  CHECK(all.back().actor == "rest:bob");
  CHECK(all.back().subject == "ci");

  auto page = must(ops::list_audit(*w.store, 1, all[start].seq));
  REQUIRE(page.size() == 1);
  CHECK(page[0].seq == all[start + 1].seq);
  CHECK(must(ops::list_audit(*w.store, 0, all.back().seq)).empty());
  require_error(ops::list_audit(*w.store, 0, -1), Errc::invalid_input,
                "after must not be negative");
}

// ---- more of the same layer: types and groups, batches, certificates by name, the CRL ---------

TEST_CASE("update_device with a new type moves the device into that type's group") {
  World w;
  w.register_one("sensor-001");
  must(ops::create_group(*w.store, "thermo", "thermometers", w.actor));
  ops::RuleRequest rule;
  rule.subject = "thermo";
  rule.access = "publish";
  rule.topic = "plant/temp";
  auto added = must(ops::add_rule(*w.store, rule, w.actor));
  CHECK_FALSE(must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/temp")).allowed);
  registry::DeviceUpdate update;
  update.type = "thermo";
  CHECK(must(ops::update_device(*w.store, "sensor-001", update, w.actor)).type == "thermo");
  auto now = must(ops::explain_access(*w.store, "sensor-001", "publish", "plant/temp"));
  CHECK(now.allowed);
  CHECK(now.rule_id == added.id);
  // device_details lists the group's rule among the effective ones.
  auto details = must(ops::device_details(*w.store, "sensor-001"));
  CHECK(std::any_of(details.effective_rules.begin(), details.effective_rules.end(),
                    [&](const auto& r) { return r.id == added.id && r.subject == "thermo"; }));
}

TEST_CASE("create_group checks the name and the description and refuses a duplicate") {
  World w;
  require_error(ops::create_group(*w.store, "a b", "", w.actor), Errc::invalid_input);
  require_error(ops::create_group(*w.store, "lab", "line\nbreak", w.actor), Errc::invalid_input,
                "description holds a control character");
  require_error(ops::create_group(*w.store, "lab", std::string(257, 'd'), w.actor),
                Errc::invalid_input, "description is 257 bytes long");
  auto lab = must(ops::create_group(*w.store, "lab", std::string(256, 'd'), w.actor));
  CHECK(lab.name == "lab");
  require_error(ops::create_group(*w.store, "lab", "", w.actor), Errc::conflict);
  auto groups = must(ops::list_groups(*w.store));
  CHECK(std::count_if(groups.begin(), groups.end(), [](auto& g) { return g.name == "lab"; }) == 1);
}

TEST_CASE("register_device into a batch records the line and an unknown batch records nothing") {
  World w;
  auto request = w.request("sensor-001");
  request.batch_id = "no-such-batch";
  request.batch_line = 4;
  require_error(ops::register_device(*w.store, *w.ca, request, w.actor), Errc::not_found);
  require_error(ops::get_device(*w.store, "sensor-001"), Errc::not_found);
  CHECK(w.certificates() == 0);
  must(w.store->create_batch("batch-1", "devices.csv", w.actor));
  request.batch_id = "batch-1";
  must(ops::register_device(*w.store, *w.ca, request, w.actor));
  auto batch = must(w.store->get_batch("batch-1"));
  REQUIRE(batch.devices.size() == 1);
  CHECK(batch.devices[0].device_id == "sensor-001");
  CHECK(batch.devices[0].line == 4);
}

TEST_CASE("find_certificate takes a fingerprint in any usual spelling or a serial") {
  World w;
  auto registered = w.register_one("sensor-001");
  const auto& info = registered.issuance.certificate.info;
  std::string colons, upper;
  for (std::size_t i = 0; i < info.sha256_fingerprint.size(); i += 2) {
    if (i > 0) colons += ':';
    colons += info.sha256_fingerprint.substr(i, 2);
  }
  for (char c : colons) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string lower_serial;
  for (char c : info.serial_hex)
    lower_serial += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const std::string& name :
       {info.sha256_fingerprint, "sha256:" + info.sha256_fingerprint, colons, upper,
        "sha256:" + upper, info.serial_hex, lower_serial}) {
    INFO(name);
    CHECK(must(ops::find_certificate(*w.store, name)).sha256_fingerprint ==
          info.sha256_fingerprint);
  }
  require_error(ops::find_certificate(*w.store, std::string(64, '0')), Errc::not_found);
  CHECK_FALSE(ops::find_certificate(*w.store, "1234").ok());
}

TEST_CASE("revoke_certificate puts one certificate on the CRL and leaves its device active") {
  World w;
  auto registered = w.register_one("sensor-001");
  const auto& info = registered.issuance.certificate.info;
  auto revoked = must(ops::revoke_certificate(*w.store, *w.ca, w.crl, info.sha256_fingerprint,
                                              RevocationReason::key_compromise, w.actor));
  CHECK_FALSE(revoked.outcome.already_revoked);
  CHECK(revoked.outcome.certificate.status == registry::CertificateStatus::revoked);
  REQUIRE(revoked.crl_number);
  CHECK_FALSE(revoked.needs_root_crl);
  CHECK(crl_lists(read_crl(w.crl).get(), info.serial_hex));
  CHECK(must(ops::get_device(*w.store, "sensor-001")).status == DeviceStatus::active);
  const std::string crl_before = read_text(w.crl);
  auto again = must(ops::revoke_certificate(*w.store, *w.ca, w.crl, info.serial_hex,
                                            RevocationReason::unspecified, w.actor));
  CHECK(again.outcome.already_revoked);
  CHECK_FALSE(again.crl_number);
  CHECK(read_text(w.crl) == crl_before);
}

// A revoke killed (or out of disk space) after its registry commit and before the CRL rewrite left
// a revoked device whose certificates the CRL did not list, and rerunning the revoke answered
// "already revoked; nothing changed" without ever rewriting the CRL (found by
// tests/faults/kill_faults.py). The rerun now finishes the job.
TEST_CASE("a rerun of revoke_device rewrites a CRL that a stopped revoke left without it") {
  World w;
  auto registered = w.register_one("sensor-001");
  const auto& serial = registered.issuance.certificate.info.serial_hex;
  must(ops::rewrite_crl(*w.store, *w.ca, w.crl, "", w.actor));  // a CRL without the device
  const auto unwritable = w.dir / "no-such-dir" / "crl.pem";    // stands in for the kill
  REQUIRE_FALSE(ops::revoke_device(*w.store, *w.ca, unwritable, "sensor-001",
                                   RevocationReason::key_compromise, w.actor)
                    .ok());
  REQUIRE_FALSE(crl_lists(read_crl(w.crl).get(), serial));

  auto rerun = must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001",
                                       RevocationReason::key_compromise, w.actor));
  CHECK(rerun.outcome.already_revoked);
  REQUIRE(rerun.crl_number);
  auto crl = read_crl(w.crl);
  CHECK(crl_lists(crl.get(), serial));
  CHECK(crl_number(crl.get()) == static_cast<long>(*rerun.crl_number));
  CHECK(signed_by(crl.get(), w.ca->issuer()));

  // Once the CRL lists it, a further rerun changes nothing (control).
  const std::string crl_before = read_text(w.crl);
  const auto audit_before = w.audit_rows();
  auto again = must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001",
                                       RevocationReason::key_compromise, w.actor));
  CHECK_FALSE(again.crl_number);
  CHECK(read_text(w.crl) == crl_before);
  CHECK(w.audit_rows() == audit_before);
}

TEST_CASE("a rerun of revoke_certificate rewrites a CRL that a stopped revoke left without it") {
  World w;
  auto registered = w.register_one("sensor-001");
  const auto& info = registered.issuance.certificate.info;
  must(ops::rewrite_crl(*w.store, *w.ca, w.crl, "", w.actor));
  const auto unwritable = w.dir / "no-such-dir" / "crl.pem";
  REQUIRE_FALSE(ops::revoke_certificate(*w.store, *w.ca, unwritable, info.serial_hex,
                                        RevocationReason::key_compromise, w.actor)
                    .ok());
  REQUIRE_FALSE(crl_lists(read_crl(w.crl).get(), info.serial_hex));

  auto rerun = must(ops::revoke_certificate(*w.store, *w.ca, w.crl, info.serial_hex,
                                            RevocationReason::key_compromise, w.actor));
  CHECK(rerun.outcome.already_revoked);
  REQUIRE(rerun.crl_number);
  CHECK(crl_lists(read_crl(w.crl).get(), info.serial_hex));
  const std::string crl_before = read_text(w.crl);
  auto again = must(ops::revoke_certificate(*w.store, *w.ca, w.crl, info.serial_hex,
                                            RevocationReason::key_compromise, w.actor));
  CHECK_FALSE(again.crl_number);
  CHECK(read_text(w.crl) == crl_before);
}

TEST_CASE("certificate_filter parses kind and status and list_all_certificates applies them") {
  World w;
  w.register_one("a");
  auto b = w.register_one("b");
  must(ops::revoke_device(*w.store, *w.ca, w.crl, "b", RevocationReason::unspecified, w.actor));
  auto active =
      must(ops::list_all_certificates(*w.store, must(ops::certificate_filter("", "active"))));
  REQUIRE(active.size() == 1);
  CHECK(active[0].device_id == "a");
  auto revoked = must(
      ops::list_all_certificates(*w.store, must(ops::certificate_filter("device", "revoked"))));
  REQUIRE(revoked.size() == 1);
  CHECK(revoked[0].serial_hex == b.issuance.certificate.info.serial_hex);
  CHECK(must(ops::list_all_certificates(*w.store, must(ops::certificate_filter("server", ""))))
            .empty());
  require_error(ops::certificate_filter("client", ""), Errc::invalid_input, "kind must be");
  require_error(ops::certificate_filter("", "expired"), Errc::invalid_input, "status must be");
}

TEST_CASE("rewrite_crl numbers each CRL higher and keeps it in force for the validity given") {
  World w;
  const auto first = must(ops::rewrite_crl(*w.store, *w.ca, w.crl, "", w.actor, 3600));
  auto crl = read_crl(w.crl);
  CHECK(crl_number(crl.get()) == static_cast<long>(first));
  CHECK(*to_unix_time(X509_CRL_get0_nextUpdate(crl.get())) -
            *to_unix_time(X509_CRL_get0_lastUpdate(crl.get())) ==
        3600);
  const auto second = must(ops::rewrite_crl(*w.store, *w.ca, w.crl, "", w.actor));
  CHECK(second > first);
  crl = read_crl(w.crl);
  CHECK(crl_number(crl.get()) == static_cast<long>(second));
  CHECK(*to_unix_time(X509_CRL_get0_nextUpdate(crl.get())) -
            *to_unix_time(X509_CRL_get0_lastUpdate(crl.get())) ==
        ops::kDefaultCrlValidity);
}

TEST_CASE("with an issuing intermediate the CRL is signed by it and the root CRL by the root") {
  World w(true);
  REQUIRE(w.ca->has_intermediate());
  auto registered = w.register_one("sensor-001");
  must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001", RevocationReason::unspecified,
                          w.actor));
  auto crl = read_crl(w.crl);
  CHECK(signed_by(crl.get(), w.ca->issuer()));
  CHECK_FALSE(signed_by(crl.get(), w.ca->root()));
  CHECK(crl_lists(crl.get(), registered.issuance.certificate.info.serial_hex));

  auto root_signer = must(w.ca->load_root_signer(nullptr));
  const auto root_crl_path = w.dir / "root-crl.pem";
  must(ops::rewrite_root_crl(*w.store, *w.ca, *root_signer, root_crl_path, w.actor));
  auto root_crl = read_crl(root_crl_path);
  CHECK(signed_by(root_crl.get(), w.ca->root()));
  // The root's CRL lists only what the root issued, not the device's certificate.
  CHECK_FALSE(crl_lists(root_crl.get(), registered.issuance.certificate.info.serial_hex));
}

TEST_CASE("rewrite_root_crl is refused for a CA without an intermediate") {
  World w;
  auto root_signer = must(w.ca->load_root_signer(nullptr));
  require_error(
      ops::rewrite_root_crl(*w.store, *w.ca, *root_signer, w.dir / "root-crl.pem", w.actor),
      Errc::invalid_input, "no intermediate");
  CHECK_FALSE(std::filesystem::exists(w.dir / "root-crl.pem"));
}

TEST_CASE("a client certificate credential authenticates that certificate only until revoked") {
  World w;
  auto client = w.register_one("admin-laptop");
  const auto& pem = client.issuance.certificate.pem;
  const auto& fingerprint = client.issuance.certificate.info.sha256_fingerprint;
  auto credential =
      must(ops::create_certificate_credential(*w.store, "laptop", "operator", pem, w.actor));
  CHECK(credential.role == registry::ApiRole::operator_role);
  CHECK(must(ops::authenticate_certificate(*w.store, fingerprint)).name == "laptop");
  // Another certificate is not this credential.
  auto other = w.register_one("other");
  require_error(
      ops::authenticate_certificate(*w.store, other.issuance.certificate.info.sha256_fingerprint),
      Errc::not_found);
  require_error(ops::create_certificate_credential(*w.store, "bad", "reader", "not a pem", w.actor),
                Errc::invalid_input, "client certificate: ");
  CHECK(must(ops::revoke_api_token(*w.store, "laptop", w.actor)));
  require_error(ops::authenticate_certificate(*w.store, fingerprint), Errc::not_found);
}

TEST_CASE("revoking a device deletes the key the server held for it") {
  World w;
  auto request = w.request("sensor-001");
  request.key.hold_passphrase = &hold_passphrase();
  must(ops::register_device(*w.store, *w.ca, request, w.actor));
  request.device.id = "sensor-002";
  must(ops::register_device(*w.store, *w.ca, request, w.actor));
  REQUIRE(must(w.store->held_key("sensor-001")));
  must(ops::revoke_device(*w.store, *w.ca, w.crl, "sensor-001", RevocationReason::key_compromise,
                          w.actor));
  CHECK_FALSE(must(w.store->held_key("sensor-001")));
  CHECK(must(w.store->held_key("sensor-002")));  // control: the other device's key stays
}

TEST_CASE("renewing a device replaces the held key of the superseded certificate") {
  World w;
  auto request = w.request("sensor-001");
  request.key.hold_passphrase = &hold_passphrase();
  auto first = must(ops::register_device(*w.store, *w.ca, request, w.actor));
  // Renewed with a held key: the server holds the new key, for the new certificate.
  auto held_renewal =
      must(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-001", request.key, w.actor));
  CHECK(held_renewal.issuance.key_held);
  auto held = must(w.store->held_key("sensor-001"));
  REQUIRE(held);
  CHECK(held->certificate_sha256 == held_renewal.issuance.certificate.info.sha256_fingerprint);
  CHECK(held->certificate_sha256 != first.issuance.certificate.info.sha256_fingerprint);
  auto key = must(ca::private_key_from_pem(held->encrypted_pem, &hold_passphrase()));
  CHECK(certifies(held_renewal.issuance.certificate, key.get()));
  // Renewed with the key handed out: no key for a superseded certificate is left behind.
  must(ops::renew_certificate(*w.store, *w.ca, w.crl, "sensor-001", w.request("x").key, w.actor));
  CHECK_FALSE(must(w.store->held_key("sensor-001")));
}

TEST_CASE("a revoked intermediate needs the root's CRL and the root CRL then lists it") {
  World w(true);
  ossl::Ptr<X509> copy(X509_dup(w.ca->issuer()));
  REQUIRE(copy);
  const auto intermediate = ca::make_issued(std::move(copy));
  auto recorded =
      must(ops::record_issued(*w.store, registry::CertificateKind::other, intermediate, w.actor));
  CHECK(recorded.kind == registry::CertificateKind::other);
  // Only server and other certificates are recorded this way; a device's goes with its device.
  require_error(
      ops::record_issued(*w.store, registry::CertificateKind::device, intermediate, w.actor),
      Errc::invalid_input);

  auto revoked =
      must(ops::revoke_certificate(*w.store, *w.ca, w.crl, intermediate.info.sha256_fingerprint,
                                   RevocationReason::ca_compromise, w.actor));
  CHECK(revoked.needs_root_crl);
  CHECK_FALSE(revoked.crl_number);
  CHECK_FALSE(std::filesystem::exists(w.crl));  // the intermediate cannot sign its own revocation

  auto root_signer = must(w.ca->load_root_signer(nullptr));
  must(ops::rewrite_root_crl(*w.store, *w.ca, *root_signer, w.dir / "root-crl.pem", w.actor));
  auto root_crl = read_crl(w.dir / "root-crl.pem");
  CHECK(signed_by(root_crl.get(), w.ca->root()));
  CHECK(crl_lists(root_crl.get(), intermediate.info.serial_hex));
}

TEST_CASE("a device registered without a name is named by its id") {
  World w;
  CHECK(w.register_one("sensor-001").device.name == "sensor-001");
  auto request = w.request("sensor-002");
  request.device.name = "Named";
  CHECK(must(ops::register_device(*w.store, *w.ca, request, w.actor)).device.name == "Named");
}
