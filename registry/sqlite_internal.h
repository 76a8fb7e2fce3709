// What every part of the SQLite registry shares: opening and recognising the file, the connection
// with its read and write transactions, turning failures into Errors, binding values, and the
// access-data read both the broker's store (sqlite_access.h) and the full store (sqlite_store.h)
// answer read_access with. Internal to registry/: nothing outside it includes this.
#pragma once

#include <SQLiteCpp/Column.h>
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/error.h"
#include "registry/access.h"
#include "registry/model.h"

namespace onboard::registry::sqlite {

// A stored value that the schema's CHECKs should have made impossible.
struct CorruptValue : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Turns the exception being handled into an Error; call only inside a catch block. Nothing else
// may leave a store's API, so this catches everything.
Error current_exception_error(std::string_view what);

// Opens the file at `path` and recognises it before changing anything in it (a foreign file is
// left untouched). read_only: the file must exist and be a current registry; nothing is written.
// Otherwise the file is created if needed and switched to WAL mode with foreign keys and secure
// delete on; the caller runs the migrations. Errors as open_sqlite_store's.
Result<SQLite::Database> open_registry_file(const std::string& path, bool read_only);

// --- Binding and reading ---------------------------------------------------------------------
// Values are only ever bound, never spliced into SQL text.

inline void bind_one(SQLite::Statement& s, int i, std::string_view v) { s.bind(i, std::string(v)); }
inline void bind_one(SQLite::Statement& s, int i, std::int64_t v) { s.bind(i, v); }
inline void bind_one(SQLite::Statement& s, int i, int v) { s.bind(i, v); }
template <class T>
void bind_one(SQLite::Statement& s, int i, const std::optional<T>& v) {
  if (v) {
    bind_one(s, i, *v);
  } else {
    s.bind(i);  // NULL
  }
}

// A statement with `args` bound to ?1, ?2, ... in order. Statements are locals: they are
// finalized when the caller's scope ends, so none can keep a read transaction open (the
// reference doc's pitfall E).
template <class... Args>
SQLite::Statement prepare(SQLite::Database& db, const char* sql, const Args&... args) {
  SQLite::Statement statement(db, sql);
  int index = 0;
  (bind_one(statement, ++index, args), ...);
  return statement;
}

std::optional<std::string> text_or_null(const SQLite::Column& column);

// Stored enum values; an unknown one throws CorruptValue.
DeviceStatus device_status_from(const std::string& text);
ChangeKind change_kind_from(const std::string& text);

// --- The connection --------------------------------------------------------------------------

// One open registry file and the transactions every store method runs in. The stores derive from
// it; their methods run `read` or `write` around statements on db_.
class Connection {
 public:
  Connection(SQLite::Database db, std::string path, bool read_only)
      : db_(std::move(db)), path_(std::move(path)), read_only_(read_only) {}

  // Runs `body` in one read transaction, so that several statements see one snapshot.
  template <class F>
  auto read(std::string_view what, F&& body) -> decltype(body());
  // Runs `body` in one write transaction, committed only if it returns ok.
  template <class F>
  auto write(std::string_view what, const Actor& actor, F&& body) -> decltype(body());

  // AccessStore::read_access (sqlite_access.cpp).
  Result<AccessData> read_access_data(const AccessQuery& query);

 protected:
  SQLite::Database db_;
  std::string path_;
  bool read_only_;

 private:
  void read_all_access(AccessData& data);
  void read_listed_access(const std::set<std::string, std::less<>>& device_ids,
                          const std::set<std::string, std::less<>>& group_names, AccessData& data);
};

template <class F>
auto Connection::read(std::string_view what, F&& body) -> decltype(body()) {
  try {
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::DEFERRED);
    auto result = body();
    transaction.commit();
    return result;
  } catch (...) {
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
  try {
    // IMMEDIATE: take the write lock now, waiting up to the busy timeout behind another writer.
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    auto result = body();
    if (result.ok()) transaction.commit();
    return result;  // not committed: the Transaction's destructor rolls everything back
  } catch (...) {
    return current_exception_error(what);
  }
}

}  // namespace onboard::registry::sqlite
