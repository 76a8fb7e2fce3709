#include "ops/workspace.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

#include "core/files.h"
#include "ops/operations.h"
#include "registry/open.h"

namespace onboard::ops {

Workspace::Workspace(const std::filesystem::path& d)
    : Workspace(d, registry::Location{registry::Backend::sqlite, (d / "registry.db").string()}) {}

Workspace::Workspace(const std::filesystem::path& d, registry::Location location)
    : dir(d),
      crl(d / "crl.pem"),
      root_crl(d / "root-crl.pem"),
      registry_location(std::move(location)) {}

std::optional<std::filesystem::path> Workspace::sqlite_registry() const {
  if (registry_location.backend != registry::Backend::sqlite) return std::nullopt;
  return std::filesystem::path(registry_location.target);
}

Result<std::unique_ptr<registry::Store>> open_registry(const Workspace& workspace) {
  if (const auto file = workspace.sqlite_registry()) {
    std::error_code ec;
    const auto status = std::filesystem::status(*file, ec);
    if (status.type() == std::filesystem::file_type::not_found) {
      return make_error(Errc::not_found,
                        "no registry at " + file->string() + "; run 'onboardctl init' first");
    }
    if (ec) return make_error(Errc::io, "cannot reach " + file->string() + ": " + ec.message());
    // SQLite takes an empty file for a new database, and the store would quietly initialise it: a
    // registry truncated by a crash or a full disk would come back empty instead of being
    // reported. Only `onboardctl init` creates a registry.
    if (std::filesystem::is_regular_file(status) && std::filesystem::file_size(*file, ec) == 0 &&
        !ec) {
      return make_error(Errc::corrupt,
                        file->string() +
                            " is empty (truncated?); restore it from a backup, or remove it and "
                            "run 'onboardctl init'");
    }
  }
  return registry::open_store(workspace.registry_location, registry::OpenMode::read_write);
}

Result<bool> registry_exists(const Workspace& workspace) {
  if (const auto file = workspace.sqlite_registry()) return std::filesystem::exists(*file);
  auto store = registry::open_store(workspace.registry_location, registry::OpenMode::read_only);
  if (store.ok()) return true;
  if (store.error().code == Errc::not_found) return false;
  return std::move(store).error();
}

std::string actor_name() {
  if (const char* env = std::getenv("ONBOARD_ACTOR"); env != nullptr && *env != '\0') return env;
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_name != nullptr)
    return pw->pw_name;
  return "uid:" + std::to_string(::geteuid());
}

registry::Actor make_actor() { return registry::Actor{"cli:" + actor_name(), unix_now()}; }

Result<std::uint64_t> write_crl(registry::Store& store, const ca::Authority& ca,
                                const std::filesystem::path& path, UnixTime validity) {
  return ops::rewrite_crl(store, ca, path, "", make_actor(), validity);
}

Status record_intermediate(registry::Store& store, const ca::Authority& ca) {
  if (!ca.has_intermediate()) return ok_status();
  ossl::Ptr<X509> copy(X509_dup(ca.issuer()));
  if (!copy) return make_error(Errc::internal, "out of memory copying the CA certificate");
  const auto issued = ca::make_issued(std::move(copy));
  auto existing = store.find_certificate_by_fingerprint(issued.info.sha256_fingerprint);
  if (existing.ok()) return ok_status();
  if (existing.error().code != Errc::not_found) return std::move(existing).error();
  ONBOARD_TRY(auto recorded,
              ops::record_issued(store, registry::CertificateKind::other, issued, make_actor()));
  (void)recorded;
  return ok_status();
}

Result<std::optional<std::uint64_t>> write_root_crl(registry::Store& store, const ca::Authority& ca,
                                                    const Workspace& workspace,
                                                    const Secret* passphrase) {
  if (!ca.has_intermediate()) return std::optional<std::uint64_t>();
  // A registry from before version 3 has not recorded the intermediate yet: it is recorded here
  // at the latest, so that the root's CRL can list it once it is revoked.
  ONBOARD_CHECK(record_intermediate(store, ca));
  ONBOARD_TRY(auto root_signer, ca.load_root_signer(passphrase));
  ONBOARD_TRY(std::uint64_t number,
              ops::rewrite_root_crl(store, ca, *root_signer, workspace.root_crl, make_actor()));
  return std::optional<std::uint64_t>(number);
}

}  // namespace onboard::ops
