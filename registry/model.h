// The registry's data model: plain values the Store reads and writes. No SQL and no behaviour
// beyond naming the enums, so the CLI, the REST layer and the plugin can share them freely.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/revocation.h"
#include "core/time.h"

namespace onboard::registry {

// active: may connect. disabled: refused at connect, may be enabled again. revoked: final; its
// certificates are on the CRL and it can neither be enabled nor receive a new certificate.
enum class DeviceStatus { active, disabled, revoked };
std::string_view to_string(DeviceStatus status) noexcept;
std::optional<DeviceStatus> parse_device_status(std::string_view text) noexcept;

struct Device {
  std::string id;  // the identity: certificate CN, MQTT client id and username
  std::string name;
  std::string type;  // empty, or the name of the group the device is implicitly in
  std::string location;
  std::string firmware;
  DeviceStatus status = DeviceStatus::active;
  UnixTime created_at = 0;
  UnixTime updated_at = 0;
  std::string metadata = "{}";  // a JSON object, stored compact
  // Filled by list_devices only: when the device's current certificate (its latest-expiring
  // active one) expires; nullopt when it has none (revoked) or the device was not listed.
  std::optional<UnixTime> certificate_not_after;
};

// What the operator supplies for a new device; the store fills in status and times.
struct NewDevice {
  std::string id;
  std::string name;  // empty means "same as id"
  std::string type;  // empty, or a valid group name (same characters as a device id)
  std::string location;
  std::string firmware;
  std::string metadata = "{}";  // must parse as a JSON object
};

enum class CertificateStatus { active, revoked };
std::string_view to_string(CertificateStatus status) noexcept;

// What a certificate the CA signed is for. Every certificate it signs is recorded, so that each
// can be listed and revoked (and so appear on a CRL). Only a `device` certificate names a device
// and only those are ever loaded for the broker's connect check: a `server` certificate (the
// broker's own, from `ca issue-server`) or an `other` one (`ca issue`, which signs a CSR for use
// outside the registry) cannot connect as a device, whatever its CN says.
// A `claim` certificate belongs to a claim (see Claim): it lets devices ask for their own
// certificate and nothing else.
enum class CertificateKind { device, server, other, claim };
std::string_view to_string(CertificateKind kind) noexcept;
std::optional<CertificateKind> parse_certificate_kind(std::string_view text) noexcept;

struct Certificate {
  std::string serial_hex;          // upper-case hex; unique together with issuer
  std::string issuer;              // RFC 2253
  std::string sha256_fingerprint;  // lower-case hex of the DER's SHA-256; unique
  std::string device_id;           // the device's id for kind device; empty otherwise
  std::string subject;             // RFC 2253
  UnixTime not_before = 0;
  UnixTime not_after = 0;
  CertificateStatus status = CertificateStatus::active;
  std::optional<UnixTime> revoked_at;                 // set exactly when status is revoked
  std::optional<RevocationReason> revocation_reason;  // likewise
  std::string pem;
  CertificateKind kind = CertificateKind::device;
  // A renewal over MQTT: the fingerprint of the certificate it renews (certificates.renews,
  // always one of the same device's); empty for every other certificate.
  std::string renews;
};

// A freshly issued certificate to record; it always starts active.
struct NewCertificate {
  std::string serial_hex;
  std::string issuer;
  std::string sha256_fingerprint;
  std::string subject;
  UnixTime not_before = 0;
  UnixTime not_after = 0;
  std::string pem;
  // The device's private key when the tool made it and must keep it until it is packaged:
  // PKCS#8 PEM, ENCRYPTED under the operator's passphrase (the store refuses anything else).
  // Empty when the device holds its own key or the key was handed out at once.
  std::string held_key_pem;
};

struct Group {
  std::string name;  // same characters as a device id
  std::string description;
  UnixTime created_at = 0;
};
// Every device is in this group; a fresh registry gives it one rule: allow readwrite devices/%d/#.
inline constexpr std::string_view kDefaultGroup = "default";

// Access bits, as in acl::Rule: readwrite means all three, as in Mosquitto's acl_file.
inline constexpr std::uint8_t kAccessPublish = 1;
inline constexpr std::uint8_t kAccessSubscribe = 2;
inline constexpr std::uint8_t kAccessRead = 4;
inline constexpr std::uint8_t kAccessReadWrite = 7;

enum class SubjectKind { device, group };
std::string_view to_string(SubjectKind kind) noexcept;
enum class RuleEffect { allow, deny };
std::string_view to_string(RuleEffect effect) noexcept;

// An ACL rule as stored. id, pattern, access, effect and priority map 1:1 onto acl::Rule; the
// subject says whom it applies to (and, in rules_for_device, where the rule came from).
struct RuleRecord {
  std::int64_t id = 0;
  SubjectKind subject_kind = SubjectKind::group;
  std::string subject;  // device id or group name
  std::string pattern;  // validated by the caller with acl::pattern_problem
  std::uint8_t access = 0;
  RuleEffect effect = RuleEffect::allow;
  int priority = 0;
  UnixTime created_at = 0;
};

struct NewRule {
  SubjectKind subject_kind = SubjectKind::group;
  std::string subject;
  std::string pattern;
  std::uint8_t access = 0;  // 1..7
  RuleEffect effect = RuleEffect::allow;
  int priority = 0;
};

struct CrlState {
  std::uint64_t number = 0;  // the last number handed out; 0 before the first CRL
  std::optional<UnixTime> last_issued_at;
};

// One row of the hash-chained audit log (see audit.h for how `hash` is computed).
struct AuditEvent {
  std::int64_t seq = 0;  // 1, 2, 3, ... without gaps
  UnixTime at = 0;
  std::string actor;
  std::string action;   // "device.register", "device.revoke", "acl.grant", ...
  std::string subject;  // what it acted on: device id, group name, rule id, ...
  std::string details;  // a JSON object
  std::string prev_hash;
  std::string hash;
};

// One entry of the change feed: what to reload. `device` covers the device row, its certificates
// and its own rules; `group` covers the group and its rules; `crl` a new CRL number.
// `claim`: the claims (few) are reloaded whole; the subject names the claim changed.
enum class ChangeKind { device, group, crl, claim };
std::string_view to_string(ChangeKind kind) noexcept;

struct Change {
  std::int64_t seq = 0;  // strictly increasing, one per change row
  UnixTime at = 0;
  ChangeKind kind = ChangeKind::device;
  std::string subject;  // device id or group name; empty for crl
};

// A key the tool made, kept encrypted until its device is packaged (see NewCertificate).
struct HeldKey {
  std::string device_id;
  std::string certificate_sha256;  // the certificate the key belongs to
  std::string encrypted_pem;       // PKCS#8, encrypted
  UnixTime created_at = 0;
};

// Devices registered together, e.g. from one manufacturer's CSV file.
struct BatchMember {
  std::string device_id;
  std::int64_t line = 0;  // where it came from in the source (a CSV line number)
};
struct Batch {
  std::string id;
  std::string source;  // e.g. the CSV file's name
  UnixTime created_at = 0;
  std::vector<BatchMember> devices;  // in line order
};

// A credential bundle that was written: what it holds and the SHA-256 of the zip, never its
// password. A bundle holds devices, or (POST /v1/claims) one claim's credential and no device.
struct BundleDevice {
  std::string device_id;
  std::string certificate_sha256;
};
struct BundleRecord {
  std::string id;
  std::string batch_id;  // empty when not made from a batch
  std::string path;      // where the zip was written (absolute)
  std::string sha256;    // of the zip file
  std::int64_t size = 0;
  bool with_keys = false;  // some device's private key is inside
  UnixTime created_at = 0;
  std::optional<UnixTime> downloaded_at;  // set once, by the one-time link
  std::string downloaded_by;
  std::vector<BundleDevice> devices;
  // The claim whose certificate and key the zip holds, when it holds no device. Not a column: given
  // to record_bundle, which checks it and names it in the bundle.create audit row; get_bundle
  // leaves it empty.
  std::string claim{};
};

// A bearer token of the REST API; the store knows only the token's SHA-256.
enum class ApiRole { operator_role, reader };
std::string_view to_string(ApiRole role) noexcept;
std::optional<ApiRole> parse_api_role(std::string_view text) noexcept;
struct ApiToken {
  std::int64_t id = 0;
  std::string name;
  ApiRole role = ApiRole::reader;
  UnixTime created_at = 0;
  std::optional<UnixTime> revoked_at;
};

// A claim: the credential a fleet is flashed with so that each device can enroll itself (ask for
// its own certificate over MQTT, docs/provisioning.md). Its certificate (kind claim) identifies
// the connection; the claim says how many devices may enroll with it (quota, quota_used: a unit
// is spent in the transaction that records an enrolled device's certificate), until when, which
// client ids they may take (id_pattern, registry/id_pattern.h) and the type (group) they get.
enum class ClaimStatus { active, revoked };
std::string_view to_string(ClaimStatus status) noexcept;

struct Claim {
  std::string name;                // same characters as a device id
  std::string certificate_sha256;  // the claim certificate's fingerprint
  std::int64_t quota = 0;          // devices that may enroll, at least 1
  std::int64_t quota_used = 0;     // 0..quota
  UnixTime expires_at = 0;         // the claim certificate's not_after
  std::string id_pattern;
  std::string device_type;  // empty, or the group enrolled devices get as their type
  ClaimStatus status = ClaimStatus::active;
  UnixTime created_at = 0;
  std::string created_by;  // the actor
  std::optional<UnixTime> revoked_at;
};

// What the operator supplies for a new claim; the store fills in the rest.
struct NewClaim {
  std::string name;
  std::int64_t quota = 0;
  std::string id_pattern;  // checked with id_pattern_problem
  std::string device_type;
};

// Who makes a change, and when: written to the audit row, and the time every timestamp of the
// change uses (passed in, so the store never reads the clock itself).
struct Actor {
  std::string name;  // e.g. the operator's login, "rest:<client>"; must not be empty
  UnixTime now = 0;
};

}  // namespace onboard::registry
