// Claims (model.h, docs/provisioning.md): the credential devices enroll themselves with. The
// role `onboardctl claim` uses; the broker reads claims through AccessStore.
//
// Writes follow the Store contract (store.h): one transaction each with its audit row and its
// change row (kind claim, which makes every broker reload its claims), nothing written when
// nothing changes, no exception escapes.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/revocation.h"
#include "registry/model.h"

namespace onboard::registry {

struct ClaimRevokeOutcome {
  bool already_revoked = false;  // then nothing was changed or written
  Claim claim;                   // as it is now
  std::string serial_hex;        // of its certificate
};

// Why an enrolment was refused; `none` when the device was enrolled.
enum class EnrollRefusal {
  none,
  claim_unknown,
  claim_revoked,
  claim_expired,
  claim_used_up,
  id_not_allowed,  // the id does not match the claim's id pattern
  id_taken,        // a device of that id exists
};
std::string_view to_string(EnrollRefusal refusal) noexcept;

struct EnrollOutcome {
  EnrollRefusal refusal = EnrollRefusal::none;
  Device device;  // the new device, when enrolled
};

// One enrolment of a group commit (ClaimStore::enroll_devices): enroll_device's arguments.
struct EnrollItem {
  std::string claim;
  NewDevice device;
  NewCertificate certificate;
  Actor actor;
};
// The most enrolments one group commit records.
inline constexpr std::size_t kMaxEnrollBatch = 256;

// Why a renewal was refused; `none` when a certificate is the answer.
enum class RenewRefusal {
  none,
  device_unknown,
  device_not_active,        // disabled or revoked
  certificate_not_current,  // the presented certificate is not an active, in-date one of the device
  too_many_pending,  // kMaxPendingRenewals other active certificates wait for their first connect
};
// How many certificates of a device besides the one it presents may be active (renewed, their
// first connect still to come): a device cannot pile up certificates by renewing again and again.
inline constexpr std::size_t kMaxPendingRenewals = 2;
std::string_view to_string(RenewRefusal refusal) noexcept;

struct RenewOutcome {
  RenewRefusal refusal = RenewRefusal::none;
  Certificate certificate;  // the new one, or the one a retry is answered with
  bool repeated = false;    // a retry: the certificate recorded before, nothing written
};

// The most candidates one supersede_renewed call takes: one transaction each, so that the sweep
// after a fleet-wide renewal holds the write lock for one batch at a time, never for the fleet.
inline constexpr std::size_t kSupersedeBatch = 500;

// A renewed certificate whose grace period is over (ClaimStore::renewals_due).
struct DueRenewal {
  std::string device_id;
  std::string sha256_fingerprint;
};

// Whether a recorded certificate holds the key a renewal request asks for (the caller compares
// keys; the store does not parse certificates).
using SameKey = std::function<bool(const Certificate&)>;

class ClaimStore {
 public:
  virtual ~ClaimStore() = default;

  // Records the claim and its certificate (kind claim; no held key) in one step; expires_at is
  // the certificate's not_after. Errc::invalid_input for a bad name, quota (< 1), id pattern or
  // type; Errc::conflict for a name or certificate that exists.
  virtual Result<Claim> create_claim(const NewClaim& claim, const NewCertificate& certificate,
                                     const Actor& actor) = 0;
  virtual Result<Claim> get_claim(std::string_view name) = 0;
  // Every claim, by name.
  virtual Result<std::vector<Claim>> list_claims() = 0;
  // Marks the claim revoked and revokes its certificate at actor.now (so it is on the next CRL).
  // Revoking a certificate of kind claim directly (revoke_certificate) revokes its claim too.
  virtual Result<ClaimRevokeOutcome> revoke_claim(std::string_view name, RevocationReason reason,
                                                  const Actor& actor) = 0;
  // A device enrolling itself with a claim, in one transaction: the claim must be active and in
  // date at actor.now, the id must match its id pattern and be no device's; then one unit of its
  // quota is spent (`quota_used = quota_used + 1 WHERE quota_used < quota`, so that concurrent
  // enrolments can never spend more than the quota) and the device (of the claim's type) and its
  // certificate are recorded, audited as device.enroll. A refusal is an outcome, not an error,
  // and writes nothing.
  virtual Result<EnrollOutcome> enroll_device(std::string_view claim, const NewDevice& device,
                                              const NewCertificate& certificate,
                                              const Actor& actor) = 0;
  // A group commit: up to kMaxEnrollBatch enrolments recorded in one transaction (one sync to
  // disk for them all), in order, each exactly as enroll_device records it alone (the same
  // decision table, quota update, rows, change rows and audit row) and each in its own savepoint:
  // the refusal or the error of one writes nothing of it and changes nothing for the others.
  // One result per item, in order. An error of the whole (a failed commit, a failure the database
  // cannot roll back to a savepoint, more than kMaxEnrollBatch items) is every item's: then
  // nothing of any of them is recorded.
  virtual std::vector<Result<EnrollOutcome>> enroll_devices(
      const std::vector<EnrollItem>& items) = 0;

  // A device renewing its own certificate over MQTT, in one transaction (decision table in
  // store_devices.cpp): the device must be active and `presented_sha256` (the certificate it
  // connected with) one of its device certificates, active and in date at actor.now. A retry is
  // an active certificate renewing the presented one whose key `same_key` says is the request's:
  // it is the answer (repeated) and nothing is written. Otherwise the new certificate is recorded
  // as renewing the presented one (certificates.renews), which stays active until
  // supersede_predecessors (a renewal of it connected) or supersede_renewed (the grace period),
  // audited as certificate.renew. A refusal is an outcome and writes nothing.
  virtual Result<RenewOutcome> renew_device(std::string_view device_id,
                                            std::string_view presented_sha256,
                                            const NewCertificate& certificate,
                                            const SameKey& same_key, const Actor& actor) = 0;
  // The device connected with `current_sha256`: that is the certificate it holds. With
  // "renews" read as "is a child of", revoked (reason superseded), audited as
  // certificate.supersede: every active device certificate of the device that is an ancestor of
  // the current one (what it renews, what that renewed, ...) or another descendant of such an
  // ancestor (a renewal waiting beside it, and renewals of that); never a descendant of the
  // current one (a renewal of it, still waiting) nor a certificate no renewal links to it.
  // Nothing is written (and nothing returned) unless the device is active and `current_sha256`
  // is an active certificate of it; when there is nothing to revoke, the write lock is not taken
  // (a read finds that first). Returns the serials revoked, in the order they were recorded.
  virtual Result<std::vector<std::string>> supersede_predecessors(std::string_view device_id,
                                                                  std::string_view current_sha256,
                                                                  const Actor& actor) = 0;
  // What supersede_predecessors would revoke now, read without writing (the serials, in the order
  // recorded; none when the device is not active or `current_sha256` not an active certificate of
  // it). Errc::invalid_input for a bad id or fingerprint, as there.
  virtual Result<std::vector<std::string>> predecessors_of(std::string_view device_id,
                                                           std::string_view current_sha256) = 0;
  // The end of renewals' grace periods, in two steps so that the scan holds no write lock:
  // renewals_due reads, without writing, the active device certificates of active devices that
  // are renewed (an active certificate renews them) and whose every active renewal has its
  // not_before at or before `renewed_by`: the grace period is counted from the latest renewal of
  // the certificate, and only a certificate that was renewed is ever due, never one because a
  // renewal was issued beside it (a sibling the device may hold). supersede_renewed then revokes
  // (reason superseded) those of `due` that are still due by the same rule when its write
  // transaction looks again (a connect, a new renewal, a disable or a revocation since the scan
  // leaves a certificate as it is), audited per device as certificate.supersede, in one
  // transaction; at most kSupersedeBatch candidates (Errc::invalid_input otherwise, nothing
  // written: ops::supersede_expired hands them over in batches). Returns the serials revoked
  // (none: nothing written).
  virtual Result<std::vector<DueRenewal>> renewals_due(UnixTime renewed_by) = 0;
  virtual Result<std::vector<std::string>> supersede_renewed(const std::vector<DueRenewal>& due,
                                                             UnixTime renewed_by,
                                                             const Actor& actor) = 0;
};

// Why `name` cannot name a claim (the characters of a device id), or nullopt.
std::optional<std::string> claim_name_problem(std::string_view name);
// The largest quota a claim may have.
inline constexpr std::int64_t kMaxClaimQuota = 10'000'000;

}  // namespace onboard::registry
