#include "cli/rule_table.h"

#include <iostream>
#include <string>

#include "cli/table.h"
#include "registry/acl.h"

namespace onboard::cli {

void print_rules(const std::vector<registry::RuleRecord>& rules) {
  Table table({"RULE", "FROM", "EFFECT", "ACCESS", "PATTERN", "PRIORITY"});
  for (const auto& r : rules) {
    table.add({std::to_string(r.id), std::string(to_string(r.subject_kind)) + " " + r.subject,
               std::string(to_string(r.effect)), acl::access_name(r.access), r.pattern,
               std::to_string(r.priority)});
  }
  table.print(std::cout);
}

}  // namespace onboard::cli
