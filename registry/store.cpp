#include "registry/store.h"

#include <nlohmann/json.hpp>

#include "core/identity.h"

namespace onboard::registry {

std::string_view to_string(DeviceStatus status) noexcept {
  switch (status) {
    case DeviceStatus::active:
      return "active";
    case DeviceStatus::disabled:
      return "disabled";
    case DeviceStatus::revoked:
      return "revoked";
  }
  return "revoked";
}

std::optional<DeviceStatus> parse_device_status(std::string_view text) noexcept {
  for (auto status : {DeviceStatus::active, DeviceStatus::disabled, DeviceStatus::revoked}) {
    if (text == to_string(status)) return status;
  }
  return std::nullopt;
}

std::string_view to_string(CertificateStatus status) noexcept {
  return status == CertificateStatus::active ? "active" : "revoked";
}

std::string_view to_string(CertificateKind kind) noexcept {
  switch (kind) {
    case CertificateKind::device:
      return "device";
    case CertificateKind::server:
      return "server";
    case CertificateKind::other:
      return "other";
  }
  return "other";
}

std::optional<CertificateKind> parse_certificate_kind(std::string_view text) noexcept {
  for (auto kind : {CertificateKind::device, CertificateKind::server, CertificateKind::other}) {
    if (text == to_string(kind)) return kind;
  }
  return std::nullopt;
}

std::string_view to_string(SubjectKind kind) noexcept {
  return kind == SubjectKind::device ? "device" : "group";
}

std::string_view to_string(ApiRole role) noexcept {
  return role == ApiRole::operator_role ? "operator" : "reader";
}

std::optional<ApiRole> parse_api_role(std::string_view text) noexcept {
  if (text == "operator") return ApiRole::operator_role;
  if (text == "reader") return ApiRole::reader;
  return std::nullopt;
}

std::string_view to_string(RuleEffect effect) noexcept {
  return effect == RuleEffect::allow ? "allow" : "deny";
}

std::string_view to_string(ChangeKind kind) noexcept {
  switch (kind) {
    case ChangeKind::device:
      return "device";
    case ChangeKind::group:
      return "group";
    case ChangeKind::crl:
      return "crl";
  }
  return "crl";
}

// Group names become device types and appear next to device ids in the CLI and the change feed,
// so they follow the same character rules, and are described in the same words.
std::optional<std::string> group_name_problem(std::string_view name) {
  auto problem = device_id_problem(name);
  if (!problem) return std::nullopt;
  constexpr std::string_view kPrefix = "device id";
  if (problem->starts_with(kPrefix)) problem->replace(0, kPrefix.size(), "group name");
  return problem;
}

// Bounded in size and depth: metadata is shown by the CLI and hashed into the audit log, and
// nlohmann's dump() recurses once per nesting level.
std::optional<std::string> metadata_problem(std::string_view json) {
  constexpr std::size_t kMaxBytes = 64 * 1024;
  constexpr int kMaxDepth = 32;
  if (json.size() > kMaxBytes) return "metadata is larger than 64 KiB";
  bool too_deep = false;
  const auto parsed = nlohmann::json::parse(
      json,
      [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > kMaxDepth) too_deep = true;
        return !too_deep;  // drops what is too deep instead of building it
      },
      /*allow_exceptions=*/false);
  if (too_deep) return "metadata is nested more than 32 levels deep";
  if (parsed.is_discarded()) return "metadata is not valid JSON";
  if (!parsed.is_object()) return "metadata must be a JSON object";
  return std::nullopt;
}

}  // namespace onboard::registry
