// The SQLite backend of the registry's SQL seam (sql.h): opening and recognising the file, its
// transactions, and SQLite's failures as the seam's. Shared by the broker's read-only store
// (sqlite_access.h) and the full store (sqlite_store.h). Internal to registry/.
#pragma once

#include <SQLiteCpp/Database.h>

#include <memory>
#include <string>

#include "core/error.h"
#include "registry/sql.h"

namespace onboard::registry::sqlite {

// Opens the file at `path` and recognises it before changing anything in it (a foreign file is
// left untouched). read_only: the file must exist and be a current registry; nothing is written.
// Otherwise the file is created if needed and switched to WAL mode with foreign keys and secure
// delete on; the caller runs the migrations. Errors as open_sqlite_store's.
// A writing open also keeps the -wal and -shm files when it closes (persist-WAL), makes sure both
// exist, and gives them the registry file's owner, group and mode, taking group and other write
// access away from all three (the broker's group may read, never write); Errc::io, naming the fix,
// when a file stays writable by another account because only root could change it.
Result<std::unique_ptr<sql::Database>> open_registry_file(const std::string& path, bool read_only);

// As open_registry_file read-only, for a reader that may lack write access to the file, its
// -wal and -shm files and their directory (the broker): opened as a URI with mode=ro.
// It needs both side files to exist and be readable; Errc::io naming the missing or unreadable
// one otherwise.
Result<std::unique_ptr<sql::Database>> open_registry_reader(const std::string& path);

// The open file behind a Database that open_registry_file returned (backup and restore use
// SQLite's own statements on it). Throws Failure for a Database of another backend.
SQLite::Database& raw_database(sql::Database& db);

// The seam's Failure for an SQLite result code (primary or extended).
sql::Failure sqlite_failure(int code);

}  // namespace onboard::registry::sqlite
