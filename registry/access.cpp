#include "registry/access.h"

namespace onboard::registry {

acl::Rule to_acl_rule(const RuleRecord& record) {
  return acl::Rule{record.id, record.pattern, record.access,
                   record.effect == RuleEffect::allow ? acl::Effect::allow : acl::Effect::deny,
                   record.priority};
}

}  // namespace onboard::registry
