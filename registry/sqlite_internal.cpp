// Opening and recognising a registry file, and turning SQLite failures into Errors: shared by
// the broker's read-only store and the full store.
#include "registry/sqlite_internal.h"

#include <SQLiteCpp/Exception.h>
#include <sqlite3.h>

#include <filesystem>
#include <new>

#include "registry/schema.h"
#include "registry/sqlite_access.h"

namespace onboard::registry {

namespace detail {

Error sqlite_error(int code, std::string_view what) {
  const std::string prefix = std::string(what) + ": ";
  auto io = [&](std::string_view why) { return make_error(Errc::io, prefix + std::string(why)); };
  switch (code & 0xff) {  // the primary code; extended codes add detail in the high bits
    case SQLITE_FULL:
      return io("the disk is full");
    case SQLITE_IOERR:
      return io("an I/O error occurred on the registry file");
    case SQLITE_READONLY:
      return io("the registry is read-only (check the permissions of the file and its directory)");
    case SQLITE_CANTOPEN:
      return io("the registry cannot be opened (check the path and the directory's permissions)");
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return io("permission denied");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return io("the registry stayed locked by another writer for too long");
    case SQLITE_NOTADB:
      return make_error(Errc::corrupt, prefix + "the file is not an SQLite database");
    case SQLITE_CORRUPT:
      return make_error(Errc::corrupt, prefix + "the registry file is damaged");
    case SQLITE_CONSTRAINT:
      if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return make_error(Errc::conflict, prefix + "it already exists");
      }
      if (code == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return make_error(Errc::not_found, prefix + "it refers to something that does not exist");
      }
      return make_error(Errc::internal, prefix + "a registry constraint was violated");
    default:
      // sqlite3_errstr is a fixed English phrase per code: nothing from the data leaks through it.
      return make_error(Errc::internal, prefix + "unexpected SQLite error (" +
                                            (code >= 0 ? sqlite3_errstr(code) : "misuse") + ")");
  }
}

}  // namespace detail

namespace sqlite {
namespace {
constexpr int kBusyTimeoutMs = 5000;
}  // namespace

Error current_exception_error(std::string_view what) {
  try {
    throw;
  } catch (const SQLite::Exception& e) {
    const int code = e.getExtendedErrorCode() != -1 ? e.getExtendedErrorCode() : e.getErrorCode();
    return detail::sqlite_error(code, what);
  } catch (const CorruptValue& e) {
    return make_error(Errc::corrupt, std::string(what) + ": the registry holds " + e.what());
  } catch (const std::bad_alloc&) {
    return make_error(Errc::internal, std::string(what) + ": out of memory");
  } catch (...) {
    return make_error(Errc::internal, std::string(what) + ": internal error");
  }
}

Result<SQLite::Database> open_registry_file(const std::string& path, bool read_only) {
  std::error_code ignored;
  if (read_only && !std::filesystem::exists(path, ignored)) {
    return make_error(Errc::not_found, "no registry at " + path);
  }
  try {
    const int flags =
        read_only ? SQLite::OPEN_READONLY : (SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    SQLite::Database db(path, flags, kBusyTimeoutMs);
    // Recognise the file before changing anything in it: a foreign file is left untouched.
    ONBOARD_TRY(const int version, schema::stored_version(db, path));
    if (read_only) {
      if (version == 0)
        return make_error(Errc::not_found, path + " is not an initialised registry");
      if (version < schema::kCurrentVersion) {
        return make_error(Errc::corrupt, path + " has the old schema version " +
                                             std::to_string(version) +
                                             "; open it once with onboardctl to upgrade it");
      }
      return db;
    }
    if (db.execAndGet("PRAGMA journal_mode = WAL").getString() != "wal") {
      return make_error(Errc::io, "open registry " + path + ": cannot switch to WAL mode");
    }
    db.exec("PRAGMA foreign_keys = ON");
    // Deleted content (a held key once packaged) is overwritten with zeros, not just unlinked.
    db.exec("PRAGMA secure_delete = ON");
    return db;
  } catch (...) {
    return current_exception_error("open registry " + path);
  }
}

std::optional<std::string> text_or_null(const SQLite::Column& column) {
  if (column.isNull()) return std::nullopt;
  return column.getString();
}

DeviceStatus device_status_from(const std::string& text) {
  if (auto status = parse_device_status(text)) return *status;
  throw CorruptValue("an unknown device status");
}

ChangeKind change_kind_from(const std::string& text) {
  for (auto kind : {ChangeKind::device, ChangeKind::group, ChangeKind::crl}) {
    if (text == to_string(kind)) return kind;
  }
  throw CorruptValue("an unknown change kind");
}

}  // namespace sqlite
}  // namespace onboard::registry
