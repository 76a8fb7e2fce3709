// The SQLite backend: statements, transactions, recognising our file, and SQLite's result codes
// as the seam's failures.
#include "registry/sqlite_internal.h"

#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <utility>

#include "registry/schema.h"
#include "registry/sqlite_access.h"

namespace onboard::registry {

namespace detail {

Error sqlite_error(int code, std::string_view what) {
  const sql::Failure failure = sqlite::sqlite_failure(code);
  return make_error(failure.errc, std::string(what) + ": " + failure.what());
}

}  // namespace detail

namespace sqlite {
namespace {

constexpr int kBusyTimeoutMs = 5000;

// Runs `f`, turning SQLite's exceptions into the seam's.
template <class F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const SQLite::Exception& e) {
    const int code = e.getExtendedErrorCode() != -1 ? e.getExtendedErrorCode() : e.getErrorCode();
    throw sqlite_failure(code);
  }
}

class SqliteCursor final : public sql::Cursor {
 public:
  SqliteCursor(SQLite::Database& db, std::string_view sql)
      : statement_(guarded([&] { return SQLite::Statement(db, std::string(sql)); })) {}

  void bind(std::vector<sql::Value> values) override {
    guarded([&] {
      statement_.reset();
      statement_.clearBindings();
      int index = 0;
      for (const auto& v : values) {
        ++index;
        if (v.null) {
          statement_.bind(index);
        } else if (v.type == sql::Value::Type::integer) {
          statement_.bind(index, v.integer);
        } else {
          // SQLITE_TRANSIENT: SQLite copies the text, so `values` may go.
          statement_.bind(index, v.text);
        }
      }
    });
  }

  bool next() override {
    return guarded([&] { return statement_.executeStep(); });
  }

  std::int64_t exec() override {
    return guarded([&]() -> std::int64_t {
      const int changed = statement_.exec();
      statement_.reset();
      return changed;
    });
  }

  void reset() override {
    guarded([&] { statement_.reset(); });
  }

  bool is_null(int column) const override {
    return guarded([&] { return statement_.getColumn(column).isNull(); });
  }
  std::int64_t integer(int column) const override {
    return guarded([&] { return statement_.getColumn(column).getInt64(); });
  }
  std::string_view text(int column) const override {
    return guarded([&] {
      const SQLite::Column c = statement_.getColumn(column);
      return std::string_view(c.getText(), static_cast<std::size_t>(c.getBytes()));
    });
  }

 private:
  // mutable: SQLiteCpp's column getters are not const, reading a column changes nothing.
  mutable SQLite::Statement statement_;
};

class SqliteDatabase final : public sql::Database {
 public:
  SqliteDatabase(SQLite::Database db, std::string path)
      : db_(std::move(db)), path_(std::move(path)) {}

  SQLite::Database& raw() noexcept { return db_; }

  std::unique_ptr<sql::Cursor> prepare(std::string_view sql) override {
    return std::make_unique<SqliteCursor>(db_, sql);
  }
  void exec(std::string_view sql) override {
    guarded([&] { db_.exec(std::string(sql)); });
  }

  // IMMEDIATE takes the write lock now, waiting up to the busy timeout behind another writer: a
  // deferred transaction that reads first could not upgrade to a write while another writer
  // commits, and would fail with SQLITE_BUSY without the busy handler ever waiting.
  void begin(sql::Transaction kind) override {
    exec(kind == sql::Transaction::write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
  }
  void commit() override { exec("COMMIT"); }
  void rollback() noexcept override {
    if (sqlite3_get_autocommit(db_.getHandle()) != 0) return;  // no transaction open
    try {
      db_.exec("ROLLBACK");
    } catch (...) {
      // A failed ROLLBACK leaves nothing to do: SQLite has rolled back already or will on close.
    }
  }

  // The erased rows' old page images still sit in the WAL until a checkpoint copies the zeroed
  // pages back and the log is truncated. A busy reader only delays it.
  void scrub() noexcept override {
    try {
      db_.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (...) {
    }
  }

  int schema_version() override {
    auto version = guarded([&] { return schema::stored_version(db_, path_); });
    if (!version.ok()) throw sql::Failure(version.error().code, version.error().message);
    return version.value();
  }
  void migrate(int from, UnixTime now) override {
    guarded([&] { schema::migrate(db_, from, now); });
  }

 private:
  SQLite::Database db_;
  std::string path_;
};

// Switching to WAL needs the file to itself for a moment, and SQLite answers SQLITE_BUSY at once,
// without its busy handler, while another connection is creating the same registry: wait and
// retry for as long as the busy timeout would.
std::string switch_to_wal(SQLite::Database& db) {
  constexpr int kPauseMs = 10;
  for (int waited = 0;; waited += kPauseMs) {
    try {
      return db.execAndGet("PRAGMA journal_mode = WAL").getString();
    } catch (const SQLite::Exception& e) {
      const int code = e.getErrorCode() & 0xff;
      if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) || waited >= kBusyTimeoutMs) {
        throw sqlite_failure(e.getExtendedErrorCode() != -1 ? e.getExtendedErrorCode()
                                                            : e.getErrorCode());
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kPauseMs));
  }
}

}  // namespace

sql::Failure sqlite_failure(int code) {
  using sql::Failure;
  switch (code & 0xff) {  // the primary code; extended codes add detail in the high bits
    case SQLITE_FULL:
      return Failure(Errc::io, "the disk is full");
    case SQLITE_IOERR:
      // Opening a registry on a full disk fails here, growing its -shm file (ENOSPC or a quota).
      if (code == SQLITE_IOERR_SHMSIZE) {
        return Failure(Errc::io,
                       "the disk is full (the registry's shared-memory file -shm cannot grow)");
      }
      return Failure(Errc::io, "an I/O error occurred on the registry file");
    case SQLITE_READONLY:
      return Failure(Errc::io,
                     "the registry is read-only (check the permissions of the file and its "
                     "directory)");
    case SQLITE_CANTOPEN:
      return Failure(Errc::io,
                     "the registry cannot be opened (check the path and the directory's "
                     "permissions)");
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Failure(Errc::io, "permission denied");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Failure(Errc::io, "the registry stayed locked by another writer for too long");
    case SQLITE_NOTADB:
      return Failure(Errc::corrupt, "the file is not an SQLite database");
    case SQLITE_CORRUPT:
      return Failure(Errc::corrupt, "the registry file is damaged");
    case SQLITE_CONSTRAINT:
      if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return Failure(Errc::conflict, "it already exists");
      }
      if (code == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return Failure(Errc::not_found, "it refers to something that does not exist");
      }
      return Failure(Errc::internal, "a registry constraint was violated");
    default:
      // sqlite3_errstr is a fixed English phrase per code: nothing from the data leaks through it.
      return Failure(Errc::internal, std::string("unexpected SQLite error (") +
                                         (code >= 0 ? sqlite3_errstr(code) : "misuse") + ")");
  }
}

SQLite::Database& raw_database(sql::Database& db) {
  if (auto* sqlite = dynamic_cast<SqliteDatabase*>(&db)) return sqlite->raw();
  throw sql::Failure(Errc::internal, "not an SQLite registry");
}

Result<std::unique_ptr<sql::Database>> open_registry_file(const std::string& path, bool read_only) {
  std::error_code ignored;
  if (read_only && !std::filesystem::exists(path, ignored)) {
    return make_error(Errc::not_found, "no registry at " + path);
  }
  try {
    const int flags =
        read_only ? SQLite::OPEN_READONLY : (SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    auto db = std::make_unique<SqliteDatabase>(
        guarded([&] { return SQLite::Database(path, flags, kBusyTimeoutMs); }), path);
    // Recognise the file before changing anything in it: a foreign file is left untouched.
    ONBOARD_TRY(const int version,
                guarded([&] { return schema::stored_version(db->raw(), path); }));
    if (read_only) {
      if (version == 0)
        return make_error(Errc::not_found, path + " is not an initialised registry");
      if (version < schema::kCurrentVersion) {
        return make_error(Errc::corrupt, path + " has the old schema version " +
                                             std::to_string(version) +
                                             "; open it once with onboardctl to upgrade it");
      }
      return std::unique_ptr<sql::Database>(std::move(db));
    }
    if (switch_to_wal(db->raw()) != "wal") {
      return make_error(Errc::io, "open registry " + path + ": cannot switch to WAL mode");
    }
    db->exec("PRAGMA foreign_keys = ON");
    // Deleted content (a held key once packaged) is overwritten with zeros, not just unlinked.
    db->exec("PRAGMA secure_delete = ON");
    return std::unique_ptr<sql::Database>(std::move(db));
  } catch (...) {
    return sql::current_exception_error("open registry " + path);
  }
}

}  // namespace sqlite
}  // namespace onboard::registry
