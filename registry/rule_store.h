// ACL rules and groups: the role the rule and group commands use.
//
// Writes follow the Store contract (store.h): each mutating method is one transaction with its
// audit row and its change row, and no exception escapes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "registry/model.h"

namespace onboard::registry {

class RuleStore {
 public:
  virtual ~RuleStore() = default;

  // ACL rules. The pattern is the caller's to validate (acl::pattern_problem); the store refuses
  // an unknown subject (Errc::not_found) and an access mask outside 1..7.
  virtual Result<RuleRecord> add_rule(const NewRule& rule, const Actor& actor) = 0;
  virtual Status remove_rule(std::int64_t rule_id, const Actor& actor) = 0;
  virtual Result<std::vector<RuleRecord>> rules_for_subject(SubjectKind kind,
                                                            std::string_view name) = 0;
  // The device's own rules, those of "default" and those of its type's group; each record's
  // subject says where it came from. Sorted by priority (highest first), then id.
  virtual Result<std::vector<RuleRecord>> rules_for_device(std::string_view device_id) = 0;

  virtual Result<Group> create_group(std::string_view name, std::string_view description,
                                     const Actor& actor) = 0;
  virtual Result<std::vector<Group>> list_groups() = 0;
};

// The group name check the store applies, exposed so the CLI can check at the edge with the same
// words.
std::optional<std::string> group_name_problem(std::string_view name);

}  // namespace onboard::registry
