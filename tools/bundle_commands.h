// onboardctl bundle (create, link, show) and batch (register, show): credential delivery.
#pragma once

#include <CLI/CLI.hpp>

#include "tools/cli.h"

namespace onboard::cli {

// Where `bundle link` points when neither --base-url nor $ONBOARD_BASE_URL says otherwise: the
// default address of `onboardctl serve`.
inline constexpr const char* kDefaultBaseUrl = "http://127.0.0.1:8443";

void add_bundle_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace onboard::cli
