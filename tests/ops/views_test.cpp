// The JSON views `onboardctl ... --json` and the REST API both print: the field names and formats
// docs/openapi.yaml promises, times as RFC 3339, and nothing secret.
#include "ops/views.h"

#include <catch2/catch.hpp>

#include <regex>
#include <set>
#include <string>

namespace {

namespace views = onboard::ops;  // where the views live: one line to change if they move
using nlohmann::json;
using namespace onboard::registry;

constexpr onboard::UnixTime kT1 = 1'800'000'000;  // 2027-01-15T08:00:00Z
constexpr onboard::UnixTime kT2 = kT1 + 86400 + 3661;

std::set<std::string> keys_of(const json& j) {
  std::set<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.insert(key);
  return keys;
}

bool is_rfc3339_utc(const json& value) {
  static const std::regex shape(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)");
  return value.is_string() && std::regex_match(value.get<std::string>(), shape);
}

Device sample_device() {
  Device d;
  d.id = "sensor-001";
  d.name = "Boiler sensor";
  d.type = "thermo";
  d.location = "Hall B";
  d.firmware = "1.4.2";
  d.status = DeviceStatus::disabled;
  d.created_at = kT1;
  d.updated_at = kT2;
  d.metadata = R"({"floor":2,"tags":["a","b"]})";
  return d;
}

Certificate sample_certificate() {
  Certificate c;
  c.serial_hex = "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567";
  c.issuer = "CN=Test Issuing";
  c.sha256_fingerprint = std::string(64, 'a');
  c.device_id = "sensor-001";
  c.subject = "CN=sensor-001";
  c.not_before = kT1;
  c.not_after = kT2;
  c.pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  return c;
}

}  // namespace

TEST_CASE("views: a device has exactly the fields of the API's Device schema") {
  const json j = views::device_json(sample_device());
  CHECK(keys_of(j) == std::set<std::string>{"id", "name", "type", "location", "firmware", "status",
                                            "created_at", "updated_at", "metadata"});
  CHECK(j["id"] == "sensor-001");
  CHECK(j["name"] == "Boiler sensor");
  CHECK(j["type"] == "thermo");
  CHECK(j["location"] == "Hall B");
  CHECK(j["firmware"] == "1.4.2");
  CHECK(j["status"] == "disabled");
  CHECK(j["created_at"] == "2027-01-15T08:00:00Z");
  CHECK(j["updated_at"] == "2027-01-16T09:01:01Z");
}

TEST_CASE("views: a device's metadata is a JSON object and not a string holding JSON") {
  const json j = views::device_json(sample_device());
  REQUIRE(j["metadata"].is_object());
  CHECK(j["metadata"]["floor"] == 2);
  CHECK(j["metadata"]["tags"] == json::array({"a", "b"}));
  Device empty = sample_device();
  empty.metadata = "{}";
  CHECK(views::device_json(empty)["metadata"] == json::object());
}

TEST_CASE("views: every device status is spelled as the API's enum") {
  Device d = sample_device();
  d.status = DeviceStatus::active;
  CHECK(views::device_json(d)["status"] == "active");
  d.status = DeviceStatus::revoked;
  CHECK(views::device_json(d)["status"] == "revoked");
}

TEST_CASE("views: control characters in stored text are escaped by the JSON output") {
  Device d = sample_device();
  d.name = "evil\x1b[2J\nrow";
  const std::string text = views::device_json(d).dump();
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\n') == std::string::npos);
  CHECK(text.find("evil\\u001b[2J\\nrow") != std::string::npos);
}

TEST_CASE("views: an active certificate without PEM has the schema's fields and no revocation") {
  const json j = views::certificate_json(sample_certificate(), false);
  CHECK(keys_of(j) == std::set<std::string>{"serial", "sha256_fingerprint", "issuer", "subject",
                                            "not_before", "not_after", "status"});
  CHECK(j["serial"] == "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567");
  CHECK(j["sha256_fingerprint"] == std::string(64, 'a'));
  CHECK(j["issuer"] == "CN=Test Issuing");
  CHECK(j["subject"] == "CN=sensor-001");
  CHECK(j["not_before"] == "2027-01-15T08:00:00Z");
  CHECK(j["not_after"] == "2027-01-16T09:01:01Z");
  CHECK(j["status"] == "active");
}

TEST_CASE("views: a certificate with PEM asked for carries it verbatim") {
  const Certificate c = sample_certificate();
  const json with = views::certificate_json(c, true);
  CHECK(with["pem"] == c.pem);
  // Control: the same certificate without it has no pem field at all (not an empty one).
  CHECK_FALSE(views::certificate_json(c, false).contains("pem"));
}

TEST_CASE("views: a revoked certificate says when and why in the API's words") {
  Certificate c = sample_certificate();
  c.status = CertificateStatus::revoked;
  c.revoked_at = kT2;
  c.revocation_reason = onboard::RevocationReason::key_compromise;
  const json j = views::certificate_json(c, false);
  CHECK(j["status"] == "revoked");
  CHECK(j["revoked_at"] == "2027-01-16T09:01:01Z");
  CHECK(j["revocation_reason"] == "keyCompromise");
  c.revocation_reason = onboard::RevocationReason::superseded;
  CHECK(views::certificate_json(c, false)["revocation_reason"] == "superseded");
  c.revocation_reason = onboard::RevocationReason::cessation_of_operation;
  CHECK(views::certificate_json(c, false)["revocation_reason"] == "cessationOfOperation");
}

TEST_CASE("views: a rule has the schema's fields with access spelled as the API's enum") {
  RuleRecord r;
  r.id = 42;
  r.subject_kind = SubjectKind::device;
  r.subject = "sensor-001";
  r.pattern = "devices/%d/#";
  r.access = kAccessReadWrite;
  r.effect = RuleEffect::deny;
  r.priority = -5;
  r.created_at = kT1;
  const json j = views::rule_json(r);
  CHECK(keys_of(j) == std::set<std::string>{"id", "subject_kind", "subject", "effect", "access",
                                            "pattern", "priority"});
  CHECK(j["id"] == 42);
  CHECK(j["subject_kind"] == "device");
  CHECK(j["subject"] == "sensor-001");
  CHECK(j["effect"] == "deny");
  CHECK(j["access"] == "readwrite");
  CHECK(j["pattern"] == "devices/%d/#");
  CHECK(j["priority"] == -5);
  r.subject_kind = SubjectKind::group;
  r.effect = RuleEffect::allow;
  const std::pair<std::uint8_t, const char*> names[] = {
      {kAccessPublish, "publish"},
      {kAccessSubscribe, "subscribe"},
      {kAccessRead, "read"},
      {kAccessPublish | kAccessSubscribe, "publish|subscribe"},
      {kAccessPublish | kAccessRead, "publish|read"},
      {kAccessSubscribe | kAccessRead, "subscribe|read"}};
  for (const auto& [mask, name] : names) {
    r.access = mask;
    const json k = views::rule_json(r);
    CHECK(k["access"] == name);
    CHECK(k["subject_kind"] == "group");
    CHECK(k["effect"] == "allow");
  }
}

TEST_CASE("views: an audit event has the schema's fields with details as an object") {
  AuditEvent e;
  e.seq = 7;
  e.at = kT1;
  e.actor = "rest:ci";
  e.action = "device.register";
  e.subject = "sensor-001";
  e.details = R"({"serial":"0A"})";
  e.prev_hash = std::string(64, '1');
  e.hash = std::string(64, '2');
  const json j = views::audit_json(e);
  CHECK(keys_of(j) ==
        std::set<std::string>{"seq", "at", "actor", "action", "subject", "details", "hash"});
  CHECK(j["seq"] == 7);
  CHECK(j["at"] == "2027-01-15T08:00:00Z");
  CHECK(j["actor"] == "rest:ci");
  CHECK(j["action"] == "device.register");
  CHECK(j["subject"] == "sensor-001");
  CHECK(j["details"] == json{{"serial", "0A"}});
  CHECK(j["hash"] == std::string(64, '2'));
}

TEST_CASE("views: a token shows its name role and times and never anything to authenticate with") {
  ApiToken t;
  t.id = 3;
  t.name = "ci";
  t.role = ApiRole::operator_role;
  t.created_at = kT1;
  const json j = views::token_json(t);
  CHECK(keys_of(j) == std::set<std::string>{"name", "role", "created_at", "revoked_at"});
  CHECK(j["name"] == "ci");
  CHECK(j["role"] == "operator");
  CHECK(j["created_at"] == "2027-01-15T08:00:00Z");
  CHECK(j["revoked_at"].is_null());  // present and null: a script need not test for the key
  t.role = ApiRole::reader;
  t.revoked_at = kT2;
  const json r = views::token_json(t);
  CHECK(r["role"] == "reader");
  CHECK(r["revoked_at"] == "2027-01-16T09:01:01Z");
}

TEST_CASE("views: a held key is described and its encrypted content never shown") {
  CHECK(views::held_key_json(std::nullopt).is_null());
  HeldKey k;
  k.device_id = "sensor-001";
  k.certificate_sha256 = std::string(64, 'c');
  k.encrypted_pem =
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED "
      "PRIVATE KEY-----\n";
  k.created_at = kT1;
  const json j = views::held_key_json(k);
  CHECK(keys_of(j) ==
        std::set<std::string>{"encrypted", "since", "certificate_sha256", "wiped_when"});
  CHECK(j["encrypted"] == true);
  CHECK(j["since"] == "2027-01-15T08:00:00Z");
  CHECK(j["certificate_sha256"] == std::string(64, 'c'));
  const std::string text = j.dump();
  CHECK(text.find("PRIVATE KEY") == std::string::npos);
  CHECK(text.find("MIIFHDBOBgkqhkiG9w0BBQ0w") == std::string::npos);
}

TEST_CASE("views: every time in every view is RFC 3339 in UTC") {
  Certificate c = sample_certificate();
  c.status = CertificateStatus::revoked;
  c.revoked_at = 0;  // the epoch itself is a time like any other
  c.revocation_reason = onboard::RevocationReason::unspecified;
  const json cert = views::certificate_json(c, false);
  CHECK(cert["revoked_at"] == "1970-01-01T00:00:00Z");
  const json device = views::device_json(sample_device());
  AuditEvent e;
  e.at = 253402300799;  // the last second of year 9999
  e.details = "{}";
  ApiToken t;
  t.created_at = kT1;
  t.revoked_at = kT2;
  for (const json& time :
       {device["created_at"], device["updated_at"], cert["not_before"], cert["not_after"],
        cert["revoked_at"], views::audit_json(e)["at"], views::token_json(t)["created_at"],
        views::token_json(t)["revoked_at"]}) {
    INFO(time.dump());
    CHECK(is_rfc3339_utc(time));
  }
  CHECK(views::audit_json(e)["at"] == "9999-12-31T23:59:59Z");
}
