// Copying a whole registry to another location: SQLite to PostgreSQL, PostgreSQL to SQLite, or
// SQLite to SQLite, so that an operator can move a registry between backends
// (`onboardctl registry copy --to LOCATION`).
//
// The copy is exact: every table's rows with their keys (certificates in their order, rule and
// token ids), so that the audit chain, the change seq, the CRL numbers and every id are the
// source's, and the id counters go on past the source's highest id (never reusing a removed rule's
// id). The source is only read, in one read transaction: a consistent copy while others write.
// The target must be empty; its schema is made and filled in ONE write transaction, checked before
// it commits, so that a failure anywhere leaves the target as it was (a new SQLite file is
// removed again).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/time.h"
#include "registry/location.h"

namespace onboard::registry {

struct CopySummary {
  std::int64_t devices = 0;
  std::int64_t certificates = 0;
  std::int64_t audit_rows = 0;
  std::int64_t change_seq = 0;
  std::string audit_head;  // the hash that pins the whole audit chain
  // Every table with its row count, in the order copied.
  std::vector<std::pair<std::string, std::int64_t>> rows;
};

// Copies the registry at `from` (which must exist, at the current schema version) to `to`.
// Errc::conflict, changing nothing, when `to` is an SQLite path that exists or a PostgreSQL
// database that holds a registry (Errc::corrupt when it holds other tables); Errc::corrupt when the
// copy does not check out (row counts, the audit chain, the change seq or the audit head differ
// from the source's: a tampered source's chain fails here); the errors of opening either side.
Result<CopySummary> copy_registry(const Location& from, const Location& to, UnixTime now);

// The tables copy_registry copies, parents before children, each with its columns (certificates'
// "rowid" is SQLite's implicit rowid, a real column in PostgreSQL). The one list of what a copy
// holds: a test compares it with the schema of each backend.
struct CopiedTable {
  std::string_view name;
  std::vector<std::string_view> columns;
};
std::vector<CopiedTable> copied_tables();

}  // namespace onboard::registry
