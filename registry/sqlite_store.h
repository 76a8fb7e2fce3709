// The Store on an SQLite file, every role of it: open_store (open.h) for an SQLite location. The
// broker opens the same file in the access role only (sqlite_access.h). The store itself is the
// one written over the SQL seam (store_internal.h); the SQLite backend is sqlite_internal.h.
//
// One file, WAL mode (a reader never blocks the writer, and sees a whole transaction or none of
// it), foreign keys on, busy timeout 5 s so that two writing processes queue instead of failing.
// Writes take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that reads first
// could not upgrade to a write while another writer commits, and would fail with SQLITE_BUSY
// without the busy handler ever waiting.
#pragma once

#include <filesystem>
#include <memory>

#include "core/error.h"
#include "registry/open.h"
#include "registry/sqlite_access.h"
#include "registry/store.h"

namespace onboard::registry {

// Errc::not_found when read_only and there is no registry at `path`; Errc::corrupt for a file
// that is not an SQLite database, not ours, or of an unknown or newer schema version; Errc::io
// when the file or its directory cannot be opened or written.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& path, OpenMode mode);

}  // namespace onboard::registry
