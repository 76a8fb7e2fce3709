// Backing up and restoring an SQLite registry while brokers and onboardctl use it.
//
// A backup is a consistent copy (one read transaction, `VACUUM INTO`), written beside its target
// and renamed into place, never over an existing file. A restore replaces the registry's content
// with a backup's in ONE write transaction of the live file, so brokers keep their connection and
// see either the old state or the restored one. What a restore never brings back, because it would
// undo a security decision taken after the backup:
// - a revocation: certificates, devices and API tokens revoked in the live registry stay revoked,
//   and a revoked certificate the backup does not know is kept (as an `other` certificate) so that
//   the CRL still lists it;
// - a held key the live registry no longer holds (it was bundled or its device revoked);
// - a one-time bundle link that was used;
// - a lower CRL number, rule id or change counter.
// Every device and group of either state is named in the change feed, so each broker re-reads them
// and disconnects whoever the restored state no longer lets in. The audit log becomes the backup's
// chain plus one `registry.restore` row naming the head hash and length of the chain it replaced.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "registry/model.h"

namespace onboard::registry {

struct RegistrySummary {
  std::int64_t change_seq = 0;
  std::int64_t devices = 0;
  std::int64_t audit_rows = 0;
  std::string audit_head;  // the hash that pins the whole audit chain
};

// Copies the registry at `registry` to `target` (mode 0600). Errc::conflict if `target` exists;
// the copy is checked (opened as a registry, audit chain verified) before it is put in place.
Result<RegistrySummary> backup_sqlite_registry(const std::filesystem::path& registry,
                                               const std::filesystem::path& target);

struct RestoreSummary {
  RegistrySummary restored;             // the registry as it is after the restore
  RegistrySummary replaced;             // as it was before
  std::int64_t revocations_kept = 0;    // certificates, devices and tokens revoked again
  std::int64_t held_keys_dropped = 0;   // held in the backup, no longer in the live registry
  std::int64_t subjects_announced = 0;  // devices and groups named in the change feed
};

// Replaces the content of the registry at `registry` with the backup at `backup`. Refused, with
// the live registry untouched: a backup that is not a current registry (Errc::corrupt, or
// Errc::not_found), whose audit chain does not verify (Errc::corrupt), or whose tables differ from
// the live registry's (Errc::corrupt).
Result<RestoreSummary> restore_sqlite_registry(const std::filesystem::path& registry,
                                               const std::filesystem::path& backup,
                                               const Actor& actor);

}  // namespace onboard::registry
