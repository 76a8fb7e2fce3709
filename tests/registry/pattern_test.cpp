// Patterns split once (registry/pattern.h): the split levels, the pool that shares equal patterns
// across a snapshot's lifetime, and differential checks that the pre-split matcher and
// acl::evaluate answer exactly as the interpreted matchers of topic.h do.
#include "registry/pattern.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "registry/acl.h"
#include "registry/snapshot.h"

using namespace onboard;
using namespace onboard::acl;

namespace {

std::vector<LevelKind> kinds(const Pattern& pattern) {
  std::vector<LevelKind> out;
  for (const auto& level : pattern.levels()) out.push_back(level.kind);
  return out;
}

std::vector<std::string> texts(const Pattern& pattern) {
  std::vector<std::string> out;
  for (const auto& level : pattern.levels()) out.emplace_back(level.in(pattern.text()));
  return out;
}

std::string join(std::mt19937& rng, const std::vector<std::string>& vocabulary, int max_levels) {
  std::uniform_int_distribution<int> count(1, max_levels);
  std::uniform_int_distribution<std::size_t> pick(0, vocabulary.size() - 1);
  std::string out;
  const int n = count(rng);
  for (int i = 0; i < n; ++i) {
    if (i > 0) out += '/';
    out += vocabulary[pick(rng)];
  }
  return out;
}

// Pattern levels: literals, placeholders alone and inside text, wildcards, '$' and empty levels,
// and malformed ones (wildcards inside a level, a bad placeholder letter, a lone '%').
const std::vector<std::string> kPatternLevels{"a",  "dev1", "%d",  "%c",  "%u",    "x%dy", "%d%c",
                                              "+",  "#",    "",    "$s",  "$",     "a+",   "#a",
                                              "%x", "%",    "%%d", "d%d", "%d-%u", "dev1x"};
// Topic and filter levels: the substitution values below, near misses, '$' and empty levels.
const std::vector<std::string> kTargetLevels{"a", "dev1", "dev2",  "xdev1y", "dev1dev1",
                                             "",  "$s",   "$",     "ddev1",  "dev1-dev1",
                                             "+", "#",    "dev1x", "b"};
// Usable and unusable substitution values (empty, or holding '/', '+' or '#').
const std::vector<Substitutions> kSubstitutions{{"dev1", "dev1", "dev1"}, {"dev1", "dev2", "dev1"},
                                                {"dev1", "", "dev1"},     {"dev1", "a/b", "dev1"},
                                                {"de+v", "dev1", "dev1"}, {"dev1", "dev1", "#"},
                                                {"$s", "dev1", "dev1"}};

// The decision table of acl::evaluate, written out over the interpreted matchers of topic.h.
Evaluation reference_evaluate(std::span<const std::span<const Rule>> rule_sets, Access access,
                              std::string_view target, const Substitutions& subs) {
  const bool subscribe = access == kSubscribe;
  if (subscribe ? !is_valid_filter(target) : !is_valid_topic(target)) {
    return {Decision::deny, nullptr};
  }
  const Rule* best = nullptr;
  for (const auto& rules : rule_sets) {
    for (const Rule& rule : rules) {
      if ((rule.access & access) == 0) continue;
      const std::string_view pattern = rule.pattern.text();
      const Match match = !subscribe ? detail::match_topic(pattern, target, subs)
                          : rule.effect == Effect::allow
                              ? detail::match_covers(pattern, target, subs)
                              : detail::match_intersects(pattern, target, subs);
      const bool applies = rule.effect == Effect::allow ? match == Match::yes : match != Match::no;
      if (!applies) continue;
      if (best == nullptr || rule.priority > best->priority ||
          (rule.priority == best->priority && rule.effect == Effect::deny &&
           best->effect == Effect::allow)) {
        best = &rule;
      }
    }
  }
  if (best == nullptr) return {Decision::no_match, nullptr};
  return {best->effect == Effect::allow ? Decision::allow : Decision::deny, best};
}

}  // namespace

TEST_CASE("a pattern is split into levels of the kind each one is", "[pattern]") {
  const Pattern pattern("devices/%d/+/x%cy/#");
  REQUIRE(pattern.well_formed());
  CHECK(pattern.text() == "devices/%d/+/x%cy/#");
  CHECK(texts(pattern) == std::vector<std::string>{"devices", "%d", "+", "x%cy", "#"});
  CHECK(kinds(pattern) == std::vector<LevelKind>{LevelKind::literal, LevelKind::template_,
                                                 LevelKind::plus, LevelKind::template_,
                                                 LevelKind::hash});
  CHECK(texts(Pattern("/a//")) == std::vector<std::string>{"", "a", "", ""});
}

TEST_CASE("a pattern the interpreted matchers could find malformed has no levels", "[pattern]") {
  for (const std::string& text : {std::string(), std::string("a/#/b"), std::string("a+/b"),
                                  std::string("a/b#"), std::string("x/%"), std::string("x/%q"),
                                  std::string("a\0b", 3), std::string(kMaxTopicLength + 1, 'a')}) {
    CAPTURE(text.size());
    const Pattern pattern(text);
    CHECK_FALSE(pattern.well_formed());
    CHECK(pattern.levels().empty());
    CHECK(pattern.text() == text);  // the text is kept for the interpreted matchers
  }
  CHECK(Pattern(std::string(kMaxTopicLength, 'a')).well_formed());
}

TEST_CASE("copies of a pattern share its node and compare equal to its text", "[pattern]") {
  const Pattern a("telemetry/%d/+");
  Pattern b = a;
  CHECK(b.shares_node_with(a));
  Pattern c("other");
  c = b;
  CHECK(c.shares_node_with(a));
  Pattern moved = std::move(c);
  CHECK(moved.shares_node_with(a));
  CHECK(a == "telemetry/%d/+");
  CHECK(a == std::string("telemetry/%d/+"));
  CHECK_FALSE(a == "telemetry/%d");
  CHECK_FALSE(Pattern("telemetry/%d/+").shares_node_with(a));  // made apart, not pooled
}

TEST_CASE("a pool gives equal patterns one node and drops the ones nobody holds", "[pattern]") {
  PatternPool pool;
  const Pattern first = pool.intern(Pattern("devices/%d/#"));
  CHECK(pool.intern_text("devices/%d/#").shares_node_with(first));
  CHECK(pool.intern(Pattern("devices/%d/#")).shares_node_with(first));
  CHECK_FALSE(pool.intern_text("devices/%d/+").shares_node_with(first));
  for (int i = 0; i < 10000; ++i) (void)pool.intern_text("churn/" + std::to_string(i));
  // Only "devices/%d/#" is still held outside the pool; sweeps keep the pool within twice what is
  // held plus the sweep threshold, instead of 10,002 entries.
  CHECK(pool.size() < 200);
  CHECK(pool.intern_text("devices/%d/#").shares_node_with(first));
}

TEST_CASE("a snapshot shares one node per distinct pattern, also with later snapshots",
          "[pattern][snapshot]") {
  using namespace onboard::registry;
  auto device = [](std::string id, std::int64_t rule_id, std::string pattern) {
    return DeviceAccess{std::move(id),
                        DeviceStatus::active,
                        "sensor",
                        {Rule{rule_id, Pattern(pattern), kPublish, Effect::allow, 0}},
                        {}};
  };
  std::vector<DeviceAccess> devices;
  devices.push_back(device("a", 1, "telemetry/%d"));
  devices.push_back(device("b", 2, "telemetry/%d"));
  std::vector<GroupAccess> groups{
      GroupAccess{"sensor", {Rule{3, Pattern("telemetry/%d"), kRead, Effect::allow, 0}}}};
  const auto before = Snapshot::build(std::move(devices), std::move(groups), 1);
  const Pattern& a = before->find_device("a")->rules()[0].pattern;
  CHECK(before->find_device("b")->rules()[0].pattern.shares_node_with(a));
  CHECK(before->find_group("sensor")->rules[0].pattern.shares_node_with(a));
  CHECK(before->distinct_patterns() == 1);

  std::vector<DeviceAccess> changed;
  changed.push_back(device("c", 4, "telemetry/%d"));
  const auto after = before->with_changes(std::move(changed), {}, {}, 2);
  CHECK(after->find_device("c")->rules()[0].pattern.shares_node_with(a));
  CHECK(after->check_access("c", "c", kPublish, "telemetry/c").decision == Decision::allow);
}

TEST_CASE("the pre-split topic matcher answers as the interpreted one", "[pattern]") {
  std::mt19937 rng(4242);
  int compared = 0;
  int yes = 0;
  int undecidable = 0;
  for (int i = 0; i < 200000; ++i) {
    const Pattern pattern(join(rng, kPatternLevels, 5));
    const std::string topic = join(rng, kTargetLevels, 5);
    if (!pattern.well_formed() || !is_valid_topic(topic)) continue;
    const detail::SplitTopic split(topic);
    REQUIRE(split.fits());
    for (const auto& subs : kSubstitutions) {
      const Match expected = detail::match_topic(pattern.text(), topic, subs);
      const Match got =
          detail::match_topic_split(pattern, split, detail::PreparedSubstitutions(subs));
      if (got != expected) {
        CAPTURE(pattern.text(), topic, subs.device_id, subs.client_id, subs.username);
        CHECK(static_cast<int>(got) == static_cast<int>(expected));
      }
      ++compared;
      yes += expected == Match::yes;
      undecidable += expected == Match::undecidable;
    }
  }
  // The corpus reaches every answer often enough to mean something.
  CHECK(compared > 100000);
  CHECK(yes > 1000);
  CHECK(undecidable > 1000);
}

TEST_CASE("acl::evaluate decides as its decision table over the interpreted matchers",
          "[pattern][acl]") {
  std::mt19937 rng(1883);
  std::uniform_int_distribution<int> rule_count(0, 6);
  std::uniform_int_distribution<int> priority(0, 2);
  std::uniform_int_distribution<int> access_mask(1, 7);
  std::uniform_int_distribution<int> coin(0, 1);
  const Access accesses[] = {kPublish, kSubscribe, kRead};
  int decided = 0;
  int allowed = 0;
  for (int i = 0; i < 30000; ++i) {
    std::vector<Rule> own;
    std::vector<Rule> group;
    for (auto* rules : {&own, &group}) {
      for (int r = rule_count(rng); r > 0; --r) {
        rules->push_back(
            Rule{static_cast<std::int64_t>(rules->size() + 1 + 100 * (rules == &group)),
                 Pattern(join(rng, kPatternLevels, 4)), static_cast<std::uint8_t>(access_mask(rng)),
                 coin(rng) != 0 ? Effect::allow : Effect::deny, priority(rng)});
      }
    }
    const std::span<const Rule> sets[] = {own, group};
    const std::string target = join(rng, kTargetLevels, 4);
    const Substitutions& subs = kSubstitutions[static_cast<std::size_t>(i) % kSubstitutions.size()];
    for (const Access access : accesses) {
      const Evaluation expected = reference_evaluate(sets, access, target, subs);
      const Evaluation got = evaluate(sets, access, target, subs);
      if (got.decision != expected.decision || got.rule != expected.rule) {
        CAPTURE(target, static_cast<int>(access), subs.device_id, subs.client_id);
        for (const auto& set : sets) {
          for (const auto& rule : set) UNSCOPED_INFO(rule.id << " " << rule.pattern);
        }
        CHECK(to_string(got.decision) == to_string(expected.decision));
        CHECK(got.rule == expected.rule);
      }
      decided += expected.rule != nullptr;
      allowed += expected.decision == Decision::allow;
    }
  }
  CHECK(decided > 10000);
  CHECK(allowed > 1000);
}

TEST_CASE("a topic too deep to split on the stack is decided by the interpreted matcher",
          "[pattern][acl]") {
  std::string deep = "a";
  for (std::size_t i = 1; i < detail::SplitTopic::kMaxLevels + 4; ++i) deep += "/a";
  CHECK_FALSE(detail::SplitTopic(deep).fits());
  const std::vector<Rule> rules{Rule{1, Pattern("a/+/#"), kPublish, Effect::allow, 0},
                                Rule{2, Pattern(deep), kPublish, Effect::deny, 1}};
  const std::span<const Rule> sets[] = {rules};
  const Evaluation e = evaluate(sets, kPublish, deep, Substitutions{"d", "d", "d"});
  CHECK(e.decision == Decision::deny);
  REQUIRE(e.rule != nullptr);
  CHECK(e.rule->id == 2);
  CHECK(evaluate(sets, kPublish, deep + "/b", Substitutions{"d", "d", "d"}).decision ==
        Decision::allow);
}

TEST_CASE("a split topic has the levels and the validity of the topic, byte for byte",
          "[pattern]") {
  // Every byte the split looks for, next to bytes one away from them (a word-at-a-time search
  // must not mistake '.' after '/' or '*' before '+' for a match), at every offset within a word.
  const std::string alphabet{'a', '/', '.', '0', '+', '*', '#', '"', '\0', '\x01', '$', '\xff'};
  std::mt19937 rng(8883);
  std::uniform_int_distribution<std::size_t> byte(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> length(0, 40);
  std::uniform_int_distribution<int> rare(0, 5);
  int compared = 0, valid = 0, deep = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string topic;
    const int n = length(rng);
    for (int k = 0; k < n; ++k) {
      // Mostly plain bytes and slashes, so that many topics are valid and some are deeper than a
      // split holds.
      const char c = rare(rng) < 2 ? '/' : alphabet[byte(rng)];
      topic += (c == '+' || c == '#' || c == '\0') && rare(rng) != 0 ? 'a' : c;
    }
    const detail::SplitTopic split(topic);
    ++compared;
    REQUIRE(split.valid() == is_valid_topic(topic));
    if (!split.valid()) continue;
    ++valid;
    std::vector<std::string_view> expected;
    std::size_t start = 0;
    for (std::size_t slash = topic.find('/'); slash != topic.npos; slash = topic.find('/', start)) {
      expected.push_back(std::string_view(topic).substr(start, slash - start));
      start = slash + 1;
    }
    expected.push_back(std::string_view(topic).substr(start));
    if (expected.size() > detail::SplitTopic::kMaxLevels) {
      CHECK_FALSE(split.fits());
      ++deep;
      continue;
    }
    REQUIRE(split.fits());
    REQUIRE(split.size() == expected.size());
    for (std::size_t l = 0; l < expected.size(); ++l) {
      CAPTURE(topic, l);
      CHECK(split[l] == expected[l]);
      CHECK(split[l].data() == expected[l].data());
    }
    CHECK(split.dollar() == (topic.front() == '$'));
  }
  CHECK(valid > 50000);
  CHECK(compared - valid > 50000);
  CHECK(deep > 100);
}
