#include "cli/cli.h"

#include <cstdlib>
#include <iostream>

#include "core/files.h"
#include "ops/credentials.h"
#include "registry/location.h"

namespace onboard::cli {

int exit_code_for(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_input:
      return kExitInvalid;
    case Errc::not_found:
      return kExitNotFound;
    case Errc::conflict:
      return kExitConflict;
    case Errc::io:
      return kExitIo;
    case Errc::bad_passphrase:
      return kExitPassphrase;
    case Errc::corrupt:
      return kExitCorrupt;
    case Errc::crypto:
    case Errc::internal:
      return kExitInternal;
  }
  return kExitInternal;
}

int report(const Error& error) {
  std::cerr << "onboardctl: " << error.message << '\n';
  return exit_code_for(error.code);
}

std::filesystem::path data_dir(const GlobalOptions& global) {
  if (!global.data_dir.empty()) return global.data_dir;
  if (const char* env = std::getenv("ONBOARD_DATA_DIR"); env != nullptr && *env != '\0') return env;
  return kDefaultDataDir;
}

void add_registry_option(CLI::App& app, GlobalOptions& global) {
  app.add_option("--registry", global.registry,
                 "Where the registry is: an absolute path to an SQLite file (or "
                 "sqlite:///ABS/PATH), a postgresql:// URI or a libpq keyword string (host=... "
                 "dbname=...), never with a password (libpq reads it from PGPASSFILE, ~/.pgpass "
                 "or a service file). Default $ONBOARD_REGISTRY, else DATA_DIR/registry.db")
      ->envname("ONBOARD_REGISTRY")
      ->type_name("LOCATION")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            auto location = registry::parse_location(text);
            return location.ok() ? std::string() : location.error().message;
          },
          ""));
}

Result<ops::Workspace> workspace(const GlobalOptions& global) {
  const auto dir = data_dir(global);
  if (global.registry.empty()) return ops::Workspace(dir);
  ONBOARD_TRY(auto location, registry::parse_location(global.registry));
  return ops::Workspace(dir, std::move(location));
}

void PassphraseSource::add_to(CLI::App& command, const std::string& what) {
  // A CA key in a PKCS#11 token has no passphrase: the same options carry the token's PIN.
  const std::string whose = stem == "passphrase" ? what + " (or the user PIN of its token)" : what;
  auto* env_opt =
      command.add_option("--" + stem + "-env", env,
                         "Name of an environment variable holding the passphrase of " + whose);
  auto* file_opt = command.add_option("--" + stem + "-file", file,
                                      "File holding the passphrase of " + whose + " (first line)");
  env_opt->excludes(file_opt);
}

Result<std::optional<Secret>> PassphraseSource::read() const {
  if (!env.empty()) {
    ONBOARD_TRY(Secret secret, read_secret_env(env));
    return std::optional<Secret>(std::move(secret));
  }
  if (!file.empty()) {
    ONBOARD_TRY(Secret secret, read_secret_file(file));
    return std::optional<Secret>(std::move(secret));
  }
  return std::optional<Secret>();
}

Result<ca::Authority> open_signing_ca(const std::filesystem::path& data_dir,
                                      const PassphraseSource& source) {
  ONBOARD_TRY(auto passphrase, source.read());
  return ops::open_signing_ca(data_dir, passphrase ? &*passphrase : nullptr);
}

int run_action(const Action& action) noexcept {
  try {
    auto result = action();
    if (!result.ok()) return report(result.error());
    return result.value();
  } catch (const std::exception& e) {
    std::cerr << "onboardctl: internal error: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "onboardctl: internal error\n";
  }
  return kExitInternal;
}

}  // namespace onboard::cli
