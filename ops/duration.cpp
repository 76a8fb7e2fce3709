#include "ops/duration.h"

#include <charconv>

namespace onboard::ops {

Result<UnixTime> parse_duration(std::string_view text, std::string_view option, UnixTime min,
                                UnixTime max) {
  auto bad = [&] {
    return make_error(Errc::invalid_input,
                      std::string(option) + " must be a whole number and a unit (s, m, h or d), " +
                          "e.g. 7d or 36h, from " + format_duration(min) + " to " +
                          format_duration(max) + "; not '" + std::string(text) + "'");
  };
  if (min <= 0 && text == "0") return 0;  // a zero needs no unit where zero is allowed
  if (text.size() < 2) return bad();
  UnixTime unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = kDay;
      break;
    default:
      return bad();
  }
  const std::string_view digits = text.substr(0, text.size() - 1);
  UnixTime number = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  // Compare before multiplying, so that no number of days can overflow.
  if (ec != std::errc() || end != digits.data() + digits.size() || number < 0 ||
      number > max / unit || number * unit < min)
    return bad();
  return number * unit;
}

std::string format_duration(UnixTime seconds) {
  if (seconds < 0) return std::string(1, '-').append(format_duration(-seconds));
  const UnixTime d = seconds / kDay, h = seconds % kDay / 3600, m = seconds % 3600 / 60;
  // Built by appending (here and above): GCC 12 warns falsely (-Wrestrict) on "literal" +
  // std::string temporaries.
  std::string out;
  const auto part = [&out](UnixTime n, char unit) {
    if (!out.empty()) out += ' ';
    out += std::to_string(n);
    out += unit;
  };
  if (d > 0) {
    part(d, 'd');
    if (h > 0) part(h, 'h');
  } else if (h > 0) {
    part(h, 'h');
    if (m > 0) part(m, 'm');
  } else if (m > 0) {
    part(m, 'm');
    if (seconds % 60 != 0) part(seconds % 60, 's');
  } else {
    part(seconds, 's');
  }
  return out;
}

}  // namespace onboard::ops
