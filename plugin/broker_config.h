// A look at the broker's own configuration at plugin init, to refuse settings under which the
// plugin could not do its job: `use_identity_as_username true` or `use_subject_as_username true`
// on a listener make Mosquitto 2.0 skip every plugin's BASIC_AUTH there, so revoked and unknown
// certificates would connect. The topic check refuses such clients anyway (accepted_clients.h);
// this only turns a silent misconfiguration into a clear refusal to start.
//
// Best effort by design: Mosquitto has no API for its configuration, so the files named by `-c`
// on the broker's command line are read again the way Mosquitto reads them (one setting a line,
// words separated by spaces, `include_dir` in the main file only, its `*.conf` files in name
// order). Anything that cannot be read (a pipe, a file the broker's user may not read, a file over
// 1 MiB) is an error the caller reports and lets pass.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace onboard::plugin {

// The files given with -c / --config-file in a NUL-separated command line (/proc/self/cmdline).
std::vector<std::string> config_files_from_cmdline(std::string_view cmdline);

struct IdentitySetting {
  std::string setting;  // use_identity_as_username or use_subject_as_username
  std::string file;     // where it is set to true
};

// The first listener that ends up with either setting true, or nullopt when none does. A listener
// section runs from a `listener` line to the next one; the settings before the first one belong to
// Mosquitto's default listener, which every later listener also starts from.
Result<std::optional<IdentitySetting>> find_identity_setting(
    const std::vector<std::string>& config_files);

}  // namespace onboard::plugin
