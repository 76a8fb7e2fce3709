// Free text an operator stores (a device's name, location, firmware) and how stored text is shown
// on a terminal; and the edges of duration parsing that tests/tools does not already cover.
#include "ops/text.h"

#include <catch2/catch.hpp>

#include <limits>
#include <string>

#include "ops/duration.h"

namespace {

namespace text = onboard::ops;  // where text_problem and terminal_safe live
namespace dur = onboard::ops;   // where parse_duration lives
using namespace std::string_literals;

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("text: printable text of any script within the limit is accepted") {
  CHECK_FALSE(text::text_problem("name", "", 10));
  CHECK_FALSE(text::text_problem("name", "Boiler room 3", 64));
  CHECK_FALSE(
      text::text_problem("name", "Kühlraum \xE2\x84\x96 7 \xF0\x9F\x8C\xA1", 64));  // ü № 🌡
  CHECK_FALSE(text::text_problem("name", "\xC2\xA0", 64));  // U+00A0 follows the C1 range
}

TEST_CASE("text: the limit is in bytes of UTF-8 and exactly the limit is allowed") {
  CHECK_FALSE(text::text_problem("location", std::string(128, 'x'), 128));
  auto problem = text::text_problem("location", std::string(129, 'x'), 128);
  REQUIRE(problem);
  CHECK(*problem == "location is 129 bytes long; the limit is 128");
  // Three characters, six bytes.
  CHECK(text::text_problem("name", "\xC3\xA4\xC3\xB6\xC3\xBC", 5));
  CHECK_FALSE(text::text_problem("name", "\xC3\xA4\xC3\xB6\xC3\xBC", 6));
}

TEST_CASE("text: C0 controls DEL and C1 controls are refused naming the field and the byte") {
  struct Case {
    std::string value;
    std::string says;
  };
  for (const auto& c :
       {Case{"a\nb", "(U+000a at byte 1)"}, Case{"\tx", "(U+0009 at byte 0)"},
        Case{"red \x1b[31m", "(U+001b at byte 4)"}, Case{"ab\x7f", "(U+007f at byte 2)"},
        Case{"x\xC2\x85y", "(U+0085 at byte 1)"}, Case{"\xC2\x9b", "(U+009b at byte 0)"},
        Case{"nul\0"s, "(U+0000 at byte 3)"}}) {
    INFO(c.says);
    auto problem = text::text_problem("firmware", c.value, 64);
    REQUIRE(problem);
    CHECK(problem->starts_with("firmware holds a control character"));
    CHECK(contains(*problem, c.says));
  }
}

TEST_CASE("text: bytes that are not valid UTF-8 are refused with their position") {
  for (const auto& [value, at] : {std::pair{"ok\xFF"s, 2}, std::pair{"\xC0\xAF"s, 0},  // overlong /
                                  std::pair{"a\xED\xA0\x80"s, 1},                      // surrogate
                                  std::pair{"\xF4\x90\x80\x80"s, 0},  // above U+10FFFF
                                  std::pair{"ab\xE2\x82"s, 2},        // cut short
                                  std::pair{"\x80"s, 0}}) {           // a lone continuation
    INFO(at);
    auto problem = text::text_problem("name", value, 64);
    REQUIRE(problem);
    CHECK(*problem == "name is not valid UTF-8 (at byte " + std::to_string(at) + ")");
  }
}

TEST_CASE("text: a refusal never echoes the refused text") {
  const std::string secretish = "hunter2\x1b]0;pwned\x07";
  auto problem = text::text_problem("name", secretish, 64);
  REQUIRE(problem);
  CHECK_FALSE(contains(*problem, "hunter2"));
  CHECK_FALSE(contains(*problem, "pwned"));
  CHECK_FALSE(contains(*problem, "\x1b"));
}

TEST_CASE("text: terminal_safe leaves printable text alone and escapes every control visibly") {
  CHECK(text::terminal_safe("") == "");
  CHECK(text::terminal_safe("Kühlraum 7 \xF0\x9F\x8C\xA1") == "Kühlraum 7 \xF0\x9F\x8C\xA1");
  CHECK(text::terminal_safe("\x1b[2J") == "\\x1b[2J");
  CHECK(text::terminal_safe("a\r\nb") == "a\\x0d\\x0ab");
  CHECK(text::terminal_safe("del\x7f") == "del\\x7f");
  CHECK(text::terminal_safe("\xC2\x9b"
                            "31m") == "\\u009b31m");  // the one-byte CSI, as UTF-8
  CHECK(text::terminal_safe("nul\0"s) == "nul\\x00");
}

TEST_CASE("text: terminal_safe escapes each byte of invalid UTF-8 and resumes after it") {
  CHECK(text::terminal_safe("a\xFF"
                            "b") == "a\\xffb");
  CHECK(text::terminal_safe("\xC0\xAF") == "\\xc0\\xaf");
  // A raw C1 byte (not UTF-8) is escaped as a byte: a terminal in an 8-bit mode would obey it.
  CHECK(text::terminal_safe("\x9b"
                            "2J") == "\\x9b2J");
  // A cut-short sequence before valid text: only the broken bytes are escaped.
  CHECK(text::terminal_safe("\xE2\x82\xC3\xA4") == "\\xe2\\x82\xC3\xA4");
  // Whatever goes in, nothing below 0x20 or DEL comes out.
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  for (char c : text::terminal_safe(all)) {
    const auto u = static_cast<unsigned char>(c);
    CHECK_FALSE((u < 0x20 || u == 0x7f || (u >= 0x80 && u <= 0x9f)));
  }
}

TEST_CASE("duration: signs spaces and upper-case units are refused") {
  for (const char* bad : {"+7d", " 7d", "7d ", "7D", "7H", "0x10s", "07"}) {
    INFO(bad);
    auto r = dur::parse_duration(bad, "--validity");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == onboard::Errc::invalid_input);
    CHECK(r.error().message.ends_with("not '" + std::string(bad) + "'"));
  }
  CHECK(dur::parse_duration("07d", "--validity").value() == 7 * dur::kDay);  // leading zero: fine
}

TEST_CASE("duration: the upper bound holds to the second in every unit") {
  constexpr auto max = 3650 * dur::kDay;
  CHECK(dur::parse_duration(std::to_string(max) + "s", "--x").value() == max);
  CHECK_FALSE(dur::parse_duration(std::to_string(max + 1) + "s", "--x").ok());
  CHECK(dur::parse_duration(std::to_string(max / 60) + "m", "--x").value() == max);
  CHECK_FALSE(dur::parse_duration(std::to_string(max / 60 + 1) + "m", "--x").ok());
  CHECK(dur::parse_duration(std::to_string(max / 3600) + "h", "--x").value() == max);
  CHECK_FALSE(dur::parse_duration(std::to_string(max / 3600 + 1) + "h", "--x").ok());
  // Numbers far past any limit are refused, not wrapped around into range.
  CHECK_FALSE(dur::parse_duration("9223372036854775807s", "--x").ok());
  CHECK_FALSE(dur::parse_duration("9223372036854775808d", "--x").ok());
  // With the widest range, the last whole day that fits is accepted and the next one refused.
  constexpr auto widest = std::numeric_limits<onboard::UnixTime>::max();
  CHECK(dur::parse_duration("106751991167300d", "--x", 1, widest).value() ==
        106751991167300 * dur::kDay);
  CHECK_FALSE(dur::parse_duration("106751991167301d", "--x", 1, widest).ok());
}

TEST_CASE("duration: a minimum that is not a whole unit is enforced on the product") {
  // 1m = 60 s is below a 90 s minimum even though the number 1 is within range.
  auto r = dur::parse_duration("1m", "--ttl", 90, 3600);
  REQUIRE_FALSE(r.ok());
  CHECK(contains(r.error().message, "from 1m 30s to 1h"));
  CHECK(dur::parse_duration("2m", "--ttl", 90, 3600).value() == 120);
  CHECK(dur::parse_duration("90s", "--ttl", 90, 3600).value() == 90);
}

TEST_CASE("duration: format_duration writes the largest units and drops zero parts") {
  CHECK(dur::format_duration(0) == "0s");
  CHECK(dur::format_duration(59) == "59s");
  CHECK(dur::format_duration(60) == "1m");
  CHECK(dur::format_duration(3600) == "1h");
  CHECK(dur::format_duration(3660) == "1h 1m");
  CHECK(dur::format_duration(3601) == "1h");  // seconds below an hour are not shown
  CHECK(dur::format_duration(dur::kDay + 59) == "1d");
  CHECK(dur::format_duration(3650 * dur::kDay) == "3650d");
}
