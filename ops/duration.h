// Durations on the command line ("7d", "36h", "90m", "3600s") and in messages.
#pragma once

#include <string>
#include <string_view>

#include "ca/certificate.h"
#include "core/error.h"

namespace onboard::ops {

inline constexpr UnixTime kDay = 86400;

// A whole number and one unit (s, m, h, d), from `min` to `max` seconds (with `min` 0, also a bare
// "0"). `option` names the flag in the error message, which also states the range.
Result<UnixTime> parse_duration(std::string_view text, std::string_view option, UnixTime min = 1,
                                UnixTime max = 3650 * kDay);

// "7d", "6d 23h", "45m", "12s": for messages.
std::string format_duration(UnixTime seconds);

}  // namespace onboard::ops
