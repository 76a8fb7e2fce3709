// Claims as operations, shared by the CLI (`onboardctl claim`) and the REST server (/v1/claims):
// make a claim certificate and key and package them (an AES-256 zip, as a bundle), record the
// claim; list them a page at a time; revoke one (its certificate goes on the CRL).
// docs/provisioning.md has the protocol.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  std::filesystem::path out;  // the zip; with as_bundle, the directory it goes in (created)
  bool replace = false;       // replace an existing zip
  // Name the zip BUNDLE-ID.zip (a generated "bdl-" id, which no request can choose or collide
  // with) in the directory `out`, and record it as a bundle of the claim once the claim is
  // recorded, so that a one-time link can deliver it (POST /v1/claims). The zip is never read back
  // into a reply.
  bool as_bundle = false;
  // The caller's own zip password (checked for strength); else a generated one.
  const Secret* password = nullptr;
  bundle::BrokerAddress broker;  // for claim.json
};

struct ClaimCreated {
  registry::Claim claim;
  std::string serial_hex;
  std::filesystem::path zip;  // absolute
  std::string zip_sha256;
  std::int64_t zip_size = 0;
  std::string bundle_id;  // with as_bundle: the bundle recorded for the zip
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
// claim. A failure after the zip was written removes it. With as_bundle, the bundle is recorded
// after the claim; should that fail, the zip is removed and the claim revoked in the registry
// (nobody holds its credential; the broker refuses a revoked claim at once, and its certificate is
// on the next CRL), and the error says so.
Result<ClaimCreated> create_claim(registry::Store& store, const ca::Authority& ca,
                                  const ClaimRequest& request, const registry::Actor& actor,
                                  const BeforeRecordClaim& before_record = {});

// One page of the claims, by name: at most `limit` (at least 1) whose names sort after `after`
// (empty: from the first); next_after is the last name listed when more follow.
struct ClaimPage {
  std::vector<registry::Claim> claims;
  std::optional<std::string> next_after;
};
Result<ClaimPage> list_claims(registry::Store& store, std::size_t limit, std::string_view after);

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
