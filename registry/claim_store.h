// Claims (model.h, docs/provisioning.md): the credential devices enroll themselves with. The
// role `onboardctl claim` uses; the broker reads claims through AccessStore.
//
// Writes follow the Store contract (store.h): one transaction each with its audit row and its
// change row (kind claim, which makes every broker reload its claims), nothing written when
// nothing changes, no exception escapes.
#pragma once

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
};

// Why `name` cannot name a claim (the characters of a device id), or nullopt.
std::optional<std::string> claim_name_problem(std::string_view name);
// The largest quota a claim may have.
inline constexpr std::int64_t kMaxClaimQuota = 10'000'000;

}  // namespace onboard::registry
