// ACL evaluation: which rule decides whether a client may publish to, subscribe to or receive a
// topic. A pure function of plain values; the plugin maps the Decision to a broker code.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "registry/pattern.h"
#include "registry/topic.h"

namespace onboard::acl {

// Bits of a rule's access mask. A check asks for exactly one of publish, subscribe or read;
// readwrite grants all three, as in Mosquitto's acl_file.
enum Access : std::uint8_t { kPublish = 1, kSubscribe = 2, kRead = 4, kReadWrite = 7 };

// "publish", "subscribe", "read", "readwrite", or several joined by '|' ("publish|read").
std::optional<std::uint8_t> parse_access(std::string_view text) noexcept;
// The canonical text for a mask of 1..7 ("readwrite" for 7, else names joined by '|'); "invalid"
// for anything else.
std::string access_name(std::uint8_t mask);

enum class Effect : std::uint8_t { allow, deny };
std::optional<Effect> parse_effect(std::string_view text) noexcept;
std::string_view to_string(Effect effect) noexcept;

struct Rule {
  std::int64_t id = 0;
  Pattern pattern;  // checked with pattern_problem before it is stored
  std::uint8_t access = 0;
  Effect effect = Effect::deny;
  int priority = 0;
};

enum class Decision : std::uint8_t { allow, deny, no_match };
std::string_view to_string(Decision decision) noexcept;

struct Evaluation {
  Decision decision;
  const Rule* rule;  // the rule that decided; nullptr when none did (no_match, or refused input)
};

// Decides one check. `rule_sets` are, for instance, the device's own rules followed by each of its
// groups' rules; their order only breaks ties between equally placed rules (the first one is
// reported). `topic_or_filter` is a topic name for kPublish and kRead, a filter for kSubscribe.
// The returned pointer points into `rule_sets`. Allocates nothing.
Evaluation evaluate(std::span<const std::span<const Rule>> rule_sets, Access access,
                    std::string_view topic_or_filter, const Substitutions& subs) noexcept;
// The same, for a caller that decides many times with the same substitutions and knows their
// usability already (plugin/client_rules.h: checked once per binding).
Evaluation evaluate(std::span<const std::span<const Rule>> rule_sets, Access access,
                    std::string_view topic_or_filter,
                    const detail::PreparedSubstitutions& prepared) noexcept;

}  // namespace onboard::acl
