// JSON views of registry values, shared by `onboardctl ... --json` and the REST server so that
// both speak the same field names.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/time.h"
#include "registry/model.h"

namespace onboard::ops {

nlohmann::json device_json(const registry::Device& device);
// device_json of a listed device, with its current certificate's expiry: "certificate_not_after"
// (null without an active certificate) and "certificate_expired" (at `now`).
nlohmann::json listed_device_json(const registry::Device& device, UnixTime now);
// A listed device's certificate expiry for a table: the time, "(expired)" after it, "-" for none.
std::string certificate_expiry_text(const registry::Device& device, UnixTime now);
nlohmann::json certificate_json(const registry::Certificate& certificate, bool with_pem);
nlohmann::json rule_json(const registry::RuleRecord& rule);
nlohmann::json audit_json(const registry::AuditEvent& event);
nlohmann::json token_json(const registry::ApiToken& token);
// What a claim is at `now`: "revoked", else "expired" or "used up", else "active".
std::string claim_state(const registry::Claim& claim, UnixTime now);
// A claim with its state at `now`; never its certificate or key.
nlohmann::json claim_json(const registry::Claim& claim, UnixTime now);
// The server's copy of a device's key, never its content: null when none exists.
nlohmann::json held_key_json(const std::optional<registry::HeldKey>& held);

// Whether `value` nests arrays and objects more than `levels` deep, found without recursion. A
// request's "metadata" is checked with it before anything serialises it: dump() recurses once per
// level, and a body within its size limit can nest deep enough to overflow a thread's stack.
bool nested_deeper_than(const nlohmann::json& value, int levels);

}  // namespace onboard::ops
