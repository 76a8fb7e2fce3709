#include "cli/commands.h"

namespace onboard::cli {

void add_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  add_init_command(app, global, exit_code);
  add_device_commands(app, global, exit_code);
  add_cert_commands(app, global, exit_code);
  add_acl_commands(app, global, exit_code);
  add_group_commands(app, global, exit_code);
  add_crl_command(app, global, exit_code);
  add_audit_commands(app, global, exit_code);
  add_ca_commands(app, global, exit_code);
  add_bundle_commands(app, global, exit_code);
  add_claim_commands(app, global, exit_code);
  add_batch_commands(app, global, exit_code);
  add_token_commands(app, global, exit_code);
  add_registry_commands(app, global, exit_code);
  add_serve_command(app, global, exit_code);
}

}  // namespace onboard::cli
