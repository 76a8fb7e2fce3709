#include "registry/model.h"

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
    case CertificateKind::claim:
      return "claim";
  }
  return "other";
}

std::optional<CertificateKind> parse_certificate_kind(std::string_view text) noexcept {
  for (auto kind : {CertificateKind::device, CertificateKind::server, CertificateKind::other,
                    CertificateKind::claim}) {
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
    case ChangeKind::claim:
      return "claim";
  }
  return "crl";
}

std::string_view to_string(ClaimStatus status) noexcept {
  return status == ClaimStatus::active ? "active" : "revoked";
}

}  // namespace onboard::registry
