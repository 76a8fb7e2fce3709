#include "tools/workspace.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

#include "ca/files.h"
#include "registry/sqlite_store.h"

namespace onboard::cli {

Workspace::Workspace(const std::filesystem::path& d)
    : dir(d), registry(d / "registry.db"), crl(d / "crl.pem") {}

Result<std::unique_ptr<registry::Store>> open_registry(const Workspace& workspace) {
  if (!std::filesystem::exists(workspace.registry)) {
    return make_error(Errc::not_found, "no registry in " + workspace.dir.string() + "; run 'onboardctl init' first");
  }
  return registry::open_sqlite_store(workspace.registry, registry::OpenMode::read_write);
}

std::string actor_name() {
  if (const char* env = std::getenv("ONBOARD_ACTOR"); env != nullptr && *env != '\0') return env;
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_name != nullptr) return pw->pw_name;
  return "uid:" + std::to_string(::geteuid());
}

registry::Actor make_actor() { return registry::Actor{"cli:" + actor_name(), unix_now()}; }

Result<std::uint64_t> write_crl(registry::Store& store, const Authority& ca, const std::filesystem::path& path) {
  ONBOARD_TRY(auto revoked, store.revoked_certificates());
  ONBOARD_TRY(std::uint64_t number, store.next_crl_number(make_actor()));
  const UnixTime now = unix_now();
  // A week ahead: relying parties that cache the CRL must fetch a new one at least that often.
  CrlParams params{number, now, now + 7 * 86400};
  ONBOARD_TRY(auto crl, build_crl(ca.issuer(), *ca.signer(), revoked, params));
  ONBOARD_CHECK(write_file_atomic(path, crl_to_pem(crl.get()), 0644, Overwrite::replace));
  return number;
}

}  // namespace onboard::cli
