#include "registry/topic.h"

#include <cstdio>

namespace onboard::acl {
namespace {

// Walks a topic, filter or pattern level by level without copying. "" is one empty level, "a/" is
// "a" and "", so every '/' starts a level and the count is always separators + 1.
class Levels {
 public:
  explicit Levels(std::string_view text) noexcept : rest_(text) {}

  bool done() const noexcept { return done_; }

  std::string_view next() noexcept {
    const std::size_t slash = rest_.find('/');
    if (slash == std::string_view::npos) {
      done_ = true;
      return rest_;
    }
    const std::string_view level = rest_.substr(0, slash);
    rest_.remove_prefix(slash + 1);
    return level;
  }

 private:
  std::string_view rest_;
  bool done_ = false;
};

bool is_plus(std::string_view level) noexcept { return level == "+"; }
bool is_hash(std::string_view level) noexcept { return level == "#"; }
bool starts_with_dollar(std::string_view text) noexcept {
  return !text.empty() && text.front() == '$';
}

// A value that could widen or blur a match is unusable: '/' would span levels, '+' and '#' would
// look like wildcards in a filter, and an empty value would turn "devices/%d" into "devices/".
bool usable(std::string_view value) noexcept {
  // One pass with four comparisons per byte: find_first_of searches the four bytes with a memchr
  // call per byte of the value (callgrind: most of a subscribe decision's placeholder levels).
  for (const char c : value) {
    if (c == '/' || c == '+' || c == '#' || c == '\0') return false;
  }
  return !value.empty();
}

// The value a placeholder letter stands for; nullptr for a letter that is not a placeholder.
const std::string_view* substitution(char letter, const Substitutions& subs) noexcept {
  switch (letter) {
    case 'd':
      return &subs.device_id;
    case 'c':
      return &subs.client_id;
    case 'u':
      return &subs.username;
    default:
      return nullptr;
  }
}

// Could this literal pattern level match anything at all? It can unless it is malformed or needs
// an unusable value. Sets `*dollar` to whether the level it matches starts with '$'.
Match check_literal(std::string_view pattern, const Substitutions& subs,
                    bool* dollar = nullptr) noexcept {
  bool leading_dollar = starts_with_dollar(pattern);
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '%') {
      const std::string_view* value =
          i + 1 < pattern.size() ? substitution(pattern[i + 1], subs) : nullptr;
      if (value == nullptr || !usable(*value)) return Match::undecidable;
      if (i == 0) leading_dollar = value->front() == '$';
      ++i;
    } else if (c == '+' || c == '#' || c == '\0') {
      return Match::undecidable;
    }
  }
  if (dollar != nullptr) *dollar = leading_dollar;
  return Match::yes;
}

// Can the rest of a pattern, starting with `level`, match some continuation of a topic?
Match rest_satisfiable(std::string_view level, Levels& rest, const Substitutions& subs) noexcept {
  for (;;) {
    if (is_hash(level)) return rest.done() ? Match::yes : Match::undecidable;
    if (!is_plus(level)) {
      if (const Match m = check_literal(level, subs); m != Match::yes) return m;
    }
    if (rest.done()) return Match::yes;
    level = rest.next();
  }
}

bool bad_pattern_size(std::string_view pattern) noexcept {
  return pattern.empty() || pattern.size() > kMaxTopicLength;
}

std::string quoted(std::string_view level) {
  constexpr std::size_t kShown = 32;
  // Appended, not "'" + std::string(...): GCC 12 warns falsely (-Wrestrict) on that.
  std::string out(1, '\'');
  out += level.substr(0, kShown);
  out += level.size() <= kShown ? "'" : "...'";
  return out;
}

// Mosquitto refuses a topic or filter that is not valid UTF-8 or holds a control character or a
// non-character (MQTT 5.0 §1.5.4), so a pattern holding one could never match. Returns the reason.
std::optional<std::string> utf8_problem(std::string_view text) {
  const auto at = [](std::size_t i) { return " at byte " + std::to_string(i); };
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (lead < 0x80) {
      length = 1;
      code = lead;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
      code = lead & 0x1fu;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      code = lead & 0x0fu;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      code = lead & 0x07u;
    } else {
      return "pattern is not valid UTF-8" + at(i);
    }
    if (text.size() - i < length) return "pattern is not valid UTF-8" + at(i);
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0u) != 0x80u) return "pattern is not valid UTF-8" + at(i);
      code = (code << 6) | (next & 0x3fu);
    }
    const bool overlong = (length == 3 && code < 0x800) || (length == 4 && code < 0x10000);
    if (overlong || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return "pattern is not valid UTF-8" + at(i);
    }
    const bool control = code < 0x20 || (code >= 0x7f && code <= 0x9f);
    const bool noncharacter = (code >= 0xfdd0 && code <= 0xfdef) || (code & 0xfffe) == 0xfffe;
    if (control || noncharacter) {
      char name[16];
      std::snprintf(name, sizeof name, "U+%04X", static_cast<unsigned>(code));
      return "pattern contains " + std::string(name) + at(i) +
             ", which MQTT topics cannot hold, so it could never match";
    }
    i += length;
  }
  return std::nullopt;
}

}  // namespace

bool is_valid_topic(std::string_view topic) noexcept {
  if (topic.empty() || topic.size() > kMaxTopicLength) return false;
  // One pass with three comparisons per byte: find_first_of searches the three forbidden bytes
  // once per byte of the topic, which was the largest cost of a decision (callgrind).
  for (const char c : topic) {
    if (c == '+' || c == '#' || c == '\0') return false;
  }
  return true;
}

bool is_valid_filter(std::string_view filter) noexcept {
  if (filter.empty() || filter.size() > kMaxTopicLength) return false;
  // One pass: a wildcard must be a whole level (a '/' or the filter's edge on both sides), '#' the
  // last one. Walking level by level with find and find_first_of cost about 600 instructions for
  // a 20-byte filter (callgrind), most of a subscribe decision.
  const std::size_t n = filter.size();
  for (std::size_t i = 0; i < n; ++i) {
    const char c = filter[i];
    if (c == '\0') return false;
    if (c != '+' && c != '#') continue;
    if (i > 0 && filter[i - 1] != '/') return false;
    if (c == '#' ? i + 1 != n : i + 1 < n && filter[i + 1] != '/') return false;
  }
  return true;
}

namespace detail {

// Compares a literal pattern level with a literal topic or filter level, substituting in place.
Match compare_level(std::string_view pattern, std::string_view target,
                    const Substitutions& subs) noexcept {
  std::size_t at = 0;  // position in target
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '%') {
      const std::string_view* value =
          i + 1 < pattern.size() ? substitution(pattern[i + 1], subs) : nullptr;
      if (value == nullptr || !usable(*value)) return Match::undecidable;
      if (target.size() - at < value->size() || target.substr(at, value->size()) != *value) {
        return Match::no;
      }
      at += value->size();
      ++i;
    } else if (c == '+' || c == '#' || c == '\0') {
      return Match::undecidable;  // a wildcard inside a level: not a valid pattern
    } else {
      if (at == target.size() || target[at] != c) return Match::no;
      ++at;
    }
  }
  return at == target.size() ? Match::yes : Match::no;
}

Match match_topic(std::string_view pattern, std::string_view topic,
                  const Substitutions& subs) noexcept {
  if (bad_pattern_size(pattern)) return Match::undecidable;
  const bool dollar_topic = starts_with_dollar(topic);
  Levels p(pattern);
  Levels t(topic);
  bool first = true;
  while (!p.done()) {
    const std::string_view pl = p.next();
    if (is_hash(pl)) {
      if (!p.done()) return Match::undecidable;
      // '#' also matches the parent level, so whatever is left of the topic (even nothing) is fine.
      return first && dollar_topic ? Match::no : Match::yes;
    }
    if (t.done()) return Match::no;
    const std::string_view tl = t.next();
    if (is_plus(pl)) {
      if (first && dollar_topic) return Match::no;
    } else if (const Match m = compare_level(pl, tl, subs); m != Match::yes) {
      return m;
    }
    first = false;
  }
  return t.done() ? Match::yes : Match::no;
}

// Level by level, the filter's level must be a subset of the pattern's: '#' covers everything
// from here on (the parent too), '+' covers any single level, a literal covers only itself.
Match match_covers(std::string_view pattern, std::string_view filter,
                   const Substitutions& subs) noexcept {
  if (bad_pattern_size(pattern)) return Match::undecidable;
  // Only a literal first level can make the filter match '$' topics, and then it matches only them.
  const bool dollar_filter = starts_with_dollar(filter);
  Levels p(pattern);
  Levels f(filter);
  bool first = true;
  // A filter '#' matches its parent, except at the top ("#") and after a single empty level
  // ("/#"), where the parent would be the empty string, which is no topic.
  bool no_parent = true;
  while (!p.done()) {
    const std::string_view pl = p.next();
    if (is_hash(pl)) {
      if (!p.done()) return Match::undecidable;
      return first && dollar_filter ? Match::no : Match::yes;
    }
    if (f.done()) return Match::no;
    const std::string_view fl = f.next();
    if (is_hash(fl)) {
      // The filter matches every depth from here on (and maybe the parent); only a pattern '#'
      // covers all of that, or "+/#" when there is no parent.
      if (!no_parent || !is_plus(pl) || p.done() || !is_hash(p.next())) return Match::no;
      return p.done() ? Match::yes : Match::undecidable;
    }
    if (is_plus(pl)) {
      if (first && dollar_filter) return Match::no;
    } else {
      if (is_plus(fl)) return Match::no;
      if (const Match m = compare_level(pl, fl, subs); m != Match::yes) return m;
    }
    no_parent = first && fl.empty();
    first = false;
  }
  return f.done() ? Match::yes : Match::no;
}

// Level by level, the two level sets must overlap; a '#' on either side ends the walk, provided
// the other side's remaining levels can be satisfied at all.
Match match_intersects(std::string_view pattern, std::string_view filter,
                       const Substitutions& subs) noexcept {
  if (bad_pattern_size(pattern)) return Match::undecidable;
  Levels p(pattern);
  Levels f(filter);
  bool first = true;
  // A '#' matches its parent, but not when the parent would be a single empty level: that is the
  // empty string, which is no topic.
  bool no_parent = false;
  for (;;) {
    if (p.done()) {
      if (f.done()) return Match::yes;
      return is_hash(f.next()) && !no_parent ? Match::yes : Match::no;
    }
    const std::string_view pl = p.next();
    if (f.done()) {
      if (!is_hash(pl)) return Match::no;
      if (!p.done()) return Match::undecidable;
      return no_parent ? Match::no : Match::yes;
    }
    const std::string_view fl = f.next();
    if (is_hash(pl)) {
      if (!p.done()) return Match::undecidable;
      // The pattern's leading '#' skips '$' topics; a literal "$..." filter level has only those.
      return first && starts_with_dollar(fl) ? Match::no : Match::yes;
    }
    if (is_hash(fl)) {
      bool dollar = false;
      if (first && !is_plus(pl)) {
        if (const Match m = check_literal(pl, subs, &dollar); m != Match::yes) return m;
        if (dollar) return Match::no;
      }
      return rest_satisfiable(pl, p, subs);
    }
    if (is_plus(pl)) {
      if (first && starts_with_dollar(fl)) return Match::no;
    } else if (is_plus(fl)) {
      bool dollar = false;
      if (const Match m = check_literal(pl, subs, &dollar); m != Match::yes) return m;
      if (first && dollar) return Match::no;
    } else if (const Match m = compare_level(pl, fl, subs); m != Match::yes) {
      return m;
    }
    no_parent = first && (pl.empty() || fl.empty());
    first = false;
  }
}

}  // namespace detail

bool pattern_matches_topic(std::string_view pattern, std::string_view topic,
                           const Substitutions& subs) noexcept {
  return is_valid_topic(topic) && detail::match_topic(pattern, topic, subs) == Match::yes;
}

bool pattern_covers_filter(std::string_view pattern, std::string_view filter,
                           const Substitutions& subs) noexcept {
  return is_valid_filter(filter) && detail::match_covers(pattern, filter, subs) == Match::yes;
}

bool pattern_intersects_filter(std::string_view pattern, std::string_view filter,
                               const Substitutions& subs) noexcept {
  return is_valid_filter(filter) && detail::match_intersects(pattern, filter, subs) == Match::yes;
}

std::optional<std::string> pattern_problem(std::string_view pattern) {
  if (pattern.empty()) return "pattern is empty";
  if (pattern.size() > kMaxTopicLength) {
    return "pattern is " + std::to_string(pattern.size()) + " bytes long; the limit is " +
           std::to_string(kMaxTopicLength);
  }
  if (pattern.find('\0') != pattern.npos) return "pattern contains a NUL byte";
  if (auto problem = utf8_problem(pattern)) return problem;

  Levels levels(pattern);
  for (std::size_t number = 1; !levels.done(); ++number) {
    const std::string_view level = levels.next();
    std::string where = "level ";
    where += std::to_string(number);
    where += " (";
    where += quoted(level);
    where += ')';
    if (is_hash(level)) {
      if (!levels.done())
        return "'#' must be the last level, but " + where + " is followed by more";
      continue;
    }
    if (is_plus(level)) continue;
    const bool wildcard = level.find_first_of("+#") != level.npos;
    if (wildcard && level.find('%') != level.npos) {
      return where + " mixes a placeholder with a wildcard; a wildcard must be a whole level";
    }
    if (wildcard) return "'+' and '#' must each be a whole level, but " + where + " is not";
    for (std::size_t i = level.find('%'); i != level.npos; i = level.find('%', i + 2)) {
      if (i + 1 == level.size() || substitution(level[i + 1], Substitutions{}) == nullptr) {
        return "'%' in " + where +
               " must be followed by d (device id), c (client id) or u (username)";
      }
    }
  }
  return std::nullopt;
}

}  // namespace onboard::acl
