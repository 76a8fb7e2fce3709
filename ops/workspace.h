// The data directory onboardctl works in, and the operations several commands share.
//   DIR/registry.db   the device registry (SQLite, WAL); readable by the broker's group. Unless
//                     the registry is elsewhere: a location (registry/location.h) names it
//   DIR/ca/           the CA (see ca/authority.h)
//   DIR/crl.pem       the current CRL, rewritten atomically on every revocation
//   DIR/root-crl.pem  with an issuing intermediate: the root CA's own CRL (see write_root_crl)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "ca/authority.h"
#include "core/error.h"
#include "core/secret.h"
#include "registry/location.h"
#include "registry/store.h"

namespace onboard::ops {

struct Workspace {
  // The registry in the data directory: SQLite at DIR/registry.db.
  explicit Workspace(const std::filesystem::path& dir);
  Workspace(const std::filesystem::path& dir, registry::Location registry_location);
  std::filesystem::path dir, crl, root_crl;
  registry::Location registry_location;

  // The SQLite registry's file; nullopt when the registry is in PostgreSQL.
  std::optional<std::filesystem::path> sqlite_registry() const;
};

// The registry for writing, wherever the workspace's location names it. For an SQLite file:
// Errc::not_found with a hint when `onboardctl init` has not run, Errc::corrupt for an empty file.
Result<std::unique_ptr<registry::Store>> open_registry(const Workspace& workspace);

// Whether the registry exists (`onboardctl init` made it): the SQLite file is there, or the
// PostgreSQL database holds the schema (opened read-only, never created). Errc::io when the
// database cannot be reached.
Result<bool> registry_exists(const Workspace& workspace);

// The name written into audit rows: $ONBOARD_ACTOR, else the login name of the user.
std::string actor_name();
registry::Actor make_actor();

// Builds the CRL from the registry's revoked certificates under the next CRL number and writes it
// atomically to workspace.crl (0644). Returns the CRL number.
Result<std::uint64_t> write_crl(registry::Store& store, const ca::Authority& ca,
                                const std::filesystem::path& path, UnixTime validity = 7 * 86400);

// Records the issuing intermediate's certificate (kind other, issued by the root) unless it is
// recorded already, so that it can be revoked on the root's CRL. Nothing without an intermediate.
Status record_intermediate(registry::Store& store, const ca::Authority& ca);

// With an issuing intermediate: records it (record_intermediate), then signs the root CA's CRL with
// the root key from DIR/ca/root.key (same passphrase as the CA) and writes it atomically to
// workspace.root_crl. nullopt when the CA has no intermediate (the root's CRL is then
// workspace.crl); Errc::not_found when the root key is not in the data directory (kept offline).
Result<std::optional<std::uint64_t>> write_root_crl(registry::Store& store, const ca::Authority& ca,
                                                    const Workspace& workspace,
                                                    const Secret* passphrase);

}  // namespace onboard::ops
