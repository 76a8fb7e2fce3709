// Devices and their certificates, and the certificates the CA signed outside the device registry:
// the role the registry commands and the REST server's device routes use.
//
// Writes follow the Store contract (store.h): each mutating method is one transaction with its
// audit row and its change row, a call that finds nothing to change writes nothing, and no
// exception escapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/revocation.h"
#include "registry/model.h"

namespace onboard::registry {

struct DeviceFilter {
  std::optional<DeviceStatus> status;
  std::optional<std::string> type;
  std::size_t limit = 100;  // list_devices only; 0 means no limit
  std::string after_id;     // keyset paging: only ids sorting after this one (list_devices only)
  // Only devices whose current certificate expires at or before this time (expired ones too).
  std::optional<UnixTime> expiring_by;
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

class DeviceStore {
 public:
  virtual ~DeviceStore() = default;

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
};

// How deep metadata may nest: a value inside the metadata object sits in at most this many
// objects and arrays, the metadata object included.
inline constexpr int kMaxMetadataDepth = 32;

// The metadata check the store applies, exposed so the CLI can check at the edge with the same
// words.
std::optional<std::string> metadata_problem(std::string_view json);

}  // namespace onboard::registry
