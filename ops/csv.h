// RFC 4180 CSV, as spreadsheets export it: comma-separated, fields optionally in double quotes,
// "" for a quote inside quotes, quoted fields may span lines, CRLF or LF line ends.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace onboard::ops {

struct CsvRecord {
  int line = 0;  // the 1-based line the record starts on, for error messages
  std::vector<std::string> fields;
};

// Every non-blank record of `text`. Errors (Errc::invalid_input, naming the line): an
// unterminated quoted field, text after a closing quote, a NUL byte. A UTF-8 byte order mark at
// the start is skipped.
Result<std::vector<CsvRecord>> parse_csv(std::string_view text);

}  // namespace onboard::ops
