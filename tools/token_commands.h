// onboardctl token create|list|revoke: bearer tokens for the REST server.
#pragma once

#include <CLI/CLI.hpp>

#include "tools/cli.h"

namespace onboard::cli {

void add_token_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace onboard::cli
