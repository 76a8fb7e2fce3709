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
};

// Why `name` cannot name a claim (the characters of a device id), or nullopt.
std::optional<std::string> claim_name_problem(std::string_view name);
// The largest quota a claim may have.
inline constexpr std::int64_t kMaxClaimQuota = 10'000'000;

}  // namespace onboard::registry
