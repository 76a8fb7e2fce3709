// The SQLite registry's schema: versions, the migrations between them, and recognising our file.
// Migrations live in code, one function per version step, and run inside the caller's write
// transaction so that a half-migrated file never exists.
#pragma once

#include <SQLiteCpp/Database.h>

#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/time.h"
#include "registry/sql.h"

namespace onboard::registry::schema {

inline constexpr int kCurrentVersion = sql::kSchemaVersion;
// PRAGMA application_id of every registry file ("ONBD"): tells our file from any other SQLite DB.
inline constexpr std::int32_t kApplicationId = 0x4F4E4244;

// The schema version of an open file: 0 for an empty (new) file; Errc::corrupt for a file that is
// not ours, damaged, or newer than this build. May throw SQLite::Exception (e.g. SQLITE_NOTADB).
Result<int> stored_version(SQLite::Database& db, const std::string& path);

// Brings the schema from `from_version` to `to_version` (kCurrentVersion but in tests, which make
// files of older versions to test upgrades with), seeding a new file with the default group and
// its rule at time `now`. Throws SQLite::Exception; the caller owns the transaction.
void migrate(SQLite::Database& db, int from_version, UnixTime now,
             int to_version = kCurrentVersion);

}  // namespace onboard::registry::schema
