// rest/front.h: scan_head, which decides when the bytes a client sent so far hold a whole request
// head (the event loop hands a connection to a worker only then). The first byte chooses the
// size limit (1 + 64 * byte); the rest is what the connection sent. Invariants: a complete head
// fits the limit and the input, ends in an empty CRLF line that follows a first line, and no
// shorter prefix is complete (the first end is found); a prefix holding the head is complete at
// the same length; too_large only past the limit, incomplete only within it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "rest/front.h"

using onboard::rest::HeadScan;
using onboard::rest::scan_head;

namespace {
void check(bool condition) {
  if (!condition) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t max = 1 + 64 * static_cast<std::size_t>(data[0]);
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  const HeadScan scan = scan_head(bytes, max);
  switch (scan.kind) {
    case HeadScan::complete: {
      const std::size_t n = scan.head_bytes;
      check(n >= 3 && n <= max && n <= bytes.size());  // shortest: "\n\r\n"
      check(bytes.substr(n - 2, 2) == "\r\n" && bytes[n - 3] == '\n');
      check(bytes.find('\n') < n - 2);  // a first line ends before the empty one
      check(scan_head(bytes.substr(0, n - 1), max).kind == HeadScan::incomplete);
      const HeadScan again = scan_head(bytes.substr(0, n), max);
      check(again.kind == HeadScan::complete && again.head_bytes == n);
      break;
    }
    case HeadScan::too_large:
      check(bytes.size() > max);
      check(scan_head(bytes.substr(0, max), max).kind == HeadScan::incomplete);
      break;
    case HeadScan::incomplete:
      check(bytes.size() <= max);
      break;
  }
  return 0;
}
