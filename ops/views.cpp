#include "ops/views.h"

#include <ctime>
#include <utility>
#include <vector>

#include "registry/acl.h"

namespace onboard::ops {

using nlohmann::json;

json device_json(const registry::Device& d) {
  return json{{"id", d.id},
              {"name", d.name},
              {"type", d.type},
              {"location", d.location},
              {"firmware", d.firmware},
              {"status", std::string(to_string(d.status))},
              {"created_at", iso_time(d.created_at)},
              {"updated_at", iso_time(d.updated_at)},
              {"metadata", json::parse(d.metadata, nullptr, false)}};
}

json listed_device_json(const registry::Device& d, UnixTime now) {
  json j = device_json(d);
  if (d.certificate_not_after) {
    j["certificate_not_after"] = iso_time(*d.certificate_not_after);
    j["certificate_expired"] = *d.certificate_not_after < now;
  } else {
    j["certificate_not_after"] = nullptr;
    j["certificate_expired"] = nullptr;
  }
  return j;
}

std::string certificate_expiry_text(const registry::Device& d, UnixTime now) {
  if (!d.certificate_not_after) return "-";
  return iso_time(*d.certificate_not_after) + (*d.certificate_not_after < now ? " (expired)" : "");
}

json certificate_json(const registry::Certificate& c, bool with_pem) {
  json j{{"serial", c.serial_hex},
         {"sha256_fingerprint", c.sha256_fingerprint},
         {"issuer", c.issuer},
         {"subject", c.subject},
         {"not_before", iso_time(c.not_before)},
         {"not_after", iso_time(c.not_after)},
         {"status", std::string(to_string(c.status))}};
  if (c.revoked_at) j["revoked_at"] = iso_time(*c.revoked_at);
  if (c.revocation_reason)
    j["revocation_reason"] = std::string(revocation_reason_name(*c.revocation_reason));
  if (with_pem) j["pem"] = c.pem;
  return j;
}

json rule_json(const registry::RuleRecord& r) {
  return json{{"id", r.id},
              {"subject_kind", std::string(to_string(r.subject_kind))},
              {"subject", r.subject},
              {"effect", std::string(to_string(r.effect))},
              {"access", acl::access_name(r.access)},
              {"pattern", r.pattern},
              {"priority", r.priority}};
}

json audit_json(const registry::AuditEvent& e) {
  return json{{"seq", e.seq},         {"at", iso_time(e.at)},
              {"actor", e.actor},     {"action", e.action},
              {"subject", e.subject}, {"details", json::parse(e.details, nullptr, false)},
              {"hash", e.hash}};
}

json token_json(const registry::ApiToken& t) {
  json j{{"name", t.name},
         {"role", std::string(to_string(t.role))},
         {"created_at", iso_time(t.created_at)},
         {"revoked_at", nullptr}};
  if (t.revoked_at) j["revoked_at"] = iso_time(*t.revoked_at);
  return j;
}

std::string claim_state(const registry::Claim& c, UnixTime now) {
  if (c.status == registry::ClaimStatus::revoked) return "revoked";
  if (now > c.expires_at) return "expired";
  if (c.quota_used >= c.quota) return "used up";
  return "active";
}

json claim_json(const registry::Claim& c, UnixTime now) {
  return json{{"name", c.name},
              {"status", to_string(c.status)},
              {"state", claim_state(c, now)},
              {"certificate_sha256", c.certificate_sha256},
              {"quota", c.quota},
              {"quota_used", c.quota_used},
              {"expires_at", iso_time(c.expires_at)},
              {"id_pattern", c.id_pattern},
              {"type", c.device_type},
              {"created_at", iso_time(c.created_at)},
              {"created_by", c.created_by},
              {"revoked_at", c.revoked_at ? json(iso_time(*c.revoked_at)) : json(nullptr)}};
}

json held_key_json(const std::optional<registry::HeldKey>& held) {
  if (!held) return nullptr;
  return json{{"encrypted", true},
              {"since", iso_time(held->created_at)},
              {"certificate_sha256", held->certificate_sha256},
              {"wiped_when", "bundled"}};
}

bool nested_deeper_than(const nlohmann::json& value, int levels) {
  std::vector<std::pair<const nlohmann::json*, int>> todo{{&value, 0}};
  while (!todo.empty()) {
    const auto [next, depth] = todo.back();
    todo.pop_back();
    if (!next->is_structured() || next->empty()) continue;
    if (depth >= levels) return true;
    for (const auto& member : *next) todo.emplace_back(&member, depth + 1);
  }
  return false;
}

}  // namespace onboard::ops
