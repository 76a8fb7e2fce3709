// Command-line checks the benchmark programs share, as CLI11 validators. CLI11 alone would turn
// "-3" into 2^64 - 3 for an unsigned option, and its range checks print the whole double range
// in their messages.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace bench_cli {

// A whole number of at least MIN, in decimal digits only.
inline CLI::Validator whole_number(unsigned long long min = 0) {
  return CLI::Validator(
      [min](std::string& text) -> std::string {
        unsigned long long value = 0;
        if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
            !CLI::detail::lexical_cast(text, value)) {
          return "must be a whole number, not '" + text + "'";
        }
        if (value < min) return "must be at least " + std::to_string(min) + ", not " + text;
        return {};
      },
      min == 0   ? "COUNT"
      : min == 1 ? "POSITIVE"
                 : "AT LEAST " + std::to_string(min));
}

// A number above 0 (seconds, rates), or 0 and above with ALLOW_ZERO.
inline CLI::Validator positive_number(bool allow_zero = false) {
  return CLI::Validator(
      [allow_zero](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || !(allow_zero ? value >= 0 : value > 0)) {
          return std::string("must be a number ") + (allow_zero ? "of 0 or more" : "above 0") +
                 ", not '" + text + "'";
        }
        return {};
      },
      allow_zero ? "NON-NEGATIVE" : "POSITIVE");
}

}  // namespace bench_cli
