// Patterns split once (registry/pattern.h): the split levels, the pool that shares equal patterns
// across a snapshot's lifetime, and differential checks that the pre-split matcher and
// acl::evaluate answer exactly as the interpreted matchers of topic.h do.
#include "registry/pattern.h"

#include <catch2/catch.hpp>
#include <random>
#include <set>
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
  // Up to 72 bytes: shorter than one 16-byte step of the split, several steps, and a last step
  // that overlaps the one before.
  std::uniform_int_distribution<int> length(0, 72);
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

TEST_CASE("a pattern's first-level tag is set only for a plain literal first level", "[pattern]") {
  // Positive: a literal first level (also an empty one, and one starting with '$') has its tag.
  const std::vector<std::pair<std::string, std::string>> literal{
      {"telemetry/%d/+", "telemetry"}, {"/a", ""}, {"$SYS/#", "$SYS"}, {"a", "a"}, {"a/b/c", "a"}};
  for (const auto& [text, first] : literal) {
    CAPTURE(text);
    const Pattern pattern(text);
    CHECK(pattern.first_level_tag() != 0);
    CHECK(pattern.first_level_tag() == Pattern::level_tag(first));
    CHECK(pattern.text() == text);  // the tag takes nothing from the node it points to
  }
  // Negative: a wildcard, a placeholder or a malformed pattern has none, so it is never passed
  // over by tags.
  for (const std::string text : {"+/x", "#", "%d/x", "x%cy/z", "a+/b", "a/#/b", "x/%q", ""}) {
    CAPTURE(text);
    CHECK(Pattern(text).first_level_tag() == 0);
  }
  // Copies, moves and pooled patterns carry the tag of their node.
  const Pattern a("commands/%d/#");
  Pattern b = a;
  Pattern moved = std::move(b);
  PatternPool pool;
  const Pattern pooled = pool.intern(a);
  for (const Pattern* p : {static_cast<const Pattern*>(&moved), &pooled}) {
    CHECK(p->shares_node_with(a));
    CHECK(p->first_level_tag() == a.first_level_tag());
    CHECK(p->node_address() == a.node_address());
  }
  // Every tag is one of 1 to 15.
  std::set<int> seen;
  for (int i = 0; i < 2000; ++i) {
    const int tag = Pattern::level_tag("w" + std::to_string(i));
    CHECK(tag >= 1);
    CHECK(tag <= 15);
    seen.insert(tag);
  }
  CHECK(seen.size() == 15);
}

TEST_CASE("a rule is passed over by its first-level tag only when the first levels differ",
          "[pattern][acl]") {
  // Two different words with the same tag, and one with another tag.
  std::string word = "w0", same_tag, other_tag;
  for (int i = 1; same_tag.empty() || other_tag.empty(); ++i) {
    const std::string candidate = "w" + std::to_string(i);
    if (Pattern::level_tag(candidate) == Pattern::level_tag(word)) {
      if (same_tag.empty()) same_tag = candidate;
    } else if (other_tag.empty()) {
      other_tag = candidate;
    }
  }
  const Substitutions subs{"dev1", "dev1", "dev1"};
  const std::vector<Rule> rules{Rule{1, Pattern(word + "/#"), kReadWrite, Effect::allow, 0}};
  const std::span<const Rule> sets[] = {rules};
  // Positive control: the rule's own first level.
  CHECK(evaluate(sets, kPublish, word + "/t", subs).decision == Decision::allow);
  CHECK(evaluate(sets, kSubscribe, word + "/+", subs).decision == Decision::allow);
  // Equal tags, different levels: compared, and not matched.
  CHECK(evaluate(sets, kPublish, same_tag + "/t", subs).decision == Decision::no_match);
  CHECK(evaluate(sets, kSubscribe, same_tag + "/+", subs).decision == Decision::no_match);
  // Different tags: passed over.
  CHECK(evaluate(sets, kPublish, other_tag + "/t", subs).decision == Decision::no_match);

  // First levels a tag must not pass over: empty, '$', wildcards, placeholders, against topics
  // and filters of the same kinds; every decision as the decision table over the interpreted
  // matchers gives it.
  const std::vector<std::string> patterns{"/a",  "/%d",    "$SYS/#", "$SYS/+", "+/x",
                                          "+/#", "#",      "%d/x",   "%c/#",   "dev1/+",
                                          "a/x", "x%dy/#", "/#",     "a+/b",   "a/#/b"};
  const std::vector<std::string> targets{"/a",  "/dev1",    "$SYS/x", "$SYS", "dev1/x", "a/x",
                                         "x/a", "+/x",      "#",      "/+",   "$SYS/#", "+",
                                         "/",   "xdev1y/z", "dev1",   "a/+"};
  int compared = 0, decided = 0;
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    for (const Effect effect : {Effect::allow, Effect::deny}) {
      // One rule alone, and behind a rule of another first level (so that a wrong skip of the
      // second cannot hide behind the first).
      const std::vector<Rule> one{Rule{1, Pattern(patterns[i]), kReadWrite, effect, 0}};
      const std::vector<Rule> two{Rule{1, Pattern("zz/#"), kReadWrite, Effect::allow, 0},
                                  Rule{2, Pattern(patterns[i]), kReadWrite, effect, 1}};
      for (const auto* rule_set : {&one, &two}) {
        const std::span<const Rule> these[] = {*rule_set};
        for (const std::string& target : targets) {
          for (const Access access : {kPublish, kSubscribe, kRead}) {
            const Evaluation expected = reference_evaluate(these, access, target, subs);
            const Evaluation got = evaluate(these, access, target, subs);
            CAPTURE(patterns[i], target, static_cast<int>(access), to_string(effect));
            CHECK(to_string(got.decision) == to_string(expected.decision));
            CHECK(got.rule == expected.rule);
            ++compared;
            decided += expected.rule != nullptr;
          }
        }
      }
    }
  }
  CHECK(compared > 2000);
  CHECK(decided > 300);
  // A few by hand: an empty first level, a '$' topic, a filter starting with '+'.
  const std::vector<Rule> empty_first{Rule{7, Pattern("/a"), kReadWrite, Effect::allow, 0}};
  const std::span<const Rule> e[] = {empty_first};
  CHECK(evaluate(e, kPublish, "/a", subs).decision == Decision::allow);
  CHECK(evaluate(e, kPublish, "a", subs).decision == Decision::no_match);
  const std::vector<Rule> sys{Rule{8, Pattern("$SYS/#"), kReadWrite, Effect::deny, 0},
                              Rule{9, Pattern("#"), kReadWrite, Effect::allow, 0}};
  const std::span<const Rule> y[] = {sys};
  CHECK(evaluate(y, kPublish, "$SYS/x", subs).rule == &sys[0]);
  CHECK(evaluate(y, kPublish, "a/x", subs).rule == &sys[1]);
  const std::vector<Rule> deny_a{Rule{10, Pattern("a/x"), kSubscribe, Effect::deny, 0}};
  const std::span<const Rule> d[] = {deny_a};
  CHECK(evaluate(d, kSubscribe, "+/x", subs).decision == Decision::deny);  // "+/x" meets "a/x"
  CHECK(evaluate(d, kSubscribe, "#", subs).decision == Decision::deny);
  CHECK(evaluate(d, kSubscribe, "b/x", subs).decision == Decision::no_match);
}

TEST_CASE("same_level compares short strings byte for byte", "[pattern]") {
  std::mt19937 rng(515);
  std::uniform_int_distribution<int> length(0, 40);
  std::uniform_int_distribution<int> byte(0, 3);
  int equal = 0;
  for (int i = 0; i < 50000; ++i) {
    std::string a;
    for (int n = length(rng); n > 0; --n) a += static_cast<char>('a' + byte(rng));
    // Mostly the same string, or one byte changed at any offset, or another length.
    std::string b = a;
    const int how = byte(rng);
    if (how == 1 && !b.empty()) b[static_cast<std::size_t>(rng() % b.size())] ^= 1;
    if (how == 2) b += 'a';
    // Views into longer buffers whose next bytes differ: only the viewed bytes may count.
    const std::string bufa = a + "zz", bufb = b + "yy";
    const std::string_view va(bufa.data(), a.size()), vb(bufb.data(), b.size());
    CAPTURE(a, b);
    CHECK(detail::same_level(va, vb) == (a == b));
    equal += a == b;
  }
  CHECK(equal > 10000);
  CHECK(equal < 40000);
}
