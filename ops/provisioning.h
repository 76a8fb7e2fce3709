// Devices enrolling themselves over MQTT (docs/provisioning.md): the request a device published on
// `$provision/<client id>/csr`, as the broker's plugin hands it to the signer, turned into the
// answer the plugin publishes back. Shared by the REST route the plugin calls and the tests.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ca/authority.h"
#include "core/error.h"
#include "registry/store.h"

namespace onboard::ops {

// The largest request a device may publish (the JSON payload).
inline constexpr std::size_t kMaxProvisionRequestBytes = 16 * 1024;
// How long an enrolled device's certificate is valid.
inline constexpr int kEnrolledCertificateDays = 365;

// Why a request was refused: docs/provisioning.md, "Error codes".
enum class ProvisionCode {
  malformed_request,
  payload_too_large,
  invalid_csr,
  cn_mismatch,
  weak_key,
  id_not_allowed,
  id_taken,
  claim_expired,
  claim_revoked,
  claim_used_up,
  rate_limited,
  signer_unavailable,
  internal_error,
  renewal_not_allowed,
  renewal_too_soon,
  proof_invalid,
};
std::string_view to_string(ProvisionCode code) noexcept;
// Whether the same request may succeed later.
bool retryable(ProvisionCode code) noexcept;

struct ProvisionAnswer {
  std::optional<ProvisionCode> refused;  // nullopt: enrolled
  std::string message;                   // for a refusal: safe to show the device
  std::string device_id;
  std::string certificate_pem;
  std::string ca_chain_pem;
  bool repeated = false;             // a retry answered with the certificate issued before
  std::string certificate_sha256{};  // renewal: the fingerprint of certificate_pem
};

// The payload the plugin publishes: `{"device_id","certificate","ca_chain"}` on accepted,
// `{"code","message","retryable"}` on rejected.
std::string answer_payload(const ProvisionAnswer& answer);
// "accepted" or "rejected".
std::string_view answer_topic_suffix(const ProvisionAnswer& answer);
ProvisionAnswer refusal(ProvisionCode code, std::string message);

struct EnrollRequest {
  std::string claim;      // the claim the client connected with
  std::string client_id;  // the id it asks for
  std::string payload;    // what it published, as published
};

// Runs after the certificate is signed and before the registry write of a renewal (the REST server
// takes its write turn here).
using BeforeEnroll = std::function<void()>;

// Records a checked and signed enrolment: ClaimStore::enroll_device, or (the REST server) a share
// of a group commit that records it with others waiting at the same time
// (ClaimStore::enroll_devices, rest/enrol_batch.h), with the same outcome.
using RecordEnrolment =
    std::function<Result<registry::EnrollOutcome>(const registry::EnrollItem& item)>;

// Checks the request (size, JSON, CSR, key, CN = client id, the claim's state and id pattern),
// answers a retry with the same key for an id already enrolled with the certificate issued then
// (no second quota unit), signs, and records the device, its certificate and the spent unit in one
// transaction (`record`; none given: ClaimStore::enroll_device on `store`). Never throws; a
// registry or CA failure is internal_error, with the detail in `log` when given.
ProvisionAnswer enroll(registry::Store& store, const ca::Authority& ca,
                       const EnrollRequest& request, const registry::Actor& actor,
                       const RecordEnrolment& record = {},
                       const std::function<void(const std::string&)>& log = {});

// A device renewing its own certificate: what it published on `$provision/<device id>/renew`,
// with the fingerprint of the certificate it connected with (the plugin's word, which the signer
// does not take alone: the payload's proof must be a signature by that certificate's key, the key
// read from the registry).
struct RenewRequest {
  std::string device_id;         // the client id = its device id
  std::string presented_sha256;  // the certificate it connected with
  std::string payload;           // `{"csr": PEM, "proof": base64}`, as published
  // The presented certificate must be at least this old (seconds since it was issued: its
  // not_before + kIssueBackdate) or the renewal is renewal_too_soon (serve --renewal-min-age):
  // a device looping renew → connect → renew would otherwise have the CRL rewritten, and every
  // broker re-authenticate its clients, at each round.
  UnixTime min_age = 0;
};

// The proof of possession a renewal carries: a signature by the presented certificate's key over
// the CSR's DER encoding (i2d, what `openssl req -outform DER` writes): RSA PKCS#1 v1.5 with
// SHA-256, ECDSA with SHA-256 (DER-encoded, any of the accepted curves), or Ed25519 over the DER
// itself; `openssl dgst -sha256 -sign old.key csr.der` makes the first two. Sent as standard
// base64 (RFC 4648 §4, padded, on one line). Whether `signature` is such a signature of `csr_der`
// by `key` (false for a null `key`); never throws, and leaves this thread's OpenSSL error queue
// empty on every path.
bool renewal_proof_valid(const EVP_PKEY* key, std::string_view csr_der, std::string_view signature);

// Checks the request as enroll does (size, JSON, CSR, key, signature, CN = device id; no
// `metadata`), then the device (active) and the presented certificate (its active, in-date device
// certificate): otherwise renewal_not_allowed; then the proof (`proof`, base64 of a signature by
// the presented certificate's key, as the registry holds it, over the CSR's DER: see
// renewal_proof_valid): missing, malformed or not verifying is proof_invalid, a retry included;
// a presented certificate younger than
// request.min_age is renewal_too_soon (checked after the retry below, whose answer costs no
// signature and changes nothing). A retry with the same key is answered with the
// certificate issued for it before; otherwise a new one is signed (kEnrolledCertificateDays) and
// recorded beside the presented one in one transaction (ClaimStore::renew_device), audited as
// certificate.renew. Never throws.
ProvisionAnswer renew(registry::Store& store, const ca::Authority& ca, const RenewRequest& request,
                      const registry::Actor& actor, const BeforeEnroll& before_record = {},
                      const std::function<void(const std::string&)>& log = {});

struct Superseded {
  std::vector<std::string> serials;         // revoked as superseded by this call
  std::optional<std::uint64_t> crl_number;  // the CRL written for them
  // Batches that failed: their candidates stay due, for the next sweep to try again. The batches
  // after one go on without it, so that one that keeps failing never holds up the rest of the
  // fleet.
  std::size_t failed_batches = 0;
  std::optional<Error> first_failure;  // the first failed batch's error
};
// The device connected with the certificate `current_sha256`: its active certificates recorded
// before it are revoked as superseded (ClaimStore::supersede_predecessors) and, when there were
// any (or the CRL file does not list the device's revoked certificates yet: a rerun after a failed
// rewrite), the CRL is rewritten. A device with no revoked certificate has nothing to finish: a
// missing CRL file is then the CRL refresher's to write, not this notice's.
Result<Superseded> supersede(registry::Store& store, const ca::Authority& ca,
                             const std::filesystem::path& crl_path, std::string_view device_id,
                             std::string_view current_sha256, const registry::Actor& actor);
// Whether supersede would write anything for this notice (the same two reasons), found by reads
// alone: serve answers a notice for which it is false without taking its write turn. The CRL file
// is read only when the device has revoked certificates. Errc::invalid_input for a bad id or
// fingerprint, as supersede.
Result<bool> supersede_due(registry::Store& store, const ca::Authority& ca,
                           const std::filesystem::path& crl_path, std::string_view device_id,
                           std::string_view current_sha256);

// How long a renewed device's old certificate stays valid when its new one never connects.
inline constexpr UnixTime kDefaultRenewalGrace = 86400;
// Certificates are issued with not_before this far in the past (clock skew, ca/authority.cpp): a
// renewal was recorded at its certificate's not_before + this.
inline constexpr UnixTime kIssueBackdate = 300;

// The grace periods that ran out by `now`: the renewed certificates whose latest waiting renewal
// was recorded more than `grace` seconds ago (ClaimStore::renewals_due). A read: no write lock,
// nothing written; serve runs it outside its write turn.
Result<std::vector<registry::DueRenewal>> renewals_due(registry::Store& store, UnixTime grace,
                                                       UnixTime now);
// The caller's write turn (serve's): taken for one write, released when the lock returned goes.
using WriteTurn = std::function<std::unique_lock<std::mutex>()>;
// Those of `due` (renewals_due's answer) still due at actor.now are revoked as superseded
// (ClaimStore::supersede_renewed, which looks at each again under the write lock) and, when any
// were, the CRL is rewritten once. The candidates go in batches of at most `batch` (a device's
// kept in one batch when they fit), each its own transaction under its own `turn` with a pause of
// 2 ms between, so that the sweep after a fleet-wide renewal lets other writes in between
// batches; the CRL is rewritten under one more.
// A batch that fails is rolled back alone and counted in the answer (failed_batches,
// first_failure); the sweep goes on with the next. The error returned is the CRL rewrite's, with
// the revocations committed (the caller's to retry).
Result<Superseded> supersede_expired(registry::Store& store, const ca::Authority& ca,
                                     const std::filesystem::path& crl_path,
                                     const std::vector<registry::DueRenewal>& due, UnixTime grace,
                                     const registry::Actor& actor, const WriteTurn& turn = {},
                                     std::size_t batch = registry::kSupersedeBatch);

}  // namespace onboard::ops
