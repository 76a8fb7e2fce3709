// Rules as a table on the terminal, as `acl list` and `device show` print them.
#pragma once

#include <vector>

#include "registry/model.h"

namespace onboard::cli {

void print_rules(const std::vector<registry::RuleRecord>& rules);

}  // namespace onboard::cli
