// A claim's id pattern: which client ids (future device ids) the devices enrolling with a claim
// may take. A small, restricted regular expression, so that matching is linear in the id's length
// whatever the pattern (std::regex backtracks, and recurses per character):
//
//   literal     a letter, digit, '_' or '-'; '\.' for a literal dot (the characters of an id)
//   .           any character of a device id
//   [...]       a class of those characters and ranges of letters or digits: [a-f0-9_-]
//               ('-' is a literal first or last); no negation
//   quantifier  after an atom: ? * + {n} {n,} {n,m}   (n, m at most kMaxRepeat)
//
// No groups, no alternation, no anchors: a pattern always matches the WHOLE id. Compiled once
// into a list of steps and matched by simulating every position at once (a Thompson NFA): O(id
// length x steps), steps at most kMaxSteps.
#pragma once

#include <bitset>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace onboard::registry {

class IdPattern {
 public:
  static constexpr std::size_t kMaxPatternBytes = 256;
  static constexpr int kMaxRepeat = 128;
  static constexpr std::size_t kMaxSteps = 512;

  // Errc::invalid_input with a message naming the problem and where it is.
  static Result<IdPattern> compile(std::string_view pattern);

  // True when `id` as a whole matches. Allocates nothing.
  bool matches(std::string_view id) const noexcept;

  const std::string& text() const noexcept { return text_; }

 private:
  enum class Kind : unsigned char { one, optional, star };
  struct Step {
    std::bitset<128> chars;  // the characters this step accepts (ASCII)
    Kind kind = Kind::one;
  };
  std::string text_;
  std::vector<Step> steps_;
};

// Why `pattern` cannot be an id pattern, or nullopt (IdPattern::compile's message).
std::optional<std::string> id_pattern_problem(std::string_view pattern);

// The pattern a claim gets when none is given: any device id.
inline constexpr std::string_view kAnyIdPattern = "[A-Za-z0-9][A-Za-z0-9._-]*";

}  // namespace onboard::registry
