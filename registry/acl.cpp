#include "registry/acl.h"

#include <array>
#include <utility>

namespace onboard::acl {
namespace {

constexpr std::array<std::pair<std::string_view, std::uint8_t>, 4> kAccessNames{{
    {"publish", kPublish},
    {"subscribe", kSubscribe},
    {"read", kRead},
    {"readwrite", kReadWrite},
}};

// Would this rule, if it applied, change the current decision? Only a higher priority, or a deny
// where an allow holds at the same priority; ties keep the first rule, which is the one reported.
bool could_overrule(const Rule& rule, const Rule* best) noexcept {
  if (best == nullptr || rule.priority > best->priority) return true;
  return rule.priority == best->priority && rule.effect == Effect::deny &&
         best->effect == Effect::allow;
}

// What a decision works out once about its topic or filter, instead of once per rule.
struct Target {
  explicit Target(std::string_view topic_or_filter, bool subscribe) noexcept
      : text(topic_or_filter), split(subscribe ? std::string_view() : topic_or_filter) {
    if (subscribe) {
      filter_first_level = text.substr(0, text.find('/'));
      // A wildcard first level can be covered or met by any rule: every tag is kept then.
      if (filter_first_level != "+" && filter_first_level != "#")
        keep_tags(Pattern::level_tag(filter_first_level));
    } else if (split.valid() && split.fits()) {
      keep_tags(Pattern::level_tag(split[0]));
    }
  }
  // Rules whose first-level tag is 0 (no literal first level) or `tag` may apply.
  void keep_tags(std::uint8_t tag) noexcept {
    kept_tags = static_cast<std::uint16_t>(1u | 1u << tag);
  }
  std::string_view text;
  detail::SplitTopic split;             // publish and read: the topic's levels, and its validity
  std::string_view filter_first_level;  // subscribe
  // Bit t set: a rule whose Pattern::first_level_tag is t may apply. All set when the topic's or
  // filter's first level is no plain literal to compare with (or a topic too deep to split).
  std::uint16_t kept_tags = 0xffff;
};

// Certain not to apply from the tags alone? Both first levels are plain literals (a tag each) and
// the tags differ, so the levels differ: every matcher compares the first levels first and stops
// there (see first_level and first_level_excludes).
bool tags_differ(const Rule& rule, const Target& target) noexcept {
  return (target.kept_tags >> rule.pattern.first_level_tag() & 1u) == 0;
}

// Publish and read, for a well-formed pattern: how does its first level compare with the topic's?
// A plain literal is compared here, without a call: most rules a decision gets this far with
// (their first-level tag the topic's) and match_topic_split then need not compare it again.
enum class FirstLevel : std::uint8_t { differs, equal, not_literal };
FirstLevel first_level(const Pattern& pattern, std::string_view topic_first_level) noexcept {
  const PatternLevel& first = pattern.levels().front();
  if (first.kind != LevelKind::literal) return FirstLevel::not_literal;
  return detail::same_level(first.in(pattern.text()), topic_first_level) ? FirstLevel::equal
                                                                         : FirstLevel::differs;
}

// Subscribe: can the pattern's first level alone rule the filter out? When it is a plain literal
// and the filter's first level is another plain literal, neither covering nor intersecting can
// hold (topic.cpp's walks compare those two levels first and stop on a difference).
bool first_level_excludes(const Pattern& pattern, std::string_view filter_first_level) noexcept {
  if (!pattern.well_formed()) return false;
  const PatternLevel& first = pattern.levels().front();
  if (first.kind != LevelKind::literal) return false;
  if (filter_first_level == "+" || filter_first_level == "#") return false;
  return first.in(pattern.text()) != filter_first_level;
}

// An allow must be certain to apply; a deny applies unless it is certain not to. So an
// undecidable match (malformed pattern, unusable substitution) never grants and never lifts a deny.
bool applies(const Rule& rule, bool subscribe, const Target& target, const Substitutions& subs,
             const detail::PreparedSubstitutions& prepared) noexcept {
  Match match = Match::no;
  if (!subscribe) {
    // Well-formed patterns compare pre-split levels; the rest (and topics too deep to split on the
    // stack) take the interpreted walk, which gives the same answers.
    if (!rule.pattern.well_formed() || !target.split.fits()) {
      match = detail::match_topic(rule.pattern.text(), target.text, subs);
    } else {
      switch (first_level(rule.pattern, target.split[0])) {
        case FirstLevel::differs:
          match = Match::no;
          break;
        case FirstLevel::equal:
          match = detail::match_topic_split(rule.pattern, target.split, prepared, 1);
          break;
        case FirstLevel::not_literal:
          match = detail::match_topic_split(rule.pattern, target.split, prepared);
          break;
      }
    }
  } else if (first_level_excludes(rule.pattern, target.filter_first_level)) {
    match = Match::no;
  } else if (rule.effect == Effect::allow) {
    match = detail::match_covers(rule.pattern.text(), target.text, subs);
  } else {
    match = detail::match_intersects(rule.pattern.text(), target.text, subs);
  }
  return rule.effect == Effect::allow ? match == Match::yes : match != Match::no;
}

}  // namespace

std::optional<std::uint8_t> parse_access(std::string_view text) noexcept {
  std::uint8_t mask = 0;
  for (;;) {
    const std::size_t bar = text.find('|');
    const std::string_view word = text.substr(0, bar);
    bool known = false;
    for (const auto& [name, bits] : kAccessNames) {
      if (word == name) {
        mask |= bits;
        known = true;
      }
    }
    if (!known) return std::nullopt;
    if (bar == text.npos) return mask;
    text.remove_prefix(bar + 1);
  }
}

std::string access_name(std::uint8_t mask) {
  if (mask == 0 || mask > kReadWrite) return "invalid";
  if (mask == kReadWrite) return "readwrite";
  std::string name;
  for (const auto& [word, bits] : kAccessNames) {
    if (bits != kReadWrite && (mask & bits) != 0) {
      if (!name.empty()) name += '|';
      name += word;
    }
  }
  return name;
}

std::optional<Effect> parse_effect(std::string_view text) noexcept {
  if (text == "allow") return Effect::allow;
  if (text == "deny") return Effect::deny;
  return std::nullopt;
}

std::string_view to_string(Effect effect) noexcept {
  return effect == Effect::allow ? "allow" : "deny";
}

std::string_view to_string(Decision decision) noexcept {
  switch (decision) {
    case Decision::allow:
      return "allow";
    case Decision::deny:
      return "deny";
    case Decision::no_match:
      return "no_match";
  }
  return "invalid";
}

Evaluation evaluate(std::span<const std::span<const Rule>> rule_sets, Access access,
                    std::string_view topic_or_filter, const Substitutions& subs) noexcept {
  return evaluate(rule_sets, access, topic_or_filter, detail::PreparedSubstitutions(subs));
}

Evaluation evaluate(std::span<const std::span<const Rule>> rule_sets, Access access,
                    std::string_view topic_or_filter,
                    const detail::PreparedSubstitutions& prepared) noexcept {
  // Decision table. Every step fails closed.
  //  1. `access` must be exactly one of publish, subscribe or read, and the topic (publish, read)
  //     or the filter (subscribe) must be valid; otherwise deny, with no rule.
  //  2. Only rules whose access mask includes `access` are considered.
  //  3. Publish and read: a rule applies if its pattern matches the topic. Subscribe: an allow rule
  //     applies if its pattern covers the filter (every topic the filter can match), a deny rule if
  //     its pattern intersects the filter (some topic both match); a partial grant is no grant.
  //     When a pattern is malformed or needs an unusable substitution, an allow rule does not
  //     apply and a deny rule does.
  //  4. Of the applicable rules, those with the highest priority decide; at equal priority deny
  //     beats allow. The deciding rule is the first such rule in `rule_sets` order.
  //  5. Nothing applies: no_match, which the caller treats as deny.
  const bool subscribe = access == kSubscribe;
  if (access != kPublish && access != kRead && !subscribe) return {Decision::deny, nullptr};
  const Target target(topic_or_filter, subscribe);
  if (subscribe ? !is_valid_filter(topic_or_filter) : !target.split.valid()) {
    return {Decision::deny, nullptr};
  }

  const Substitutions subs = prepared.values();
  const Rule* best = nullptr;
  for (const std::span<const Rule> rules : rule_sets) {
    for (const Rule& rule : rules) {
      if ((rule.access & access) == 0 || tags_differ(rule, target) || !could_overrule(rule, best))
        continue;
      if (applies(rule, subscribe, target, subs, prepared)) best = &rule;
    }
  }
  if (best == nullptr) return {Decision::no_match, nullptr};
  return {best->effect == Effect::allow ? Decision::allow : Decision::deny, best};
}

}  // namespace onboard::acl
