// onboardctl serve: the REST server (tools/rest_server.h) as a command.
#pragma once

#include <CLI/CLI.hpp>

#include "tools/cli.h"

namespace onboard::cli {

void add_serve_command(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace onboard::cli
