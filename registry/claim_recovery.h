// A device that enrolled with a claim but lost the `accepted` answer (it disconnected before the
// broker delivered it, the broker restarted) asks again: the claim gate lets its claim connect
// with the id it now has, for a short while after the enrolment, so that the same CSR gets the
// same certificate (docs/provisioning.md, "A lost answer"). This is the snapshot's part of that
// decision; the plugin adds what only it knows (who is connected, whether the device connected
// with its own certificate on this broker, the clean start).
#pragma once

#include <string_view>

#include "core/time.h"
#include "registry/snapshot.h"

namespace onboard::registry {

// How long after an enrolment its claim may connect with the enrolled id to ask again.
inline constexpr UnixTime kClaimRecoveryWindow = 3600;
// Certificates are issued with not_before this far in the past (ca/authority.cpp, clock skew): a
// device's first certificate was issued, so the device enrolled, at its not_before + this.
inline constexpr UnixTime kRecoveryIssueBackdate = 300;

// Whether a client connecting with `claim` and client id `client_id` (a registered device's id)
// may ask again for that device's certificate, as far as the snapshot can tell. All of:
//  - the claim usable (not revoked, not expired; its quota may be spent: the enrolment that lost
//    its answer may have spent the last unit) and the id a valid device id its pattern allows;
//  - the device active, of the claim's type (the type a claim gives what it enrolls);
//  - the device's only certificate a device certificate, active, in date, issued at or after the
//    claim certificate's not_before (the claim existed) and no longer than
//    kClaimRecoveryWindow ago: the certificate of an enrolment that just happened, never renewed.
// The snapshot does not know which claim enrolled a device: another claim of the same type whose
// pattern allows the id passes this too (the signer then answers id_taken unless the CSR's key is
// the device's, docs/provisioning.md).
// The device part of the above: active, one certificate, a device certificate, active, in date,
// issued no longer than kClaimRecoveryWindow ago. "In date" (not_before passed) lets the issue
// time be up to kRecoveryIssueBackdate in the future: a signer whose clock runs ahead of the
// broker's, whose device connects right after its enrolment, is still recently enrolled (and so
// remembered as connected with its own certificate).
bool recently_enrolled(const SnapshotDevice& device, UnixTime now) noexcept;

bool claim_recovery_allowed(const Snapshot& snapshot, const ClaimEntry& claim,
                            std::string_view client_id, UnixTime now) noexcept;

}  // namespace onboard::registry
