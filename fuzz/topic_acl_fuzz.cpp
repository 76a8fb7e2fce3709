// registry/topic.h, pattern.h, acl.h: topics, filters and rule patterns arrive from devices
// (PUBLISH, SUBSCRIBE) and from operators (rules). The input is five newline-separated fields:
// pattern, topic (also used as a filter), device id, client id, username (the last one takes the
// rest, newlines included). Nothing may crash, and these must hold:
//   - a valid topic is a valid filter; SplitTopic agrees with is_valid_topic;
//   - a pattern pattern_problem accepts is well formed as a Pattern;
//   - a topic that a pattern matches is valid, and so is the pattern as a filter;
//   - the pre-split matcher agrees with the interpreted one;
//   - covering implies intersecting; for a topic used as a filter, covering and intersecting
//     are both the same as matching;
//   - evaluate() with one allow rule allows exactly what the pattern matches or covers, and a
//     deny rule beside it always wins.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "registry/acl.h"
#include "registry/pattern.h"
#include "registry/topic.h"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard::acl;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::array<std::string_view, 5> fields{};
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const auto end = i + 1 < fields.size() ? rest.find('\n') : std::string_view::npos;
    fields[i] = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
  }
  const std::string_view pattern_text = fields[0];
  const std::string_view topic = fields[1];
  const Substitutions subs{fields[2], fields[3], fields[4]};

  const bool topic_valid = is_valid_topic(topic);
  const bool filter_valid = is_valid_filter(topic);
  if (topic_valid) require(filter_valid);
  const detail::SplitTopic split(topic);
  require(split.valid() == topic_valid);

  const auto problem = pattern_problem(pattern_text);
  const Pattern pattern(pattern_text);
  require(pattern.text() == pattern_text);
  if (!problem) require(pattern.well_formed());

  const bool matches = pattern_matches_topic(pattern_text, topic, subs);
  if (matches) {
    require(topic_valid);
    require(is_valid_filter(pattern_text));
  }
  if (topic_valid && split.fits() && pattern.well_formed()) {
    const detail::PreparedSubstitutions prepared(subs);
    require(detail::match_topic_split(pattern, split, prepared) ==
            detail::match_topic(pattern_text, topic, subs));
  }

  const bool covers = pattern_covers_filter(pattern_text, topic, subs);
  const bool intersects = pattern_intersects_filter(pattern_text, topic, subs);
  if (covers) {
    require(filter_valid);
    require(intersects);
  }
  if (topic_valid) {
    require(covers == matches);
    require(intersects == matches);
  }

  // One allow rule for everything, then the same pattern as a deny rule of equal priority (at equal
  // priority a deny wins).
  const std::array<Rule, 1> allow{Rule{1, pattern, kReadWrite, Effect::allow, 0}};
  const std::array<Rule, 1> deny{Rule{2, pattern, kReadWrite, Effect::deny, 0}};
  const std::array<std::span<const Rule>, 1> allow_only{std::span<const Rule>(allow)};
  const std::array<std::span<const Rule>, 2> both{std::span<const Rule>(allow),
                                                  std::span<const Rule>(deny)};
  for (const Access access : {kPublish, kRead, kSubscribe}) {
    const bool expected = access == kSubscribe ? covers : matches;
    const auto granted = evaluate(allow_only, access, topic, subs);
    require((granted.decision == Decision::allow) == expected);
    if (granted.decision == Decision::allow) require(granted.rule == &allow[0]);
    const auto contested = evaluate(both, access, topic, subs);
    require(contested.decision != Decision::allow);
    if (expected) require(contested.decision == Decision::deny);
  }
  return 0;
}
