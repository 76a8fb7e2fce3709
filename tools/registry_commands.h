// onboardctl init, device, cert, acl, group, crl and audit: the registry's commands.
#pragma once

#include <CLI/CLI.hpp>

#include "tools/cli.h"

namespace onboard::cli {

void add_registry_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace onboard::cli
