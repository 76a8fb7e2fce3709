// The registry's SQL, written once for every backend. The stores run their statements through
// this seam; SQLite (sqlite_database.h) and PostgreSQL (pg_database.h) implement it, so that
// each Store method exists once and behaves alike on both.
//
// The SQL itself is the subset both engines share: ?1, ?2, ... placeholders (PostgreSQL's backend
// turns them into $1, $2, ...), ON CONFLICT, RETURNING, no engine-specific functions. Each
// backend keeps its own schema (DDL differs) and its own transactions: SQLite takes its write
// lock up front (BEGIN IMMEDIATE); PostgreSQL serialises writers on one advisory lock, so that the
// audit chain, the change feed and the CRL numbers stay one sequence with any number of writing
// processes on any number of hosts. Internal to registry/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "registry/access.h"
#include "registry/access_store.h"
#include "registry/model.h"

namespace onboard::registry::sql {

// The registry's schema version, the same tables on every backend (each backend's DDL says how).
inline constexpr int kSchemaVersion = 6;
// The oldest version a PostgreSQL registry can have (the first that backend had): it is migrated
// from there like an SQLite file.
inline constexpr int kOldestPostgresVersion = 3;

// LIMIT's value for "no limit" (SQLite's -1 is an error in PostgreSQL).
inline constexpr std::int64_t kNoLimit = INT64_MAX;

// A value bound to a placeholder: an integer or a text, either of which may be NULL. The type
// travels with a NULL too, because PostgreSQL infers a parameter's type from it.
struct Value {
  enum class Type : std::uint8_t { integer, text };
  Type type = Type::text;
  bool null = false;
  std::int64_t integer = 0;
  std::string text;
};

// What a failed statement means for the caller. Backends translate their own errors into this;
// `message` is safe to show an operator (never a value from the data, never a password).
struct Failure : std::runtime_error {
  Failure(Errc code, const std::string& message, bool may_retry = false)
      : std::runtime_error(message), errc(code), retry(may_retry) {}
  Errc errc;
  // A serialization failure or a deadlock: the whole transaction may be run again.
  bool retry;
};

// A stored value that the schema's CHECKs should have made impossible.
struct CorruptValue : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One statement of one backend: bound, then run by the first next() or by exec().
class Cursor {
 public:
  virtual ~Cursor() = default;
  // Replaces the bound values; the next next() or exec() runs the statement afresh.
  virtual void bind(std::vector<Value> values) = 0;
  // Steps to the next row; false when there is none.
  virtual bool next() = 0;
  // Runs the statement to its end; the number of rows it changed.
  virtual std::int64_t exec() = 0;
  // Ends the run early: the statement holds no rows any more (SQLite releases its read).
  virtual void reset() = 0;
  // Columns of the current row, numbered from 0. A text view is valid until next().
  virtual bool is_null(int column) const = 0;
  virtual std::int64_t integer(int column) const = 0;
  virtual std::string_view text(int column) const = 0;
};

enum class Transaction { read, write };

// One connection to the registry's database. Every call may throw Failure.
class Database {
 public:
  virtual ~Database() = default;
  virtual std::unique_ptr<Cursor> prepare(std::string_view sql) = 0;
  // A query of many rows (a whole table) stepped through while other statements run: inside a
  // transaction a backend may fetch it in batches instead of holding every row at once. SQLite
  // steps through its B-tree anyway; PostgreSQL would otherwise receive the whole result.
  virtual std::unique_ptr<Cursor> prepare_scan(std::string_view sql) { return prepare(sql); }
  // Statements without values or rows, several separated by ';' (DDL, schema setup).
  virtual void exec(std::string_view sql) = 0;
  // read: every statement sees one snapshot; write: also holds the registry's write lock.
  virtual void begin(Transaction kind) = 0;
  virtual void commit() = 0;
  // Never throws: a connection that is gone has rolled back already.
  virtual void rollback() noexcept = 0;
  // After secrets were deleted: makes the deleted content unrecoverable from the database's own
  // files as far as this backend can. Best effort, outside a transaction.
  virtual void scrub() noexcept = 0;

  // The schema: the version stored (0 for an empty database; Failure with Errc::corrupt for one
  // that is not a registry of ours, or newer than this build), and the migration from `from` to
  // the current version, run inside the caller's write transaction.
  virtual int schema_version() = 0;
  virtual void migrate(int from, UnixTime now) = 0;
};

// --- Binding ---------------------------------------------------------------------------------
// Values are only ever bound, never spliced into SQL text.

inline Value value_of(std::string_view v) {
  return Value{Value::Type::text, false, 0, std::string(v)};
}
inline Value value_of(const std::string& v) { return value_of(std::string_view(v)); }
inline Value value_of(const char* v) { return value_of(std::string_view(v)); }
inline Value value_of(std::int64_t v) { return Value{Value::Type::integer, false, v, {}}; }
inline Value value_of(int v) { return value_of(static_cast<std::int64_t>(v)); }
inline Value value_of(std::uint64_t v) { return value_of(static_cast<std::int64_t>(v)); }
template <class T>
Value value_of(const std::optional<T>& v) {
  if (v) return value_of(*v);
  Value null = value_of(T{});
  null.null = true;
  return null;
}

// A statement with its cursor: the stores' handle on one SQL text.
class Statement {
 public:
  explicit Statement(std::unique_ptr<Cursor> cursor) : cursor_(std::move(cursor)) {}

  template <class... Args>
  void bind(const Args&... args) {
    std::vector<Value> values;
    values.reserve(sizeof...(args));
    (values.push_back(value_of(args)), ...);
    cursor_->bind(std::move(values));
  }

  bool step() { return cursor_->next(); }
  std::int64_t exec() { return cursor_->exec(); }
  void reset() { cursor_->reset(); }

  bool is_null(int column) const { return cursor_->is_null(column); }
  std::int64_t int64(int column) const { return cursor_->integer(column); }
  int int32(int column) const;  // CorruptValue when out of range
  std::string text(int column) const { return std::string(cursor_->text(column)); }
  std::string_view view(int column) const { return cursor_->text(column); }
  std::optional<std::string> text_or_null(int column) const {
    if (is_null(column)) return std::nullopt;
    return text(column);
  }

 private:
  std::unique_ptr<Cursor> cursor_;
};

// A statement with `args` bound to ?1, ?2, ... in order, not yet run.
template <class... Args>
Statement prepare(Database& db, std::string_view sql, const Args&... args) {
  Statement statement(db.prepare(sql));
  statement.bind(args...);
  return statement;
}

// The same for a query of many rows (Database::prepare_scan).
template <class... Args>
Statement scan(Database& db, std::string_view sql, const Args&... args) {
  Statement statement(db.prepare_scan(sql));
  statement.bind(args...);
  return statement;
}

// The first column of the first row of a query that must return one (CorruptValue otherwise).
std::int64_t query_int64(Database& db, std::string_view sql);

// Stored enum values; an unknown one throws CorruptValue.
DeviceStatus device_status_from(std::string_view text);
ChangeKind change_kind_from(std::string_view text);

// Turns the exception being handled into an Error; call only inside a catch block. Nothing else
// may leave a store's API, so this catches everything.
Error current_exception_error(std::string_view what);

// --- The connection --------------------------------------------------------------------------

// One open registry and the transactions every store method runs in. The stores derive from it;
// their methods run `read` or `write` around statements on db_.
class Connection {
 public:
  Connection(std::unique_ptr<Database> db, std::string where, bool read_only)
      : owner_(std::move(db)), db_(*owner_), where_(std::move(where)), read_only_(read_only) {}

  // Runs `body` in one read transaction, so that several statements see one snapshot.
  template <class F>
  auto read(std::string_view what, F&& body) -> decltype(body());
  // Runs `body` in one write transaction, committed only if it returns ok. A transaction the
  // database aborted as a serialization failure or a deadlock is run again, `body` included.
  template <class F>
  auto write(std::string_view what, const Actor& actor, F&& body) -> decltype(body());

  // AccessStore::read_access (access_read.cpp).
  Result<AccessData> read_access_data(const AccessQuery& query);

 protected:
  std::unique_ptr<Database> owner_;
  Database& db_;
  std::string where_;  // for messages: a path, or a connection string without its password
  bool read_only_;

 private:
  static constexpr int kWriteAttempts = 5;
  void read_all_access(AccessData& data);
  void read_listed_access(const std::set<std::string, std::less<>>& device_ids,
                          const std::set<std::string, std::less<>>& group_names, AccessData& data);
};

template <class F>
auto Connection::read(std::string_view what, F&& body) -> decltype(body()) {
  try {
    db_.begin(Transaction::read);
    auto result = body();
    db_.commit();
    return result;
  } catch (...) {
    db_.rollback();
    return current_exception_error(what);
  }
}

template <class F>
auto Connection::write(std::string_view what, const Actor& actor, F&& body) -> decltype(body()) {
  if (read_only_) {
    return make_error(Errc::io, std::string(what) + ": the registry is open read-only");
  }
  if (actor.name.empty()) {
    return make_error(Errc::invalid_input,
                      std::string(what) + ": no actor named for the audit log");
  }
  for (int attempt = 1;; ++attempt) {
    try {
      db_.begin(Transaction::write);
      auto result = body();
      if (result.ok()) {
        db_.commit();
      } else {
        db_.rollback();
      }
      return result;
    } catch (const Failure& failure) {
      db_.rollback();
      if (!failure.retry || attempt == kWriteAttempts) return current_exception_error(what);
    } catch (...) {
      db_.rollback();
      return current_exception_error(what);
    }
  }
}

// The broker's role alone (AccessStore) over a connection opened read-only.
std::unique_ptr<AccessStore> access_only_store(std::unique_ptr<Database> db, std::string where);

}  // namespace onboard::registry::sql
