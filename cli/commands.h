// onboardctl's command groups, one file each; every add_* registers its subcommands on `app`.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/cli.h"

namespace onboard::cli {

void add_init_command(CLI::App& app, const GlobalOptions& global, int& exit_code);       // init
void add_device_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);    // device
void add_cert_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);      // cert
void add_acl_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);       // acl
void add_group_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);     // group
void add_crl_command(CLI::App& app, const GlobalOptions& global, int& exit_code);        // crl
void add_audit_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);     // audit
void add_ca_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);        // ca
void add_bundle_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);    // bundle
void add_claim_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);     // claim
void add_batch_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);     // batch
void add_token_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);     // token
void add_registry_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);  // registry
void add_serve_command(CLI::App& app, const GlobalOptions& global, int& exit_code);      // serve

// All of the above, in the order --help lists them.
void add_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace onboard::cli
