// The input checks every Store applies, shared with the CLI (device_store.h, rule_store.h).
#include "registry/device_store.h"
#include "registry/rule_store.h"

#include <nlohmann/json.hpp>

#include "core/identity.h"

namespace onboard::registry {

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
  if (json.size() > kMaxBytes) return "metadata is larger than 64 KiB";
  bool too_deep = false;
  const auto parsed = nlohmann::json::parse(
      json,
      [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > kMaxMetadataDepth) too_deep = true;
        return !too_deep;  // drops what is too deep instead of building it
      },
      /*allow_exceptions=*/false);
  if (too_deep) return "metadata is nested more than 32 levels deep";
  if (parsed.is_discarded()) return "metadata is not valid JSON";
  if (!parsed.is_object()) return "metadata must be a JSON object";
  return std::nullopt;
}

}  // namespace onboard::registry
