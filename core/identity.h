// Device identity rules shared by the CA, the registry and the broker plugin.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace onboard {

inline constexpr std::size_t kMaxDeviceIdLength = 64;

// A device id is [A-Za-z0-9][A-Za-z0-9._-]{0,63}: it becomes a certificate CN, an MQTT client id
// and username, and is substituted into topic patterns, so it can never hold / + # $, spaces or
// NUL.
bool is_valid_device_id(std::string_view id) noexcept;

// Why `id` is not a valid device id, in words for the operator; nullopt when it is valid.
std::optional<std::string> device_id_problem(std::string_view id);

}  // namespace onboard
