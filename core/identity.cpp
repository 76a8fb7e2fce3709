#include "core/identity.h"

#include "core/encoding.h"

namespace onboard {
namespace {

constexpr bool is_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
constexpr bool is_id_char(char c) noexcept {
  return is_alnum(c) || c == '.' || c == '_' || c == '-';
}

std::string describe(char c) {
  switch (c) {
    case ' ':
      return "a space";
    case '\0':
      return "a NUL byte";
    case '\t':
      return "a tab";
    default:
      break;
  }
  unsigned char u = static_cast<unsigned char>(c);
  if (u < 0x20 || u >= 0x7f) {
    return "byte 0x" + hex_encode({&u, 1});
  }
  return std::string("'") + c + "'";
}

}  // namespace

bool is_valid_device_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > kMaxDeviceIdLength || !is_alnum(id.front())) return false;
  for (char c : id) {
    if (!is_id_char(c)) return false;
  }
  return true;
}

std::optional<std::string> device_id_problem(std::string_view id) {
  if (id.empty()) return "device id is empty";
  if (id.size() > kMaxDeviceIdLength) {
    return "device id is " + std::to_string(id.size()) + " characters long; the limit is " +
           std::to_string(kMaxDeviceIdLength);
  }
  for (char c : id) {
    if (!is_id_char(c)) {
      return "device id contains " + describe(c) +
             "; allowed are letters, digits, '.', '_' and '-'";
    }
  }
  if (!is_alnum(id.front())) return "device id must start with a letter or a digit";
  return std::nullopt;
}

}  // namespace onboard
