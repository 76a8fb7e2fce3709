// onboardctl ca ...: the certificate authority's commands.
#pragma once

#include <CLI/CLI.hpp>

#include "tools/cli.h"

namespace onboard::cli {

void add_ca_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace onboard::cli
