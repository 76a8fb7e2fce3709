#include "registry/topic.h"

#include <mosquitto.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using onboard::acl::is_valid_filter;
using onboard::acl::is_valid_topic;
using onboard::acl::kMaxTopicLength;
using onboard::acl::pattern_covers_filter;
using onboard::acl::pattern_intersects_filter;
using onboard::acl::pattern_matches_topic;
using onboard::acl::pattern_problem;
using onboard::acl::Substitutions;

const Substitutions kNone{};
const Substitutions kDev1{"dev1", "dev1", "dev1"};

struct Case {
  std::string_view pattern;
  std::string_view subject;  // a topic or a filter
  bool expected;
};

bool matches(std::string_view pattern, std::string_view topic, const Substitutions& subs = kNone) {
  return pattern_matches_topic(pattern, topic, subs);
}

std::string join(const std::vector<std::string>& levels) {
  std::string out;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    if (i > 0) out += '/';
    out += levels[i];
  }
  return out;
}

}  // namespace

TEST_CASE("a topic name is 1 to 65535 bytes without wildcards or NUL", "[topic]") {
  CHECK(is_valid_topic("a"));
  CHECK(is_valid_topic("/"));
  CHECK(is_valid_topic("a//b"));
  CHECK(is_valid_topic("$SYS/broker/uptime"));
  CHECK(is_valid_topic("devices/dev1/%d"));
  CHECK(is_valid_topic(std::string(kMaxTopicLength, 'x')));

  CHECK_FALSE(is_valid_topic(""));
  CHECK_FALSE(is_valid_topic(std::string(kMaxTopicLength + 1, 'x')));
  CHECK_FALSE(is_valid_topic("a/+"));
  CHECK_FALSE(is_valid_topic("a/#"));
  CHECK_FALSE(is_valid_topic("sport+"));
  CHECK_FALSE(is_valid_topic(std::string_view("a\0b", 3)));
}

TEST_CASE("a subscription filter allows '+' as a whole level and '#' only as the whole last level",
          "[topic]") {
  for (std::string_view ok : {"#", "+", "/", "+/+", "/+", "sport/tennis/#", "sport/tennis/+",
                              "sport/+/player1", "a//b", "$SYS/#", "+/#", "a/+/#", "%d"}) {
    CAPTURE(ok);
    CHECK(is_valid_filter(ok));
  }
  // From MQTT 3.1.1 §4.7.1.2 and §4.7.1.3, plus the empty filter and NUL.
  for (std::string_view bad : {"", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "#/a",
                               "a/#/", "a/++", "+a", "a/b+/c", "##"}) {
    CAPTURE(bad);
    CHECK_FALSE(is_valid_filter(bad));
  }
  CHECK_FALSE(is_valid_filter(std::string_view("a/\0", 3)));
  CHECK(is_valid_filter(std::string(kMaxTopicLength - 2, 'x') + "/#"));
  CHECK_FALSE(is_valid_filter(std::string(kMaxTopicLength + 1, 'x')));
}

TEST_CASE("a subscription filter is valid exactly when libmosquitto's check accepts it",
          "[topic]") {
  // Random filters of the bytes that matter ('/', '+', '#') and a plain one, up to 12 bytes: every
  // placement of wildcards next to separators and edges.
  std::mt19937 rng(1884);
  std::uniform_int_distribution<int> length(1, 12);
  std::uniform_int_distribution<int> byte(0, 3);
  const char bytes[] = {'a', '/', '+', '#'};
  int valid = 0, compared = 0;
  for (int i = 0; i < 100000; ++i) {
    std::string filter;
    for (int n = length(rng); n > 0; --n) filter += bytes[byte(rng)];
    const bool expected =
        mosquitto_sub_topic_check2(filter.c_str(), filter.size()) == MOSQ_ERR_SUCCESS;
    CAPTURE(filter);
    CHECK(is_valid_filter(filter) == expected);
    valid += expected;
    ++compared;
  }
  CHECK(valid > 10000);
  CHECK(compared - valid > 10000);
}

TEST_CASE("patterns without placeholders match topics as the MQTT specification says", "[topic]") {
  const Case cases[] = {
      // MQTT 3.1.1 §4.7.1.2, multi-level wildcard.
      {"sport/tennis/player1/#", "sport/tennis/player1", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
      {"sport/tennis/player1/#", "sport/tennis/player2", false},
      {"sport/tennis/player1/#", "sport/tennis", false},
      {"sport/#", "sport", true},
      {"#", "sport/tennis/player1", true},
      // §4.7.1.3, single-level wildcard.
      {"sport/tennis/+", "sport/tennis/player1", true},
      {"sport/tennis/+", "sport/tennis/player2", true},
      {"sport/tennis/+", "sport/tennis/player1/ranking", false},
      {"sport/+", "sport", false},
      {"sport/+", "sport/", true},
      {"+/+", "/finance", true},
      {"/+", "/finance", true},
      {"+", "/finance", false},
      {"+/tennis/#", "sport/tennis/player1", true},
      // §4.7.2, topics beginning with '$'.
      {"#", "$SYS/monitor/Clients", false},
      {"+/monitor/Clients", "$SYS/monitor/Clients", false},
      {"$SYS/#", "$SYS/monitor/Clients", true},
      {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
      {"+", "$", false},
      {"#", "$", false},
      {"$", "$", true},
      {"a/+", "a/$x", true},  // only the first level is special
      {"a/#", "a/$x/y", true},
      // Empty levels are levels.
      {"a/+/b", "a//b", true},
      {"a//b", "a//b", true},
      {"a/b", "a//b", false},
      {"+/a", "/a", true},
      {"a/+", "a/", true},
      {"a", "a/", false},
      {"a/", "a", false},
      {"a/#", "a/", true},
      {"#", "/", true},
      {"+", "/", false},
      {"+/+", "/", true},
      {"/#", "/", true},
      // '#' matches its parent level, also after '+'.
      {"+/#", "a", true},
      {"a/+/#", "a/b", true},
      {"a/+/#", "a", false},
      {"a/b/#", "a", false},
      // Literal comparison is exact.
      {"Sport", "sport", false},
      {"sport", "sports", false},
      {"sports", "sport", false},
      {"a/b/c", "a/b", false},
      {"a/b", "a/b/c", false},
      {"%", "%", false},  // '%' is no literal: patterns never carry it (see pattern_problem)
  };
  for (const Case& c : cases) {
    CAPTURE(c.pattern, c.subject);
    CHECK(matches(c.pattern, c.subject) == c.expected);
  }
}

TEST_CASE("a malformed pattern or an invalid topic never matches", "[topic]") {
  const Case cases[] = {
      {"sport/tennis#", "sport/tennis#", false},  // topic invalid as well
      {"sport/tennis/#/ranking", "sport/tennis/x/ranking", false},
      {"a/#/", "a/b/", false},
      {"sport+", "sport", false},
      {"a+", "a", false},
      {"#", "a/+", false},
      {"+", "+", false},
      {"#", "#", false},
      {"", "a", false},
      {"a", "", false},
      {"%x", "x", false},
      {"a/%", "a/%", false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.pattern, c.subject);
    CHECK(matches(c.pattern, c.subject) == c.expected);
  }
  CHECK_FALSE(matches(std::string(kMaxTopicLength + 1, 'a'), "a"));
  CHECK_FALSE(matches("#", std::string(kMaxTopicLength + 1, 'a')));
  CHECK_FALSE(matches(std::string_view("a\0", 2), std::string_view("a\0", 2)));
}

TEST_CASE("a placeholder matches exactly the value it stands for", "[topic]") {
  const Substitutions subs{"dev1", "client7", "user9"};
  CHECK(matches("devices/%d/telemetry", "devices/dev1/telemetry", subs));
  CHECK(matches("clients/%c", "clients/client7", subs));
  CHECK(matches("users/%u/#", "users/user9/inbox/1", subs));
  CHECK(matches("%d/%c/%u", "dev1/client7/user9", subs));
  CHECK(matches("%d", "dev1", subs));

  CHECK_FALSE(matches("devices/%d/telemetry", "devices/dev2/telemetry", subs));
  CHECK_FALSE(matches("devices/%d/telemetry", "devices/dev10/telemetry", subs));
  CHECK_FALSE(matches("devices/%d/telemetry", "devices/dev/telemetry", subs));
  CHECK_FALSE(matches("devices/%d/telemetry", "devices/client7/telemetry", subs));
  CHECK_FALSE(matches("devices/%d", "devices/%d", subs));
  CHECK_FALSE(matches("devices/%d", "devices/dev1/x", subs));
  CHECK_FALSE(matches("%d", "DEV1", subs));
}

TEST_CASE("a placeholder may sit inside a level among literal text", "[topic]") {
  const Substitutions subs{"dev1", "c", "u"};
  CHECK(matches("fleet/dev-%d", "fleet/dev-dev1", subs));
  CHECK(matches("fleet/%d-cfg", "fleet/dev1-cfg", subs));
  CHECK(matches("fleet/x%dy%cz", "fleet/xdev1ycz", subs));
  CHECK(matches("fleet/%d%d", "fleet/dev1dev1", subs));

  CHECK_FALSE(matches("fleet/dev-%d", "fleet/dev-dev2", subs));
  CHECK_FALSE(matches("fleet/dev-%d", "fleet/dev-dev1x", subs));
  CHECK_FALSE(matches("fleet/dev-%d", "fleet/dev1", subs));
  CHECK_FALSE(matches("fleet/%d-cfg", "fleet/dev1-cf", subs));
  CHECK_FALSE(matches("fleet/%d%d", "fleet/dev1", subs));
}

TEST_CASE("a substituted value containing a wildcard or separator never widens a match",
          "[topic]") {
  // A client that picks its own id or name must not turn "devices/%c/#" into more than its own
  // subtree: each of these values makes every level that uses it match nothing at all.
  for (std::string_view value : {"+", "#", "a/b", "/", "dev1/+", "x#", "+x", "dev1/#"}) {
    CAPTURE(value);
    const Substitutions subs{value, value, value};
    CHECK_FALSE(matches("devices/%d/#", "devices/dev1/x", subs));
    CHECK_FALSE(matches("devices/%d/#", "devices/a/b", subs));
    CHECK_FALSE(matches("devices/%c", "devices/+", subs));
    CHECK_FALSE(matches("devices/%u", std::string("devices/") + std::string(value), subs));
    CHECK_FALSE(pattern_covers_filter("devices/%d/#", "devices/+/#", subs));
    CHECK_FALSE(pattern_covers_filter("devices/%d/#", "devices/#", subs));
    CHECK_FALSE(pattern_intersects_filter("devices/%d/#", "devices/#", subs));
  }
  const Substitutions nul{std::string_view("dev1\0", 5), "c", "u"};
  CHECK_FALSE(matches("devices/%d", "devices/dev1", nul));
  // The levels before the bad one still decide on their own.
  CHECK(matches("devices/%c/#", "devices/c/x", nul));
}

TEST_CASE("an empty substitution matches nothing, not an empty level", "[topic]") {
  const Substitutions empty{"", "", ""};
  CHECK_FALSE(matches("devices/%d", "devices/", empty));
  CHECK_FALSE(matches("devices/%d/x", "devices//x", empty));
  CHECK_FALSE(matches("devices/x%d", "devices/x", empty));
  CHECK_FALSE(matches("%u", "a", empty));
  CHECK_FALSE(pattern_covers_filter("devices/%d/#", "devices//#", empty));
  CHECK_FALSE(pattern_intersects_filter("devices/%d/#", "devices/#", empty));
  // A pattern that does not use the missing value is unaffected.
  CHECK(matches("devices/+", "devices/", empty));
}

TEST_CASE("a value starting with '$' is compared literally, it is not a '$' topic exception",
          "[topic]") {
  const Substitutions subs{"$SYS", "c", "u"};
  CHECK(matches("%d/x", "$SYS/x", subs));
  CHECK_FALSE(matches("%d/x", "SYS/x", subs));
  CHECK(pattern_covers_filter("%d/#", "$SYS/+", subs));
  CHECK_FALSE(pattern_intersects_filter("%d/#", "+/x", subs));
  CHECK_FALSE(pattern_intersects_filter("%d/x", "#", subs));
}

TEST_CASE("a pattern covers a subscription filter only if it matches every topic of the filter",
          "[topic]") {
  const Case cases[] = {
      {"devices/%d/#", "devices/dev1/+/temp", true},
      {"devices/%d/#", "devices/dev1/#", true},
      {"devices/%d/#", "devices/dev1", true},
      {"devices/%d/#", "devices/dev1/a/b/c", true},
      {"devices/%d/#", "devices/#", false},
      {"devices/%d/#", "devices/+/x", false},
      {"devices/%d/#", "devices/+", false},
      {"devices/%d/#", "devices/dev2/#", false},
      {"devices/%d/#", "devices", false},
      {"devices/%d/#", "#", false},
      {"devices/%d/+", "devices/dev1/+", true},
      {"devices/%d/+", "devices/dev1/x", true},
      {"devices/%d/+", "devices/dev1/#", false},  // '#' also matches devices/dev1 and deeper
      {"devices/%d/+", "devices/dev1", false},
      {"devices/%d/+", "devices/dev1/x/y", false},
      {"devices/%d", "devices/dev1", true},
      {"devices/%d", "devices/+", false},
      {"#", "#", true},
      {"#", "a/+/#", true},
      {"#", "+", true},
      {"#", "$SYS/#", false},
      {"#", "$SYS", false},
      {"+/#", "#", true},  // at the top "#" has no parent level, so it is "+/#"
      {"+/#", "+/#", true},
      {"+/+/#", "#", false},
      {"+/#/x", "#", false},  // malformed
      {"/+/#", "/#", true},   // "/#" cannot match its parent "", which is no topic
      {"/+", "/#", false},
      {"+/+/#", "/#", true},
      {"+", "+", true},
      {"+", "a", true},
      {"+", "$SYS", false},
      {"+", "#", false},
      {"+/+", "+/#", false},
      {"$SYS/#", "$SYS/#", true},
      {"$SYS/#", "$SYS/+/x", true},
      {"$SYS/+", "$SYS/#", false},
      {"a/#", "a", true},
      {"a/#", "a/#", true},
      {"a/#", "+/#", false},
      {"a/b", "a/b", true},
      {"a/b", "a/+", false},
      {"a//b", "a/+/b", false},
      {"a/+/b", "a//b", true},
      {"a/+", "a/", true},
  };
  for (const Case& c : cases) {
    CAPTURE(c.pattern, c.subject);
    CHECK(pattern_covers_filter(c.pattern, c.subject, kDev1) == c.expected);
  }
}

TEST_CASE("a pattern intersects a filter exactly when some topic matches both", "[topic]") {
  const Case cases[] = {
      {"devices/%d/#", "devices/#", true},
      {"devices/%d/#", "devices/+/x", true},
      {"devices/%d/#", "#", true},
      {"devices/%d/#", "+/+", true},
      {"devices/%d/#", "devices/dev2/#", false},
      {"devices/%d/#", "devices", false},
      {"devices/%d/#", "other/#", false},
      {"devices/%d/x", "devices/+/y", false},
      {"devices/%d", "devices/#", true},
      {"devices/%d", "devices", false},
      {"devices/%d", "devices/dev1/#", true},  // both match devices/dev1
      {"a/b", "a/#", true},
      {"a", "a/#", true},
      {"a/#", "a", true},
      {"a/+", "a", false},
      {"a/+/#", "a", false},
      {"+/+", "#", true},
      {"+", "+/+", false},
      {"#", "$SYS/#", false},
      {"#", "$SYS", false},
      {"+/x", "$SYS/x", false},
      {"$SYS/#", "#", false},
      {"$SYS/x", "+/x", false},
      {"$SYS/x", "+/+", false},
      {"$SYS/#", "$SYS/+", true},
      {"$SYS/#", "$SYS", true},
      {"#", "+/$x", true},
      {"+/+", "/", true},
      {"+", "/", false},
      {"a//b", "a/+/b", true},
      {"a/b", "a//b", false},
      {"/#", "+", false},  // the parent of "/#" would be "", which is no topic
      {"+", "/#", false},
      {"/#", "/#", true},
      {"/#", "+/#", true},
      {"a/#", "+", true},
  };
  for (const Case& c : cases) {
    CAPTURE(c.pattern, c.subject);
    CHECK(pattern_intersects_filter(c.pattern, c.subject, kDev1) == c.expected);
  }
}

TEST_CASE("covers and intersects refuse invalid filters and malformed patterns", "[topic]") {
  for (std::string_view filter : {"", "a/#/b", "a+", "#a", "a/b#"}) {
    CAPTURE(filter);
    CHECK_FALSE(pattern_covers_filter("#", filter, kNone));
    CHECK_FALSE(pattern_intersects_filter("#", filter, kNone));
  }
  for (std::string_view pattern : {"", "a/#/b", "a+", "#a", "%x", "a/%"}) {
    CAPTURE(pattern);
    CHECK_FALSE(pattern_covers_filter(pattern, "#", kNone));
    CHECK_FALSE(pattern_intersects_filter(pattern, "#", kNone));
  }
}

TEST_CASE("pattern_problem accepts every well-formed pattern", "[topic]") {
  for (std::string_view ok :
       {"#", "+", "devices/%d/#", "devices/%d", "fleet/dev-%d/%c-%u", "$SYS/broker/#", "a//b", "/",
        "+/+/#", "d/%d%d", "caf\xc3\xa9/+", "\xf0\x9f\x98\x80"}) {
    CAPTURE(ok);
    CHECK(pattern_problem(ok) == std::nullopt);
  }
  CHECK(pattern_problem(std::string(kMaxTopicLength, 'a')) == std::nullopt);
}

TEST_CASE("pattern_problem explains why a pattern cannot be stored", "[topic]") {
  struct Bad {
    std::string_view pattern;
    std::string_view reason_contains;
  };
  const Bad cases[] = {
      {"", "empty"},
      {"a/#/b", "'#' must be the last level"},
      {"#/", "'#' must be the last level"},
      {"sport+", "must each be a whole level"},
      {"a/#x", "must each be a whole level"},
      {"devices/%d+", "mixes a placeholder with a wildcard"},
      {"devices/#%d", "mixes a placeholder with a wildcard"},
      {"devices/%x", "'%' in level 2 ('%x') must be followed by d"},
      {"devices/%", "must be followed by d"},
      {"devices/%%d", "must be followed by d"},
      {"100%", "must be followed by d"},
      {std::string_view("a\0b", 3), "NUL"},
      {"a\xff", "not valid UTF-8 at byte 1"},
      {"\xc3", "not valid UTF-8"},
      {"\xc0\xaf", "not valid UTF-8"},          // overlong '/'
      {"\xe0\x80\xaf", "not valid UTF-8"},      // overlong '/'
      {"\xed\xa0\x80", "not valid UTF-8"},      // a UTF-16 surrogate
      {"\xf4\x90\x80\x80", "not valid UTF-8"},  // beyond U+10FFFF
      {"a\tb", "U+0009"},
      {"a\x7f", "U+007F"},
      {"\xc2\x85", "U+0085"},
      {"\xef\xbf\xbf", "U+FFFF"},
      {"\xef\xb7\x90", "U+FDD0"},
  };
  for (const Bad& c : cases) {
    CAPTURE(c.pattern);
    const auto problem = pattern_problem(c.pattern);
    REQUIRE(problem.has_value());
    CHECK_THAT(*problem, Catch::Contains(std::string(c.reason_contains)));
  }
  const auto too_long = pattern_problem(std::string(kMaxTopicLength + 1, 'a'));
  REQUIRE(too_long.has_value());
  CHECK_THAT(*too_long, Catch::Contains("65536 bytes long; the limit is 65535"));
}

namespace {

// The low bits of `code` spread over a `length`-byte UTF-8 form (2..4) without any checks, so that
// overlong forms, surrogates and values past U+10FFFF come out as well.
std::string encode(std::uint32_t code, int length) {
  static constexpr unsigned char kLead[] = {0, 0, 0xc0, 0xe0, 0xf0};
  const int bits = (7 - length) + 6 * (length - 1);
  code &= (1u << bits) - 1;
  std::string out(static_cast<std::size_t>(length), '\0');
  for (int i = length - 1; i > 0; --i) {
    out[static_cast<std::size_t>(i)] = static_cast<char>(0x80 | (code & 0x3f));
    code >>= 6;
  }
  out[0] = static_cast<char>(kLead[length] | code);
  return out;
}

}  // namespace

TEST_CASE("pattern_problem refuses exactly the text Mosquitto refuses as a topic", "[topic]") {
  // A stored pattern must be able to match a topic the broker accepts. Wildcards, '%' and NUL are
  // left out: they are refused for structural reasons, tested above.
  std::mt19937 rng(20240607);
  std::uniform_int_distribution<int> kind(0, 3);
  std::uniform_int_distribution<int> byte(1, 255);
  std::uniform_int_distribution<std::uint32_t> code;
  std::uniform_int_distribution<int> length(2, 4);
  int compared = 0;
  int disagreements = 0;
  std::string first;
  for (int i = 0; i < 50000; ++i) {
    std::string text;
    for (int n = 0; n < 3; ++n) {
      switch (kind(rng)) {
        case 0:
          text += 'a';
          break;
        case 1:
          text += static_cast<char>(byte(rng));
          break;
        default:
          text += encode(code(rng), length(rng));
          break;
      }
    }
    if (text.find_first_of(std::string_view("+#%\0", 4)) != text.npos) continue;
    ++compared;
    const bool ours = !pattern_problem(text).has_value();
    const bool theirs =
        mosquitto_validate_utf8(text.data(), static_cast<int>(text.size())) == MOSQ_ERR_SUCCESS;
    if (ours != theirs && disagreements++ == 0) first = Catch::Detail::stringify(text);
  }
  INFO("first disagreement: " << first);
  CHECK(disagreements == 0);
  CHECK(compared > 40000);
}

// Property test: covers and intersects against their definitions, over every topic built from a
// small alphabet. The alphabet holds more distinct plain levels than any pattern and filter can
// name at one position, so a missing witness topic would show up here.
namespace {

const std::vector<std::string> kTopicLevels{"a", "b", "$s", ""};
const std::vector<std::string> kFilterLevels{"a", "b", "$s", "", "+", "#"};
const std::vector<std::string> kPatternLevels{"a", "b", "$s", "", "+", "#", "%d"};

// Every topic with 1..max_levels levels from kTopicLevels.
std::vector<std::string> all_topics(std::size_t max_levels) {
  std::vector<std::string> out;
  std::vector<std::vector<std::string>> layer{{}};
  for (std::size_t depth = 1; depth <= max_levels; ++depth) {
    std::vector<std::vector<std::string>> next;
    for (const auto& prefix : layer) {
      for (const auto& level : kTopicLevels) {
        auto t = prefix;
        t.push_back(level);
        out.push_back(join(t));
        next.push_back(std::move(t));
      }
    }
    layer = std::move(next);
  }
  return out;
}

// Every filter-shaped string with 1..max_levels levels from `alphabet`, '#' only last.
std::vector<std::string> all_filters(const std::vector<std::string>& alphabet,
                                     std::size_t max_levels) {
  std::vector<std::string> out;
  std::vector<std::vector<std::string>> layer{{}};
  for (std::size_t depth = 1; depth <= max_levels; ++depth) {
    std::vector<std::vector<std::string>> next;
    for (const auto& prefix : layer) {
      for (const auto& level : alphabet) {
        auto f = prefix;
        f.push_back(level);
        if (depth > 1 || !level.empty()) out.push_back(join(f));  // "" is no filter
        if (level != "#") next.push_back(std::move(f));
      }
    }
    layer = std::move(next);
  }
  return out;
}

std::string random_filter(std::mt19937& rng, const std::vector<std::string>& alphabet,
                          std::size_t max_levels) {
  std::uniform_int_distribution<std::size_t> count(1, max_levels);
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::vector<std::string> levels;
  const std::size_t n = count(rng);
  for (std::size_t i = 0; i < n; ++i) {
    std::string level = alphabet[pick(rng)];
    while ((level == "#" && i + 1 < n) || (level.empty() && n == 1)) level = alphabet[pick(rng)];
    levels.push_back(std::move(level));
  }
  return join(levels);
}

// Bit i is set when topic i matches.
using TopicSet = std::vector<std::uint64_t>;

TopicSet matched_by(std::string_view pattern, const std::vector<std::string>& topics,
                    const Substitutions& subs) {
  TopicSet out((topics.size() + 63) / 64);
  for (std::size_t i = 0; i < topics.size(); ++i) {
    if (pattern_matches_topic(pattern, topics[i], subs))
      out[i / 64] |= std::uint64_t{1} << (i % 64);
  }
  return out;
}

struct PropertyFailures {
  int count = 0;
  std::string first;

  void add(std::string_view what, std::string_view pattern, std::string_view filter) {
    if (count++ == 0) {
      first = std::string(what) + ": pattern '" + std::string(pattern) + "', filter '" +
              std::string(filter) + "'";
    }
  }
};

// `exact`: also require the converse (a false covers has a witness topic, a false intersects has
// no common topic), which holds when every substitution is usable.
void check_pair(const std::string& pattern, const TopicSet& p_set, const std::string& filter,
                const TopicSet& f_set, const Substitutions& subs, bool exact,
                PropertyFailures& failures) {
  bool subset = true;
  bool common = false;
  for (std::size_t i = 0; i < p_set.size(); ++i) {
    if ((f_set[i] & ~p_set[i]) != 0) subset = false;
    if ((f_set[i] & p_set[i]) != 0) common = true;
  }
  const bool covers = pattern_covers_filter(pattern, filter, subs);
  const bool intersects = pattern_intersects_filter(pattern, filter, subs);
  if (covers && !subset)
    failures.add("covers, but a topic of the filter is not matched", pattern, filter);
  if (common && !intersects)
    failures.add("a topic matches both, but no intersection", pattern, filter);
  if (exact && !covers && subset)
    failures.add("every topic is matched, but no cover", pattern, filter);
  if (exact && intersects && !common)
    failures.add("intersects, but no topic matches both", pattern, filter);
}

}  // namespace

TEST_CASE("covers and intersects agree with matching on every topic, for all short patterns",
          "[topic]") {
  const Substitutions subs{"a", "c", "u"};
  const auto topics = all_topics(4);
  const auto patterns = all_filters(kPatternLevels, 3);
  const auto filters = all_filters(kFilterLevels, 3);
  std::vector<TopicSet> f_sets;
  for (const auto& f : filters) f_sets.push_back(matched_by(f, topics, kNone));

  PropertyFailures failures;
  for (const auto& p : patterns) {
    const auto p_set = matched_by(p, topics, subs);
    for (std::size_t j = 0; j < filters.size(); ++j) {
      check_pair(p, p_set, filters[j], f_sets[j], subs, true, failures);
    }
  }
  INFO(failures.first);
  CHECK(failures.count == 0);
  CHECK(patterns.size() * filters.size() > 40000);
}

TEST_CASE("covers and intersects agree with matching on every topic, for random deeper patterns",
          "[topic]") {
  const auto topics = all_topics(5);
  std::mt19937 rng(1883);
  PropertyFailures failures;
  for (int i = 0; i < 2000; ++i) {
    const std::string p = random_filter(rng, kPatternLevels, 4);
    const std::string f = random_filter(rng, kFilterLevels, 4);
    const Substitutions subs{"a", "c", "u"};
    check_pair(p, matched_by(p, topics, subs), f, matched_by(f, topics, kNone), subs, true,
               failures);
  }
  INFO(failures.first);
  CHECK(failures.count == 0);
}

TEST_CASE("covers and intersects stay sound when a substitution is unusable", "[topic]") {
  const auto topics = all_topics(4);
  const auto patterns = all_filters(kPatternLevels, 3);
  const auto filters = all_filters(kFilterLevels, 3);
  std::vector<TopicSet> f_sets;
  for (const auto& f : filters) f_sets.push_back(matched_by(f, topics, kNone));
  for (std::string_view bad : {"", "+", "#", "a/b", "/"}) {
    CAPTURE(bad);
    const Substitutions subs{bad, "c", "u"};
    PropertyFailures failures;
    for (const auto& p : patterns) {
      if (p.find("%d") == p.npos) continue;  // the same as with a usable value, checked above
      const auto p_set = matched_by(p, topics, subs);
      for (std::size_t j = 0; j < filters.size(); ++j) {
        check_pair(p, p_set, filters[j], f_sets[j], subs, false, failures);
      }
    }
    INFO(failures.first);
    CHECK(failures.count == 0);
  }
}

TEST_CASE("every pattern that pattern_problem accepts gets a definite answer from the matchers",
          "[topic]") {
  // Stored patterns must never reach the undecidable path, where a deny rule would spread.
  using onboard::acl::Match;
  namespace detail = onboard::acl::detail;
  const std::vector<std::string> levels{"a", "", "+", "#", "%d", "x%cy", "%x", "a+", "%", "#%u"};
  const Substitutions subs{"d", "c", "u"};
  const auto topics = all_topics(4);
  const auto filters = all_filters(kFilterLevels, 3);
  int accepted = 0;
  int refused = 0;
  for (const auto& pattern : all_filters(levels, 3)) {
    if (pattern_problem(pattern).has_value()) {
      ++refused;
      continue;
    }
    ++accepted;
    CAPTURE(pattern);
    for (const auto& topic : topics) {
      if (detail::match_topic(pattern, topic, subs) == Match::undecidable) FAIL(topic);
    }
    for (const auto& filter : filters) {
      if (detail::match_covers(pattern, filter, subs) == Match::undecidable) FAIL(filter);
      if (detail::match_intersects(pattern, filter, subs) == Match::undecidable) FAIL(filter);
    }
  }
  CHECK(accepted > 100);
  CHECK(refused > 100);
}
