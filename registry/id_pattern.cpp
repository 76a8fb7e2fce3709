#include "registry/id_pattern.h"

#include <utility>

namespace onboard::registry {
namespace {

bool id_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::bitset<128> any_id_char() {
  std::bitset<128> set;
  for (int c = 0; c < 128; ++c) {
    if (id_char(static_cast<char>(c))) set.set(static_cast<std::size_t>(c));
  }
  return set;
}

struct Parser {
  std::string_view text;
  std::size_t pos = 0;
  std::string problem;

  bool fail(std::string why) {
    problem = "id pattern: " + why + " at offset " + std::to_string(pos);
    return false;
  }
  bool done() const { return pos >= text.size(); }
  char peek() const { return text[pos]; }

  // A number of a {n,m} quantifier.
  std::optional<int> number() {
    int value = 0;
    const std::size_t start = pos;
    while (!done() && peek() >= '0' && peek() <= '9') {
      value = value * 10 + (peek() - '0');
      if (value > IdPattern::kMaxRepeat) return std::nullopt;
      ++pos;
    }
    if (pos == start) return std::nullopt;
    return value;
  }

  bool class_body(std::bitset<128>& set) {
    ++pos;  // '['
    bool first = true;
    while (!done() && peek() != ']') {
      const char c = peek();
      if (c == '^' && first) return fail("negated classes are not supported");
      if (c == '\\') {
        ++pos;
        if (done() || !id_char(peek())) return fail("'\\' escapes only '.', '_' or '-'");
        set.set(static_cast<unsigned char>(peek()));
        ++pos;
      } else if (!id_char(c)) {
        return fail(std::string("'") + c +
                    "' cannot be in an id (a class holds letters, digits, "
                    "'.', '_' and '-')");
      } else if (pos + 2 < text.size() && text[pos + 1] == '-' && text[pos + 2] != ']') {
        const char last = text[pos + 2];
        const bool same_kind = ((c >= 'a' && c <= 'z') && (last >= 'a' && last <= 'z')) ||
                               ((c >= 'A' && c <= 'Z') && (last >= 'A' && last <= 'Z')) ||
                               ((c >= '0' && c <= '9') && (last >= '0' && last <= '9'));
        if (!same_kind || last < c) {
          return fail(std::string("bad range ") + c + "-" + last +
                      " (ranges go up within letters of one case or digits)");
        }
        for (char x = c; x <= last; ++x) set.set(static_cast<unsigned char>(x));
        pos += 3;
      } else {
        set.set(static_cast<unsigned char>(c));
        ++pos;
      }
      first = false;
    }
    if (done()) return fail("'[' is not closed");
    if (set.none()) return fail("an empty class matches nothing");
    ++pos;  // ']'
    return true;
  }
};

}  // namespace

Result<IdPattern> IdPattern::compile(std::string_view pattern) {
  if (pattern.empty()) return make_error(Errc::invalid_input, "id pattern is empty");
  if (pattern.size() > kMaxPatternBytes) {
    return make_error(Errc::invalid_input, "id pattern is " + std::to_string(pattern.size()) +
                                               " bytes long; the limit is " +
                                               std::to_string(kMaxPatternBytes));
  }
  Parser p{pattern, 0, {}};
  IdPattern out;
  out.text_ = std::string(pattern);
  while (!p.done()) {
    std::bitset<128> set;
    const char c = p.peek();
    if (c == '[') {
      if (!p.class_body(set)) return make_error(Errc::invalid_input, p.problem);
    } else if (c == '.') {
      set = any_id_char();
      ++p.pos;
    } else if (c == '\\') {
      ++p.pos;
      if (p.done() || !id_char(p.peek()) || (p.peek() != '.' && p.peek() != '_' && p.peek() != '-'))
        p.fail("'\\' escapes only '.', '_' or '-'");
      if (!p.problem.empty()) return make_error(Errc::invalid_input, p.problem);
      set.set(static_cast<unsigned char>(p.peek()));
      ++p.pos;
    } else if (id_char(c)) {
      set.set(static_cast<unsigned char>(c));
      ++p.pos;
    } else {
      const bool quantifier = c == '?' || c == '*' || c == '+' || c == '{';
      p.fail(quantifier ? std::string("'") + c + "' follows no character"
                        : std::string("'") + c +
                              "' is not supported (allowed: letters, digits, '_', '-', '\\.', "
                              "'.', [classes], ? * + {n,m}; no groups, alternation or anchors)");
      return make_error(Errc::invalid_input, p.problem);
    }
    // The quantifier, expanded: {n,m} is n mandatory steps then m-n optional ones.
    int min = 1, max = 1;
    bool unbounded = false;
    if (!p.done()) {
      const char q = p.peek();
      if (q == '?') {
        min = 0;
        ++p.pos;
      } else if (q == '*') {
        min = 0;
        unbounded = true;
        ++p.pos;
      } else if (q == '+') {
        unbounded = true;
        ++p.pos;
      } else if (q == '{') {
        ++p.pos;
        auto n = p.number();
        if (!n) {
          p.fail("'{' needs a count from 0 to " + std::to_string(kMaxRepeat));
          return make_error(Errc::invalid_input, p.problem);
        }
        min = max = *n;
        if (!p.done() && p.peek() == ',') {
          ++p.pos;
          if (!p.done() && p.peek() == '}') {
            unbounded = true;
          } else {
            auto m = p.number();
            if (!m || *m < *n) {
              p.fail("{n,m} needs m from n to " + std::to_string(kMaxRepeat));
              return make_error(Errc::invalid_input, p.problem);
            }
            max = *m;
          }
        }
        if (p.done() || p.peek() != '}') {
          p.fail("'{' is not closed");
          return make_error(Errc::invalid_input, p.problem);
        }
        ++p.pos;
      }
      if (!p.done() && (p.peek() == '?' || p.peek() == '*' || p.peek() == '+' || p.peek() == '{')) {
        p.fail("a quantifier cannot follow a quantifier");
        return make_error(Errc::invalid_input, p.problem);
      }
    }
    for (int i = 0; i < min; ++i) out.steps_.push_back({set, Kind::one});
    if (unbounded) {
      out.steps_.push_back({set, Kind::star});
    } else {
      for (int i = min; i < max; ++i) out.steps_.push_back({set, Kind::optional});
    }
    if (out.steps_.size() > kMaxSteps) {
      return make_error(Errc::invalid_input, "id pattern is too complex (more than " +
                                                 std::to_string(kMaxSteps) +
                                                 " characters' worth of steps)");
    }
  }
  if (out.steps_.empty()) return make_error(Errc::invalid_input, "id pattern matches only ''");
  return out;
}

bool IdPattern::matches(std::string_view id) const noexcept {
  const std::size_t n = steps_.size();
  // Positions 0..n: "the steps before this one are satisfied". Skippable steps are crossed by the
  // closure; a star step keeps its position when it takes a character.
  std::bitset<kMaxSteps + 1> current, next;
  auto close = [&](std::bitset<kMaxSteps + 1>& set) {
    for (std::size_t i = 0; i < n; ++i) {
      if (set[i] && steps_[i].kind != Kind::one) set.set(i + 1);
    }
  };
  current.set(0);
  close(current);
  for (char c : id) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 128) return false;
    next.reset();
    bool any = false;
    for (std::size_t i = 0; i < n; ++i) {
      if (!current[i] || !steps_[i].chars.test(u)) continue;
      next.set(steps_[i].kind == Kind::star ? i : i + 1);
      any = true;
    }
    if (!any) return false;
    close(next);
    current = next;
  }
  return current[n];
}

std::optional<std::string> id_pattern_problem(std::string_view pattern) {
  auto compiled = IdPattern::compile(pattern);
  if (compiled.ok()) return std::nullopt;
  return compiled.error().message;
}

}  // namespace onboard::registry
