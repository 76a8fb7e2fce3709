// Which Mosquitto the plugin runs in, as far as it matters: the per_listener_settings check reads
// Mosquitto 2.0's private plugin-identifier layout, which is trusted on 2.0.x only.
#pragma once

#include <optional>
#include <string>

namespace onboard::plugin {

struct Version {
  int major = 0, minor = 0, revision = 0;
  std::string text() const {
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(revision);
  }
};

// `headers`: the mosquitto.h the plugin was built with. `library`: mosquitto_lib_version() when
// something in the process provides it (the 2.0 broker itself does not export it). `has_2_1_api`:
// the broker exports a function 2.1 added (mosquitto_plugin_set_info). Returns nullopt when the
// layout may be read, else what was seen instead of 2.0.
inline std::optional<std::string> not_mosquitto_2_0(const Version& headers,
                                                    const std::optional<Version>& library,
                                                    bool has_2_1_api) {
  if (headers.major != 2 || headers.minor != 0) return "built against " + headers.text();
  if (library && (library->major != 2 || library->minor != 0)) return "library " + library->text();
  if (has_2_1_api) return "a broker with the 2.1 plugin API";
  return std::nullopt;
}

}  // namespace onboard::plugin
