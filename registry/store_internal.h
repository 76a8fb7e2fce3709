// The full store, written once over the SQL seam (sql.h) for every backend: its class, and the
// input checks its parts share. Each role's methods are defined in a file of their own
// (store_devices.cpp, store_crl.cpp, store_rules.cpp, store_audit.cpp, store_delivery.cpp,
// store_tokens.cpp); read_access is the connection's (access_read.cpp), shared with the broker's
// read-only store. Internal to registry/.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/revocation.h"
#include "registry/entity_state.h"
#include "registry/sql.h"
#include "registry/sqlite_backup.h"
#include "registry/store.h"

namespace onboard::registry::sql {

// --- Input checks (store_checks.cpp) ---------------------------------------------------------
// Everything that is echoed in a message is checked first, so messages stay one clean line.

bool is_hex(std::string_view text, bool upper);
// Accepts upper or lower case and the colon-separated form `openssl x509 -fingerprint` prints.
std::optional<std::string> normalize_fingerprint(std::string_view text);
Status check_device_id(std::string_view id);
Status check_group_name(std::string_view name);
Status check_subject(SubjectKind kind, std::string_view name);
Result<NewCertificate> checked_certificate(NewCertificate c);
Result<std::string> compact_metadata(std::string_view json);

// A stored revocation reason; an unknown one throws CorruptValue.
RevocationReason reason_from(const std::string& text);

// --- The store -------------------------------------------------------------------------------

class SqlStore final : public Store, private Connection {
 public:
  SqlStore(std::unique_ptr<Database> db, std::string where, bool read_only)
      : Connection(std::move(db), std::move(where), read_only) {}

  Status create_or_upgrade(UnixTime now);
  // sqlite_backup.cpp, on an SQLite registry only: what backup_sqlite_registry and
  // restore_sqlite_registry report, and the restore itself.
  Result<RegistrySummary> summary();
  Result<RestoreSummary> restore_from(const std::filesystem::path& backup, const Actor& actor);

  // AccessStore
  Result<AccessData> read_access(const AccessQuery& query) override {
    return read_access_data(query);
  }

  // DeviceStore
  Result<Device> register_device(const NewDevice& device, const NewCertificate& certificate,
                                 const Actor& actor) override;
  Result<Device> get_device(std::string_view id) override;
  Result<std::vector<Device>> list_devices(const DeviceFilter& filter) override;
  Result<std::int64_t> count_devices(const DeviceFilter& filter) override;
  Result<bool> set_device_enabled(std::string_view id, bool enabled, const Actor& actor) override;
  Result<Device> update_device(std::string_view id, const DeviceUpdate& update,
                               const Actor& actor) override;
  Result<RevokeOutcome> revoke_device(std::string_view id, RevocationReason reason,
                                      const Actor& actor) override;
  Result<std::vector<Certificate>> certificates_of(std::string_view device_id) override;
  Result<Certificate> find_certificate_by_fingerprint(std::string_view sha256_hex) override;
  Result<AddedCertificate> add_certificate(std::string_view device_id,
                                           const NewCertificate& certificate, bool supersede_active,
                                           const Actor& actor) override;
  Result<Certificate> record_certificate(CertificateKind kind, const NewCertificate& certificate,
                                         const Actor& actor) override;
  Result<std::vector<Certificate>> list_certificates(const CertificateFilter& filter) override;
  Result<Certificate> find_certificate_by_serial(std::string_view serial_hex) override;
  Result<CertificateRevokeOutcome> revoke_certificate(std::string_view sha256_hex,
                                                      RevocationReason reason,
                                                      const Actor& actor) override;

  // CrlStore
  Result<std::vector<RevokedEntry>> revoked_certificates(std::string_view issuer) override;
  Result<std::uint64_t> next_crl_number(const Actor& actor) override;
  Result<CrlState> crl_state() override;
  Result<std::uint64_t> next_root_crl_number(const Actor& actor) override;

  // RuleStore
  Result<RuleRecord> add_rule(const NewRule& rule, const Actor& actor) override;
  Status remove_rule(std::int64_t rule_id, const Actor& actor) override;
  Result<std::vector<RuleRecord>> rules_for_subject(SubjectKind kind,
                                                    std::string_view name) override;
  Result<std::vector<RuleRecord>> rules_for_device(std::string_view device_id) override;
  Result<Group> create_group(std::string_view name, std::string_view description,
                             const Actor& actor) override;
  Result<std::vector<Group>> list_groups() override;

  // AuditStore
  Result<std::vector<AuditEvent>> audit_list(std::size_t limit, std::int64_t after_seq) override;
  Result<AuditCheck> verify_audit() override;
  Status record_event(std::string_view action, std::string_view subject, std::string_view details,
                      const Actor& actor) override;
  Result<std::int64_t> change_seq() override;
  Result<std::vector<Change>> changes_since(std::int64_t seq) override;

  // DeliveryStore
  Result<std::optional<HeldKey>> held_key(std::string_view device_id) override;
  Status create_batch(std::string_view id, std::string_view source, const Actor& actor) override;
  Result<Batch> get_batch(std::string_view id) override;
  Result<Device> register_device_in_batch(const NewDevice& device,
                                          const NewCertificate& certificate,
                                          std::string_view batch_id, std::int64_t line,
                                          const Actor& actor) override;
  Result<BundleRecord> record_bundle(const BundleRecord& bundle, const Actor& actor) override;
  Result<BundleRecord> get_bundle(std::string_view id) override;
  Result<std::vector<BundleRecord>> bundles_of_device(std::string_view device_id) override;
  Result<BundleRecord> claim_bundle_download(std::string_view id, std::string_view downloaded_by,
                                             const Actor& actor) override;

  // TokenStore
  Result<ApiToken> create_api_token(std::string_view name, ApiRole role,
                                    std::string_view token_sha256, const Actor& actor) override;
  Result<std::vector<ApiToken>> list_api_tokens() override;
  Result<bool> revoke_api_token(std::string_view name, const Actor& actor) override;
  Result<ApiToken> find_api_token(std::string_view token_sha256) override;

  // ClaimStore (store_claims.cpp)
  Result<Claim> create_claim(const NewClaim& claim, const NewCertificate& certificate,
                             const Actor& actor) override;
  Result<Claim> get_claim(std::string_view name) override;
  Result<std::vector<Claim>> list_claims() override;
  Result<ClaimRevokeOutcome> revoke_claim(std::string_view name, RevocationReason reason,
                                          const Actor& actor) override;
  Result<EnrollOutcome> enroll_device(std::string_view claim, const NewDevice& device,
                                      const NewCertificate& certificate,
                                      const Actor& actor) override;
  std::vector<Result<EnrollOutcome>> enroll_devices(const std::vector<EnrollItem>& items) override;
  Result<RenewOutcome> renew_device(std::string_view device_id, std::string_view presented_sha256,
                                    const NewCertificate& certificate, const SameKey& same_key,
                                    const Actor& actor) override;
  Result<std::vector<std::string>> supersede_predecessors(std::string_view device_id,
                                                          std::string_view current_sha256,
                                                          const Actor& actor) override;
  Result<std::vector<std::string>> predecessors_of(std::string_view device_id,
                                                   std::string_view current_sha256) override;
  Result<std::vector<DueRenewal>> renewals_due(UnixTime renewed_by) override;
  Result<std::vector<std::string>> supersede_renewed(const std::vector<DueRenewal>& due,
                                                     UnixTime renewed_by,
                                                     const Actor& actor) override;

 private:
  Result<RestoreSummary> restore_attached(std::string_view backup_name, const Actor& actor);

  // register_device and register_device_in_batch (store_devices.cpp).
  Result<Device> insert_device(const NewDevice& device, const NewCertificate& certificate,
                               std::optional<std::string_view> batch_id, std::int64_t line,
                               const Actor& actor);

  // Helpers for use inside read()/write(); they throw Failure.

  // The rows of a new device (checked by the caller, metadata compacted) and its first
  // certificate; creates its type's group if new (`new_group`). A duplicate certificate is an
  // error: the caller's write() rolls the device row back with it.
  Result<Device> insert_device_rows(const NewDevice& device, const std::string& metadata,
                                    const NewCertificate& certificate, const Actor& actor,
                                    Touched& touched, bool& new_group);

  // Devices and certificates (store_devices.cpp).
  std::optional<Device> load_device(std::string_view id);
  // The device a change is about, for a change its revocation forbids (a revoked device's record
  // is final): Errc::not_found when unknown, Errc::conflict "device ID is revoked; <refusal>".
  Result<Device> load_unrevoked_device(std::string_view id, std::string_view refusal);
  // kind device needs the device's id; any other kind records no device. `renews`: the
  // fingerprint of the certificate a renewal over MQTT renews (renew_device only).
  Status insert_certificate(CertificateKind kind, std::string_view device_id,
                            const NewCertificate& c,
                            std::optional<std::string_view> renews = std::nullopt);
  // Touches each certificate it revokes.
  std::vector<std::string> revoke_active_certificates(std::string_view device_id,
                                                      RevocationReason reason, UnixTime now,
                                                      Touched& touched);
  void set_device_status(std::string_view id, DeviceStatus status, UnixTime now);
  // What `current` (a normalized fingerprint) replaces among the device's certificates
  // (ClaimStore::supersede_predecessors): the serials and fingerprints in the order recorded.
  struct Predecessors {
    std::string current_serial;
    std::vector<std::string> serials, fingerprints;
  };
  Predecessors find_predecessors(const std::string& id, const std::string& current);
  // Revokes these certificates of the device as superseded (touching each, erasing a key held
  // for one), with the device's change row and a certificate.supersede audit row.
  void supersede_certificates(const std::string& device_id,
                              const std::vector<std::string>& fingerprints,
                              const nlohmann::json& details, const Actor& actor);

  // Rules and groups (store_rules.cpp).
  bool group_exists(std::string_view name);
  bool subject_exists(SubjectKind kind, std::string_view name);
  void insert_group(std::string_view name, std::string_view description, UnixTime now,
                    Touched& touched);
  std::vector<RuleRecord> query_rules(Statement& statement);

  // The audit row and the change row every write appends (store_audit.cpp).
  void record_change(ChangeKind kind, std::string_view subject, UnixTime now);
  // The row's details get the state of each touched entity before and after the write.
  void record_audit(const Actor& actor, std::string_view action, std::string_view subject,
                    const nlohmann::json& details, const Touched& touched = {});
  // The entity's state digest as stored now; nullopt when it does not exist.
  std::optional<std::string> stored_digest(Entity entity, std::string_view key);
  // Before a write changes the entity: remembers its digest for record_audit.
  void touch(Touched& touched, Entity entity, std::string_view key);
  // After a write that replaced the state wholesale (a new or migrated registry, a restore): the
  // row records every entity's digest, in parts of kAttestChunk (entity_state.h).
  void record_attested(const Actor& actor, std::string_view action, std::string_view subject,
                       nlohmann::json details);

  // Claims (store_claims.cpp).
  std::optional<Claim> load_claim(std::string_view name);
  // enroll_device's writes inside the caller's write transaction, its arguments checked; a
  // refusal has written nothing, an error or a throw may have written part (the caller rolls
  // back).
  Result<EnrollOutcome> enroll_in_transaction(std::string_view claim_name, const NewDevice& input,
                                              const std::string& metadata,
                                              const NewCertificate& cert, const Actor& actor);
  // Marks the claim of this certificate revoked (touching it), if there is an active one.
  void revoke_claim_of(std::string_view certificate_sha256, UnixTime now, Touched& touched);

  // Held keys and bundles (store_delivery.cpp).
  void hold_key(std::string_view device_id, const NewCertificate& certificate, UnixTime now);
  void erase_held_key(std::string_view device_id);
  std::optional<BundleRecord> load_bundle(std::string_view id);
};

}  // namespace onboard::registry::sql
