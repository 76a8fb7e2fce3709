// The data directory onboardctl works in, and the operations several commands share.
//   DIR/registry.db   the device registry (SQLite, WAL); readable by the broker's group
//   DIR/ca/           the CA (see ca/authority.h)
//   DIR/crl.pem       the current CRL, rewritten atomically on every revocation
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "ca/authority.h"
#include "registry/store.h"
#include "tools/cli.h"

namespace onboard::cli {

struct Workspace {
  explicit Workspace(const std::filesystem::path& dir);
  std::filesystem::path dir, registry, crl;
};

// Registers `cmd`'s action: run `body` on the workspace --data-dir names, and map its errors and
// exceptions to the exit code.
template <class F>
void on_run(CLI::App* cmd, const GlobalOptions& global, int& exit_code, F body) {
  cmd->callback([&global, &exit_code, body] {
    exit_code = run_action([&]() -> Result<int> { return body(Workspace(data_dir(global))); });
  });
}

// The registry for writing; Errc::not_found with a hint when `onboardctl init` has not run.
Result<std::unique_ptr<registry::Store>> open_registry(const Workspace& workspace);

// The name written into audit rows: $ONBOARD_ACTOR, else the login name of the user.
std::string actor_name();
registry::Actor make_actor();

// Builds the CRL from the registry's revoked certificates under the next CRL number and writes it
// atomically to workspace.crl (0644). Returns the CRL number.
Result<std::uint64_t> write_crl(registry::Store& store, const Authority& ca,
                                const std::filesystem::path& path, UnixTime validity = 7 * 86400);

}  // namespace onboard::cli
