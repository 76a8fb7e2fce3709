// Devices enrolling themselves over MQTT (docs/provisioning.md): the request a device published on
// `$provision/<client id>/csr`, as the broker's plugin hands it to the signer, turned into the
// answer the plugin publishes back. Shared by the REST route the plugin calls and the tests.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

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
  bool repeated = false;  // a retry answered with the certificate issued before
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

// Runs after the certificate is signed and before the registry write (the REST server takes its
// write turn here).
using BeforeEnroll = std::function<void()>;

// Checks the request (size, JSON, CSR, key, CN = client id, the claim's state and id pattern),
// answers a retry with the same key for an id already enrolled with the certificate issued then
// (no second quota unit), signs, and records the device, its certificate and the spent unit in one
// transaction (ClaimStore::enroll_device). Never throws; a registry or CA failure is
// internal_error, with the detail in `log` when given.
ProvisionAnswer enroll(registry::Store& store, const ca::Authority& ca,
                       const EnrollRequest& request, const registry::Actor& actor,
                       const BeforeEnroll& before_record = {},
                       const std::function<void(const std::string&)>& log = {});

}  // namespace onboard::ops
