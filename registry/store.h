// The Store seam: everything the rest of the project may ask of the registry's storage. SQLite
// implements it now (sqlite_store.h), PostgreSQL later; callers never see SQL.
//
// Contract for every implementation:
// - Every mutating method is ONE transaction that also appends its audit row and its change row:
//   either all of it is written or nothing is. A method that finds nothing to change (revoking a
//   revoked device, disabling a disabled one) writes nothing at all, audit included.
// - No exception escapes: failures are Result errors with a message safe to show an operator.
//   Errc::not_found for an unknown device, certificate, group or rule; Errc::conflict for a
//   duplicate or a state that forbids the change; Errc::invalid_input for malformed values;
//   Errc::io for disk, permission and lock problems; Errc::corrupt for a damaged or foreign file.
// - A Store object belongs to one thread at a time; open one per thread or process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/revocation.h"
#include "registry/access.h"
#include "registry/model.h"

namespace onboard::registry {

struct DeviceFilter {
  std::optional<DeviceStatus> status;
  std::optional<std::string> type;
  std::size_t limit = 100;  // list_devices only; 0 means no limit
  std::string after_id;     // keyset paging: only ids sorting after this one (list_devices only)
};

// update_device's input: only the fields that are set change. name "" means "same as the id" and
// type "" means no type (no type group), as at registration.
struct DeviceUpdate {
  std::optional<std::string> name, type, location, firmware;
  std::optional<std::string> metadata;  // a JSON object
  bool empty() const noexcept { return !name && !type && !location && !firmware && !metadata; }
};

struct RevokeOutcome {
  bool already_revoked = false;              // then nothing was changed or written
  std::vector<std::string> revoked_serials;  // certificates this call revoked
};

struct AddedCertificate {
  Certificate certificate;
  std::vector<std::string> superseded_serials;  // revoked with reason superseded
};

struct CertificateFilter {
  std::optional<CertificateKind> kind;
  std::optional<CertificateStatus> status;
};

struct CertificateRevokeOutcome {
  bool already_revoked = false;  // then nothing was changed or written
  Certificate certificate;       // as it is now (revoked)
};

// verify_audit's answer: ok, or the first bad row and what is wrong with it.
struct AuditCheck {
  std::int64_t rows_checked = 0;
  std::optional<std::int64_t> bad_seq;
  std::string problem;    // "row 17 was edited", "row 18 is missing", ...
  std::string head_hash;  // worth recording elsewhere: it pins the whole chain
  bool ok() const noexcept { return !bad_seq.has_value(); }
};

class Store {
 public:
  virtual ~Store() = default;

  // Devices. register_device writes the device, its first certificate, its type's group if that
  // is new, the audit row and the change rows, or nothing. A duplicate id is Errc::conflict.
  virtual Result<Device> register_device(const NewDevice& device, const NewCertificate& certificate,
                                         const Actor& actor) = 0;
  virtual Result<Device> get_device(std::string_view id) = 0;
  // Sorted by id; page with filter.after_id = the last id of the previous page.
  virtual Result<std::vector<Device>> list_devices(const DeviceFilter& filter) = 0;
  virtual Result<std::int64_t> count_devices(const DeviceFilter& filter) = 0;
  // false when the device already was in that state (nothing written). A revoked device is
  // Errc::conflict.
  virtual Result<bool> set_device_enabled(std::string_view id, bool enabled,
                                          const Actor& actor) = 0;
  // Changes the device's descriptive fields; returns the device as it now is. Validated like
  // register_device. A revoked device is Errc::conflict (its record is final); values equal to
  // the stored ones write nothing. A type change is also a change row for the device (its group,
  // and so its rules, change on the broker) and creates the new type's group if it is new.
  virtual Result<Device> update_device(std::string_view id, const DeviceUpdate& update,
                                       const Actor& actor) = 0;
  // Revokes every active certificate of the device at actor.now and marks the device revoked.
  virtual Result<RevokeOutcome> revoke_device(std::string_view id, RevocationReason reason,
                                              const Actor& actor) = 0;

  // Certificates. add_certificate is renewal: with supersede_active, the device's active
  // certificates are revoked (reason superseded) in the same transaction. A revoked device is
  // Errc::conflict; a duplicate fingerprint or issuer+serial too.
  virtual Result<std::vector<Certificate>> certificates_of(std::string_view device_id) = 0;
  virtual Result<Certificate> find_certificate_by_fingerprint(std::string_view sha256_hex) = 0;
  virtual Result<AddedCertificate> add_certificate(std::string_view device_id,
                                                   const NewCertificate& certificate,
                                                   bool supersede_active, const Actor& actor) = 0;
  // Every revoked certificate of every kind that `issuer` (RFC 2253, as stored) issued: what that
  // CA's CRL lists.
  virtual Result<std::vector<RevokedEntry>> revoked_certificates(std::string_view issuer) = 0;

  // Certificates the CA signed outside the device registry (kind server or other; a device
  // certificate goes through register_device or add_certificate, and kind device here is
  // Errc::invalid_input). A held key is refused: the registry keeps keys of devices only. Audited
  // as certificate.record; no change row (nothing the broker loads changes).
  virtual Result<Certificate> record_certificate(CertificateKind kind,
                                                 const NewCertificate& certificate,
                                                 const Actor& actor) = 0;
  // Every certificate of every kind, in the order they were recorded.
  virtual Result<std::vector<Certificate>> list_certificates(const CertificateFilter& filter) = 0;
  // By serial (upper or lower case hex). Serials are unique per issuer; one that two issuers
  // share is Errc::conflict (name the certificate by its fingerprint then).
  virtual Result<Certificate> find_certificate_by_serial(std::string_view serial_hex) = 0;
  // Revokes one certificate of any kind at actor.now. A device certificate's device keeps its
  // status (it may hold another certificate), but the change feed names it, so the broker
  // disconnects whoever is connected with the revoked certificate; a key held for that
  // certificate is erased. Revoking a revoked certificate says already_revoked and writes
  // nothing.
  virtual Result<CertificateRevokeOutcome> revoke_certificate(std::string_view sha256_hex,
                                                              RevocationReason reason,
                                                              const Actor& actor) = 0;

  // ACL rules. The pattern is the caller's to validate (acl::pattern_problem); the store refuses
  // an unknown subject (Errc::not_found) and an access mask outside 1..7.
  virtual Result<RuleRecord> add_rule(const NewRule& rule, const Actor& actor) = 0;
  virtual Status remove_rule(std::int64_t rule_id, const Actor& actor) = 0;
  virtual Result<std::vector<RuleRecord>> rules_for_subject(SubjectKind kind,
                                                            std::string_view name) = 0;
  // The device's own rules, those of "default" and those of its type's group; each record's
  // subject says where it came from. Sorted by priority (highest first), then id.
  virtual Result<std::vector<RuleRecord>> rules_for_device(std::string_view device_id) = 0;

  virtual Result<Group> create_group(std::string_view name, std::string_view description,
                                     const Actor& actor) = 0;
  virtual Result<std::vector<Group>> list_groups() = 0;

  // CRL numbering: next_crl_number increments the stored number atomically and returns it.
  virtual Result<std::uint64_t> next_crl_number(const Actor& actor) = 0;
  virtual Result<CrlState> crl_state() = 0;
  // The root CA's CRL has a number sequence of its own (only used with an issuing intermediate,
  // whose revocation the root's CRL publishes). Audited as crl.issue_root; no change row.
  virtual Result<std::uint64_t> next_root_crl_number(const Actor& actor) = 0;

  // Audit log, oldest first: the rows with seq > after_seq, at most `limit` (0: all).
  virtual Result<std::vector<AuditEvent>> audit_list(std::size_t limit,
                                                     std::int64_t after_seq = 0) = 0;
  virtual Result<AuditCheck> verify_audit() = 0;

  // Change feed: the latest change seq (0 for none), and the changes after `seq`, oldest first.
  virtual Result<std::int64_t> change_seq() = 0;
  virtual Result<std::vector<Change>> changes_since(std::int64_t seq) = 0;

  // Keys held for packaging. register_device and add_certificate store one when the certificate
  // carries held_key_pem (replacing an older one); add_certificate without one, when it
  // supersedes, and revoke_device delete the device's held key in the same transaction.
  // nullopt: no server copy exists.
  virtual Result<std::optional<HeldKey>> held_key(std::string_view device_id) = 0;

  // Batches: create_batch records an empty batch; register_device adds a device to one when
  // batch_id is given (same transaction). An unknown batch is Errc::not_found.
  virtual Status create_batch(std::string_view id, std::string_view source, const Actor& actor) = 0;
  virtual Result<Batch> get_batch(std::string_view id) = 0;
  virtual Result<Device> register_device_in_batch(const NewDevice& device,
                                                  const NewCertificate& certificate,
                                                  std::string_view batch_id, std::int64_t line,
                                                  const Actor& actor) = 0;

  // Bundles. record_bundle re-checks under the write lock that every device is active and that
  // each listed certificate is its active one (Errc::conflict otherwise, and nothing is
  // written), records the bundle, and deletes the held keys of the devices whose keys it holds
  // (with_keys and a matching certificate) -- erased from the file, not just unlinked. Duplicate
  // bundle id: Errc::conflict.
  virtual Result<BundleRecord> record_bundle(const BundleRecord& bundle, const Actor& actor) = 0;
  virtual Result<BundleRecord> get_bundle(std::string_view id) = 0;
  virtual Result<std::vector<BundleRecord>> bundles_of_device(std::string_view device_id) = 0;
  // Marks the bundle downloaded, once: a second claim is Errc::conflict (the REST server answers
  // 410 Gone); an unknown bundle Errc::not_found.
  virtual Result<BundleRecord> claim_bundle_download(std::string_view id,
                                                     std::string_view downloaded_by,
                                                     const Actor& actor) = 0;

  // API tokens: only the SHA-256 (lower-case hex) of a token is stored. A duplicate name or hash
  // is Errc::conflict. find_api_token answers not_found for unknown AND revoked tokens.
  virtual Result<ApiToken> create_api_token(std::string_view name, ApiRole role,
                                            std::string_view token_sha256, const Actor& actor) = 0;
  virtual Result<std::vector<ApiToken>> list_api_tokens() = 0;
  // false when it was revoked already (nothing written).
  virtual Result<bool> revoke_api_token(std::string_view name, const Actor& actor) = 0;
  virtual Result<ApiToken> find_api_token(std::string_view token_sha256) = 0;

  // An audit row for an event that changes nothing else (a refused download, a link issued).
  // `details` must be a JSON object.
  virtual Status record_event(std::string_view action, std::string_view subject,
                              std::string_view details, const Actor& actor) = 0;

  // What the broker decides from, read in ONE read transaction so that the change seq and the
  // data agree: everything (a few set-based reads, never one query per device), the listed
  // devices and groups, or those the change feed names after query.after_seq (then
  // change_seq == after_seq means nothing changed). See AccessData for what comes back.
  virtual Result<AccessData> read_access(const AccessQuery& query) = 0;
};

// Input checks the store applies, exposed so the CLI can check at the edge with the same words.
std::optional<std::string> group_name_problem(std::string_view name);
std::optional<std::string> metadata_problem(std::string_view json);

}  // namespace onboard::registry
