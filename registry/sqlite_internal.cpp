// The SQLite backend: statements, transactions, recognising our file, and SQLite's result codes
// as the seam's failures.
#include "registry/sqlite_internal.h"

#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>
#include <utility>

#include "core/files.h"
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
  // A read that met a writer in the middle of rebuilding the WAL index: gone at the next read.
  if (code == SQLITE_READONLY_RECOVERY || code == SQLITE_BUSY_RECOVERY ||
      code == SQLITE_READONLY_CANTINIT) {
    return Failure(Errc::io, "a writer is recovering the registry's WAL index (try again)");
  }
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

namespace {

// read_only: onboardctl reading (it may create the side files); reader: the broker, which may not.
enum class OpenAccess { read_write, read_only, reader };

constexpr std::array<const char*, 2> kSideFiles{"-wal", "-shm"};

// The path as an SQLite URI (file:...), every byte but the unreserved ones and '/'
// percent-encoded, so that '?', '#' or '%' in a directory name stay part of the path.
std::string file_uri(const std::string& path, const char* query) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string uri = "file:";
  for (const char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
      uri += ch;
    } else {
      uri += '%';
      uri += kHex[c >> 4];
      uri += kHex[c & 0xf];
    }
  }
  return uri + "?" + query;
}

Error io_failure(const std::string& what, const std::string& path) {
  return make_error(Errc::io, what + " " + path + ": " + std::strerror(errno));
}

// The broker reads the registry as a member of the file's group, without write access to the
// file, its -wal and -shm files or the directory: only the kernel's permissions keep a
// compromised broker from rewriting who may do what. SQLite creates the side files with the
// registry file's mode and (as root) its owner; an installation made before this rule (registry
// 0660, side files often created by the broker's own user) is tightened here, by the owner of
// the registry or root. What cannot be tightened is refused rather than silently left writable.
Status settle_side_files(const std::string& path) {
  struct stat db {};
  if (::stat(path.c_str(), &db) != 0) return io_failure("cannot inspect", path);
  const uid_t me = ::geteuid();
  const bool may_change = me == 0 || db.st_uid == me;
  const mode_t mode = db.st_mode & 0777 & ~mode_t{022};
  if ((db.st_mode & 022) != 0) {
    if (!may_change) {
      return make_error(Errc::io, path + " is writable by its group or others, and only its " +
                                      "owner or root can change that: run 'chmod g-w,o-w " + path +
                                      "' as either");
    }
    if (::chmod(path.c_str(), mode) != 0) return io_failure("cannot set the mode of", path);
  }
  // Write access to the directory would let the broker's group replace the side files with its
  // own (the registry's group is the broker's). Tightened: a setgid directory of the registry's
  // group (what init made, 2770 before) and one writable by everyone. A sticky directory (/tmp)
  // keeps others' files safe and is never changed.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  struct stat d {};
  if (::stat(dir.c_str(), &d) != 0) return io_failure("cannot inspect", dir);
  const bool sticky = (d.st_mode & S_ISVTX) != 0;
  const bool group_writes =
      (d.st_mode & (S_ISGID | S_IWGRP)) == (S_ISGID | S_IWGRP) && d.st_gid == db.st_gid;
  const bool others_write = (d.st_mode & S_IWOTH) != 0;
  if (!sticky && (group_writes || others_write)) {
    if (!(me == 0 || d.st_uid == me)) {
      return make_error(Errc::io, "the registry's directory " + dir +
                                      " is writable by its group or others, and only its owner or "
                                      "root can change that: run 'chmod g-w,o-w " +
                                      dir + "' as either");
    }
    if (::chmod(dir.c_str(), d.st_mode & 07777 & ~mode_t{022}) != 0) {
      return io_failure("cannot set the mode of", dir);
    }
  }
  for (const char* suffix : kSideFiles) {
    const std::string side = path + suffix;
    // Inspected and changed through one descriptor, never by name: a group that could write the
    // directory until now could swap the name for a link to another file between a check and a
    // chown or chmod by name (both follow links), and root would then give that file away.
    // O_PATH, not O_RDONLY: closing any other descriptor of a file drops every POSIX lock this
    // process holds on it (SQLite's on -shm among them, and concurrent writers then fail with
    // "locking protocol"); Linux skips that for O_PATH descriptors (filp_close/filp_flush call
    // locks_remove_posix only without FMODE_PATH). O_NOFOLLOW with O_PATH opens a link itself,
    // which fstat then shows is no regular file.
    const UniqueFd fd(::open(side.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) {
      if (errno == ENOENT) continue;  // SQLite creates it at the first read
      return io_failure("cannot inspect", side);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return io_failure("cannot inspect", side);
    // A second name would be another file's, linked in (a hard link to a victim, say).
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
      return make_error(Errc::io, side + " is not a regular file with one name");
    }
    if (st.st_uid != db.st_uid || st.st_gid != db.st_gid) {
      // Only root gives a file away; the owner may still move it into one of its own groups.
      const auto chown_pinned = [&](uid_t uid, gid_t gid) {
        return ::fchownat(fd.get(), "", uid, gid, AT_EMPTY_PATH) == 0;
      };
      const bool moved = me == 0 ? chown_pinned(db.st_uid, db.st_gid)
                         : st.st_uid == me && st.st_uid == db.st_uid
                             ? chown_pinned(static_cast<uid_t>(-1), db.st_gid)
                             : false;
      if (!moved) {
        return make_error(Errc::io, side + " belongs to another user or group than " + path +
                                        " (left by an older installation, whose broker created "
                                        "it): as root, give it the registry file's owner and "
                                        "group (chown --reference=" +
                                        path + " " + side + ")");
      }
    }
    // fchmod refuses an O_PATH descriptor (EBADF) and glibc 2.36's fchmodat refuses
    // AT_EMPTY_PATH (EINVAL); chmod of /proc/self/fd/N reaches the inode the descriptor pins.
    if ((st.st_mode & 0777) != mode) {
      const std::string pinned = "/proc/self/fd/" + std::to_string(fd.get());
      if (::chmod(pinned.c_str(), mode) != 0) {
        if (errno == ENOENT) {
          return make_error(Errc::io, "cannot set the mode of " + side + ": /proc is not mounted");
        }
        return io_failure("cannot set the mode of", side);
      }
    }
  }
  return ok_status();
}

// What keeps a reader without write access out, when SQLite says only that it cannot open the
// database: the side files it cannot create, or cannot read.
std::optional<std::string> missing_side_files(const std::string& path) {
  std::string problems;
  for (const char* suffix : kSideFiles) {
    const std::string side = path + suffix;
    if (::access(side.c_str(), R_OK) == 0) continue;
    const int error = errno;
    if (!problems.empty()) problems += " and ";
    problems += side + (error == ENOENT ? " is missing" : " is not readable by this user");
  }
  if (problems.empty()) return std::nullopt;
  return problems;
}

Result<std::unique_ptr<sql::Database>> open_file(const std::string& path, OpenAccess access) {
  std::error_code ignored;
  if (access != OpenAccess::read_write && !std::filesystem::exists(path, ignored)) {
    return make_error(Errc::not_found, "no registry at " + path);
  }
  try {
    std::unique_ptr<SqliteDatabase> db;
    if (access == OpenAccess::reader) {
      // mode=ro: never write. Not readonly_shm: SQLite shares one -shm mapping per file among
      // the connections of a process, and a read-only one would refuse a writer in the same
      // process; without write access the -shm file is opened read-only anyway. Never immutable
      // or nolock: the reader must see every commit, and not read a page while it is rewritten.
      db = std::make_unique<SqliteDatabase>(
          guarded([&] {
            return SQLite::Database(file_uri(path, "mode=ro"),
                                    SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, kBusyTimeoutMs);
          }),
          path);
    } else {
      const int flags = access == OpenAccess::read_only
                            ? SQLite::OPEN_READONLY
                            : (SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      db = std::make_unique<SqliteDatabase>(
          guarded([&] { return SQLite::Database(path, flags, kBusyTimeoutMs); }), path);
    }
    if (access == OpenAccess::read_write) {
      // Without this the last connection to close deletes -wal and -shm, and a reader without
      // write access to the directory (the broker) can then not open the registry until a
      // writer recreates them.
      int persist = 1;
      sqlite3_file_control(db->raw().getHandle(), "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    }
    // Recognise the file before changing anything in it: a foreign file is left untouched.
    int version = 0;
    try {
      ONBOARD_TRY(version, schema::stored_version(db->raw(), path));
    } catch (const SQLite::Exception& e) {
      const int code = e.getExtendedErrorCode() != -1 ? e.getExtendedErrorCode() : e.getErrorCode();
      if (access == OpenAccess::reader &&
          (code == SQLITE_READONLY_DIRECTORY || (code & 0xff) == SQLITE_CANTOPEN)) {
        if (auto missing = missing_side_files(path)) {
          return make_error(Errc::io,
                            "open registry " + path + ": " + *missing +
                                "; the broker reads the registry without write access and "
                                "cannot create them: run any onboardctl command that opens "
                                "the registry (e.g. 'onboardctl device list') as its owner, which "
                                "recreates both with the registry file's group and mode");
        }
      }
      throw sqlite_failure(code);
    }
    if (access != OpenAccess::read_write) {
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
    // Reading in WAL mode creates -wal and -shm (kept by persist-WAL) before the command ends.
    db->exec("SELECT count(*) FROM sqlite_schema");
    // A persisted WAL is cut back to this size after each checkpoint, and to nothing when the last
    // connection closes: a broker starting without a writer then reads little of it.
    db->exec("PRAGMA journal_size_limit = 1048576");
    ONBOARD_CHECK(settle_side_files(path));
    db->exec("PRAGMA foreign_keys = ON");
    // Deleted content (a held key once packaged) is overwritten with zeros, not just unlinked.
    db->exec("PRAGMA secure_delete = ON");
    return std::unique_ptr<sql::Database>(std::move(db));
  } catch (...) {
    return sql::current_exception_error("open registry " + path);
  }
}

}  // namespace

Result<std::unique_ptr<sql::Database>> open_registry_file(const std::string& path, bool read_only) {
  return open_file(path, read_only ? OpenAccess::read_only : OpenAccess::read_write);
}

Result<std::unique_ptr<sql::Database>> open_registry_reader(const std::string& path) {
  return open_file(path, OpenAccess::reader);
}

}  // namespace sqlite
}  // namespace onboard::registry
