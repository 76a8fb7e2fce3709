#include "core/encoding.h"

#include <cstdint>

namespace onboard {
namespace {

constexpr std::string_view kHexDigits = "0123456789abcdef";
constexpr std::string_view kBase64Url =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::string_view kBase64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The value of digit `c` in `alphabet`, or -1.
int digit_value(std::string_view alphabet, char c) {
  const auto at = alphabet.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

// Unpadded.
std::string encode(std::string_view alphabet, std::span<const unsigned char> bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (unsigned char b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(alphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(alphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

// Unpadded and strict: no impossible length, the unused low bits zero.
std::optional<std::string> decode(std::string_view alphabet, std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = digit_value(alphabet, c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

}  // namespace

std::string hex_encode(std::span<const unsigned char> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 0x0f]);
  }
  return out;
}

std::string base64url_encode(std::span<const unsigned char> bytes) {
  return encode(kBase64Url, bytes);
}

std::optional<std::string> base64url_decode(std::string_view text) {
  return decode(kBase64Url, text);
}

std::string base64_encode(std::span<const unsigned char> bytes) {
  std::string out = encode(kBase64, bytes);
  out.append((4 - out.size() % 4) % 4, '=');
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  // Padding only where the length needs it: "QQ==" but neither "QUE==" nor "QUJD" + "====".
  const auto digits = text.substr(0, text.size() - padding);
  if (digits.size() % 4 == 1 || (padding > 0 && digits.size() % 4 + padding != 4))
    return std::nullopt;
  return decode(kBase64, digits);
}

void append_u64_be(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((value >> shift) & 0xff));
}

void append_length_prefixed(std::string& out, std::string_view field) {
  append_u64_be(out, field.size());
  out.append(field);
}

}  // namespace onboard
