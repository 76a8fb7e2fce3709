// What every onboardctl command shares: exit codes, error reporting, the data directory and
// secrets.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "core/error.h"
#include "core/secret.h"
#include "ops/workspace.h"

namespace onboard::cli {

// Exit codes, documented in the README; scripts rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,    // a bug, or OpenSSL/SQLite failing where it should not
  kExitUsage = 2,       // bad command line
  kExitInvalid = 3,     // bad input: a malformed CSR, an invalid device id, a weak key...
  kExitNotFound = 4,    // no such CA, device, rule...
  kExitConflict = 5,    // exists already, or the state forbids it
  kExitIo = 6,          // a file or directory could not be read or written
  kExitPassphrase = 7,  // the CA key could not be decrypted (or its token refused the PIN)
  kExitCorrupt = 8,     // stored data is damaged or of an unknown version
};

int exit_code_for(Errc code) noexcept;

// Prints "onboardctl: <message>" on stderr and returns the matching exit code.
int report(const Error& error);

// Global options, parsed before any command runs.
struct GlobalOptions {
  std::string data_dir;
  std::string registry;  // a location (registry/location.h); empty: DATA_DIR/registry.db
};

// The data directory: --data-dir, else $ONBOARD_DATA_DIR, else /var/lib/mosquitto-onboard.
std::filesystem::path data_dir(const GlobalOptions& global);
inline constexpr const char* kDefaultDataDir = "/var/lib/mosquitto-onboard";

// Adds --registry LOCATION (also $ONBOARD_REGISTRY; the option wins). A location that does not
// parse is a usage error (exit 2), reported without repeating it: it may hold a password.
void add_registry_option(CLI::App& app, GlobalOptions& global);

// The data directory with the registry where --registry / $ONBOARD_REGISTRY names it, else in it.
Result<ops::Workspace> workspace(const GlobalOptions& global);

// --passphrase-env VAR / --passphrase-file FILE: where the CA key's passphrase comes from. Never
// from argv, where every user of the machine can read it.
// Another secret read the same way names its own options: PassphraseSource{"hold-passphrase"}
// gives --hold-passphrase-env / --hold-passphrase-file.
struct PassphraseSource {
  PassphraseSource() = default;
  explicit PassphraseSource(std::string option_stem) : stem(std::move(option_stem)) {}
  std::string stem = "passphrase";
  std::string env;
  std::string file;
  void add_to(CLI::App& command, const std::string& what);
  // nullopt when neither option was given.
  Result<std::optional<Secret>> read() const;
};

// A command's action: returns an exit code; an Error is reported by the caller.
using Action = std::function<Result<int>()>;
// Wraps an action so that errors and exceptions become a message and an exit code.
int run_action(const Action& action) noexcept;

// Registers `cmd`'s action: run `body` on the workspace --data-dir names, and map its errors and
// exceptions to the exit code.
template <class F>
void on_run(CLI::App* cmd, const GlobalOptions& global, int& exit_code, F body) {
  cmd->callback([&global, &exit_code, body] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_TRY(auto ws, workspace(global));
      return body(ws);
    });
  });
}

// The CA in `data_dir` with its signing key loaded (the passphrase from --passphrase-env/-file).
Result<ca::Authority> open_signing_ca(const std::filesystem::path& data_dir,
                                      const PassphraseSource& source);

}  // namespace onboard::cli
