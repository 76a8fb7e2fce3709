// Free text (a device's name, location, firmware; a group's description): what may be stored,
// and how whatever is stored is shown on a terminal. Text reaches the registry from the CLI, the
// REST API and CSV files, and is printed on an operator's terminal, where an escape sequence or a
// newline could recolour or clear the screen or forge a table row.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace onboard::ops {

// Why `value` may not be stored as the free-text field `field`, or nullopt. Allowed: valid UTF-8
// of at most `max_bytes` bytes with no control character (C0 U+0000..U+001F, DEL U+007F, C1
// U+0080..U+009F). Empty text is allowed. The message names the field and where the problem is,
// never echoing the text itself.
std::optional<std::string> text_problem(std::string_view field, std::string_view value,
                                        std::size_t max_bytes);

// `text` made safe for a terminal: each control character (C0, DEL, C1) and each byte that is not
// part of valid UTF-8 is replaced by a visible escape, \xNN for a byte, \u0080..\u009f for a C1
// character. Printable text, non-ASCII included, is unchanged.
std::string terminal_safe(std::string_view text);

}  // namespace onboard::ops
