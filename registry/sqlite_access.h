// The SQLite registry in the broker's role: opened read-only, it answers AccessStore::read_access
// and nothing else, so the plugin links neither the registry's writers nor issuance, bundles or
// tokens. The file is opened as by open_sqlite_store (sqlite_store.h) in OpenMode::read_only.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "core/error.h"
#include "registry/access_store.h"

namespace onboard::registry {

// Never writes and never migrates: the file must be a current registry. Errc::not_found when
// there is no registry at `path` (or an empty file); Errc::corrupt for a file that is not an SQLite
// database, not ours, or of an old, unknown or newer schema version; Errc::io when the file cannot
// be opened.
Result<std::unique_ptr<AccessStore>> open_sqlite_access(const std::filesystem::path& path);

namespace detail {
// The Error for an SQLite result code (primary or extended) met while doing `what`. Exposed for
// the tests: disk full and I/O errors are hard to provoke on demand.
Error sqlite_error(int code, std::string_view what);
}  // namespace detail

}  // namespace onboard::registry
