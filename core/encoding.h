// Text encodings of bytes: lower-case hex, unpadded base64url (RFC 4648 §5) and padded standard
// base64 (§4).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace onboard {

std::string hex_encode(std::span<const unsigned char> bytes);
inline std::string hex_encode(std::string_view bytes) {
  return hex_encode({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
}

// Unpadded, so that a token can sit in a URL path or query without escaping.
std::string base64url_encode(std::span<const unsigned char> bytes);
inline std::string base64url_encode(std::string_view bytes) {
  return base64url_encode({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
}
// Strict: alphabet only, no padding, no impossible length, and the unused low bits of the last
// character zero, so that no two spellings decode to the same bytes.
std::optional<std::string> base64url_decode(std::string_view text);

// Standard and padded, as `openssl base64 -A` writes it: what a device sends inside JSON.
std::string base64_encode(std::span<const unsigned char> bytes);
inline std::string base64_encode(std::string_view bytes) {
  return base64_encode({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
}
// Strict likewise: the standard alphabet, padded to a multiple of four with at most two `=`, no
// line breaks or spaces, and the unused low bits zero.
std::optional<std::string> base64_decode(std::string_view text);

// Fixed-width binary fields for what is hashed or signed: a value as 8 bytes, most significant
// first, and a field as its length (8 bytes likewise) then its bytes, so that no two field lists
// encode alike ("ab" + "c" against "a" + "bc").
void append_u64_be(std::string& out, std::uint64_t value);
void append_length_prefixed(std::string& out, std::string_view field);

}  // namespace onboard
