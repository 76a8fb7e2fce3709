#include "ops/text.h"
#include "core/encoding.h"

#include <cstdint>

namespace onboard::ops {
namespace {

// The code point at `text[at]` and its length in bytes, or length 0 when the bytes there are not
// valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
struct Decoded {
  char32_t code_point = 0;
  std::size_t length = 0;
};
Decoded decode(std::string_view text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  std::size_t length = 0;
  char32_t cp = 0, min = 0;
  if ((lead & 0xe0) == 0xc0) {
    length = 2, cp = lead & 0x1f, min = 0x80;
  } else if ((lead & 0xf0) == 0xe0) {
    length = 3, cp = lead & 0x0f, min = 0x800;
  } else if ((lead & 0xf8) == 0xf0) {
    length = 4, cp = lead & 0x07, min = 0x10000;
  } else {
    return {};
  }
  if (text.size() - at < length) return {};
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return {};
    cp = (cp << 6) | (byte(i) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return {};
  return {cp, length};
}

bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f); }

std::string hex_byte(unsigned value) {
  const auto byte = static_cast<unsigned char>(value);
  return hex_encode({&byte, 1});
}

}  // namespace

std::optional<std::string> text_problem(std::string_view field, std::string_view value,
                                        std::size_t max_bytes) {
  const std::string name(field);
  if (value.size() > max_bytes) {
    return name + " is " + std::to_string(value.size()) + " bytes long; the limit is " +
           std::to_string(max_bytes);
  }
  for (std::size_t at = 0; at < value.size();) {
    const auto d = decode(value, at);
    if (d.length == 0) return name + " is not valid UTF-8 (at byte " + std::to_string(at) + ")";
    if (is_control(d.code_point)) {
      return name + " holds a control character (U+00" +
             hex_byte(static_cast<unsigned>(d.code_point)) + " at byte " + std::to_string(at) +
             "); only printable text is allowed";
    }
    at += d.length;
  }
  return std::nullopt;
}

std::string terminal_safe(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t at = 0; at < text.size();) {
    const auto d = decode(text, at);
    if (d.length == 0) {
      out += "\\x" + hex_byte(static_cast<unsigned char>(text[at]));
      at += 1;
      continue;
    }
    if (d.code_point < 0x80 && is_control(d.code_point)) {
      out += "\\x" + hex_byte(static_cast<unsigned>(d.code_point));
    } else if (is_control(d.code_point)) {
      out += "\\u00" + hex_byte(static_cast<unsigned>(d.code_point));
    } else {
      out.append(text.substr(at, d.length));
    }
    at += d.length;
  }
  return out;
}

}  // namespace onboard::ops
