#include "core/revocation.h"

#include <array>

namespace onboard {
namespace {

struct ReasonInfo {
  RevocationReason reason;
  std::string_view name;
};
constexpr std::array<ReasonInfo, 7> kReasons{{
    {RevocationReason::unspecified, "unspecified"},
    {RevocationReason::key_compromise, "keyCompromise"},
    {RevocationReason::ca_compromise, "caCompromise"},
    {RevocationReason::affiliation_changed, "affiliationChanged"},
    {RevocationReason::superseded, "superseded"},
    {RevocationReason::cessation_of_operation, "cessationOfOperation"},
    {RevocationReason::privilege_withdrawn, "privilegeWithdrawn"},
}};

}  // namespace

std::optional<RevocationReason> parse_revocation_reason(std::string_view name) noexcept {
  for (const auto& r : kReasons) {
    if (r.name == name) return r.reason;
  }
  return std::nullopt;
}

std::string_view revocation_reason_name(RevocationReason reason) noexcept {
  for (const auto& r : kReasons) {
    if (r.reason == reason) return r.name;
  }
  return "unspecified";
}

}  // namespace onboard
