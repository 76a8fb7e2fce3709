#include "registry/claim_recovery.h"

#include <optional>

#include "core/identity.h"

namespace onboard::registry {

namespace {

// When the device's only certificate was issued, if recently_enrolled holds.
std::optional<UnixTime> enrolled_at(const SnapshotDevice& device, UnixTime now) noexcept {
  if (device.status() != DeviceStatus::active || device.certificates().size() != 1)
    return std::nullopt;
  const SnapshotCertificate& c = device.certificates().front();
  if (c.status() != CertificateStatus::active || now < c.not_before() || now > c.not_after())
    return std::nullopt;
  // `issued` may be up to the backdate ahead of `now` (the signer's clock ahead of the broker's;
  // any further and not_before is still to come, refused above): enrolled just now.
  const UnixTime issued = c.not_before() + kRecoveryIssueBackdate;
  if (now - issued > kClaimRecoveryWindow) return std::nullopt;
  return issued;
}

}  // namespace

bool recently_enrolled(const SnapshotDevice& device, UnixTime now) noexcept {
  return enrolled_at(device, now).has_value();
}

bool claim_recovery_allowed(const Snapshot& snapshot, const ClaimEntry& claim,
                            std::string_view client_id, UnixTime now) noexcept {
  if (snapshot.claim_standing(claim, now) != ConnectReason::accepted) return false;
  if (!is_valid_device_id(client_id) || !claim.pattern || !claim.pattern->matches(client_id))
    return false;
  const SnapshotDevice* device = snapshot.find_device(client_id);
  if (device == nullptr || device->type() != claim.access.device_type) return false;
  const auto issued = enrolled_at(*device, now);
  return issued && *issued >= claim.access.not_before;
}

}  // namespace onboard::registry
