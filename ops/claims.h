// Claims as operations, shared by the CLI (`onboardctl claim`) and, later, the REST server: make a
// claim certificate and key and package them (an AES-256 zip, as a bundle), record the claim;
// revoke one (its certificate goes on the CRL). docs/provisioning.md has the protocol.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "bundle/package.h"
#include "ca/authority.h"
#include "ca/keys.h"
#include "core/error.h"
#include "core/secret.h"
#include "registry/store.h"

namespace onboard::ops {

// How long a claim may live at most: it is meant to be short-lived (a factory run).
inline constexpr UnixTime kMaxClaimLifetime = 365 * 86400;

struct ClaimRequest {
  registry::NewClaim claim;  // an empty id_pattern means registry::kAnyIdPattern
  UnixTime lifetime = 0;     // seconds from now: the claim certificate's validity and the expiry
  ca::KeyAlg key_alg = ca::KeyAlg::p256;
  std::filesystem::path out;  // the zip
  bool replace = false;       // replace an existing zip
  // The caller's own zip password (checked for strength); else a generated one.
  const Secret* password = nullptr;
  bundle::BrokerAddress broker;  // for claim.json
};

struct ClaimCreated {
  registry::Claim claim;
  std::string serial_hex;
  std::filesystem::path zip;  // absolute
  std::string zip_sha256;
  Secret password;
  bool password_generated = false;
};

// Runs once the zip is written, before the claim is recorded (the CLI writes its password file
// here). An error removes the zip and records nothing.
using BeforeRecordClaim = std::function<Status(const ClaimCreated&)>;

// Checks everything first (name, quota, id pattern, type, lifetime, an existing claim of that
// name or an existing zip: nothing is made), then makes the key, has the CA sign the claim
// certificate (CN = the claim's name, valid from five minutes ago until now + lifetime), writes
// the zip (ca-chain.pem, claim.crt, claim.key, claim.json), calls before_record and records the
// claim. A failure after the zip was written removes it.
Result<ClaimCreated> create_claim(registry::Store& store, const ca::Authority& ca,
                                  const ClaimRequest& request, const registry::Actor& actor,
                                  const BeforeRecordClaim& before_record = {});

struct ClaimRevoked {
  registry::ClaimRevokeOutcome outcome;
  std::optional<std::uint64_t> crl_number;  // when this call rewrote the CRL
};
// Revokes the claim and its certificate and rewrites the CRL (also for a claim revoked before
// whose certificate the CRL does not list yet).
Result<ClaimRevoked> revoke_claim(registry::Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, std::string_view name,
                                  RevocationReason reason, const registry::Actor& actor);

}  // namespace onboard::ops
