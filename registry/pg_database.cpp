#include "registry/pg_database.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "registry/pg_schema.h"

namespace onboard::registry::pg {
namespace {

using sql::Failure;
using Clock = std::chrono::steady_clock;

struct ConnectionDeleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using ConnectionPtr = std::unique_ptr<PGconn, ConnectionDeleter>;

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

// Type OIDs of the parameters we bind (pg_type.h; stable since PostgreSQL 7).
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
// The writers' advisory lock: "ONBD", as SQLite registries' application_id.
constexpr const char* kWriteLock = "SELECT pg_advisory_xact_lock(1330529860)";

// libpq's messages end in a newline and may run over several lines; the first says what failed.
std::string first_line(const char* message) {
  std::string text = message != nullptr ? message : "";
  if (const auto end = text.find('\n'); end != std::string::npos) text.resize(end);
  return text.empty() ? "no reason given" : text;
}

// The seam's Failure for a failed statement. Only fixed phrases and, where it names no value
// from the data, the server's primary message go into it: the detail of a unique violation
// would echo the key.
Failure failure_of(const PGresult* result) {
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const std::string code = state != nullptr ? state : "";
  const auto primary = [&] {
    return first_line(PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY));
  };
  if (code == "23505") return Failure(Errc::conflict, "it already exists");
  if (code == "23503")
    return Failure(Errc::not_found, "it refers to something that does not exist");
  if (code.starts_with("23")) return Failure(Errc::internal, "a registry constraint was violated");
  if (code == "40001" || code == "40P01") {
    return Failure(Errc::io, "the database aborted the transaction for a concurrent one", true);
  }
  if (code == "55P03") {
    return Failure(Errc::io, "the registry stayed locked by another writer for too long");
  }
  if (code == "57014")
    return Failure(Errc::io, "the database cancelled a statement that ran too long");
  if (code == "42501") {
    return Failure(Errc::io, "permission denied by the database (" + primary() +
                                 "); see 'onboardctl registry grants'");
  }
  if (code == "25006") return Failure(Errc::io, "the database is read-only for this connection");
  if (code.starts_with("08") || code.starts_with("57P")) {
    return Failure(Errc::io, "the connection to the database was lost");
  }
  if (code.starts_with("53")) {
    return Failure(Errc::io, "the database server is out of resources (" + primary() + ")");
  }
  if (code == "42P01" || code == "42703") {
    return Failure(Errc::corrupt, "the database's tables are not this version's registry");
  }
  return Failure(Errc::internal, "unexpected PostgreSQL error (SQLSTATE " +
                                     (code.empty() ? std::string("none") : code) + ")");
}

// ?1, ?2, ... as $1, $2, ..., outside quoted text and identifiers.
std::string numbered_parameters(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  char quote = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '?' && i + 1 < sql.size() && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      out.push_back('$');
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

struct PgDatabase::Impl {
  Location location;
  Options options;
  ConnectionPtr connection;
  std::map<std::string, std::string, std::less<>> prepared;  // SQL and types → statement name
  bool in_transaction = false;
  bool listening = false;

  // A connection that failed is dropped: the next transaction connects anew.
  [[noreturn]] void lost(const std::string& why) {
    connection.reset();
    prepared.clear();
    in_transaction = false;
    throw Failure(Errc::io, why);
  }

  void connect_now() {
    const std::string timeout_s = std::to_string(std::max<long long>(
        1, std::chrono::duration_cast<std::chrono::seconds>(options.timeout).count()));
    // Our defaults first, the location last: what the location sets wins (libpq keeps the last
    // value of a repeated keyword). Keepalives notice a peer that vanished while we sat idle.
    const char* keywords[] = {"connect_timeout",
                              "application_name",
                              "keepalives_idle",
                              "keepalives_interval",
                              "keepalives_count",
                              "dbname",
                              nullptr};
    const char* values[] = {timeout_s.c_str(),
                            options.application_name,
                            "10",
                            "5",
                            "3",
                            location.target.c_str(),
                            nullptr};
    ConnectionPtr c(PQconnectdbParams(keywords, values, /*expand_dbname=*/1));
    if (!c) throw Failure(Errc::internal, "out of memory connecting to the database");
    if (PQstatus(c.get()) != CONNECTION_OK) {
      throw Failure(Errc::io, "cannot connect: " + first_line(PQerrorMessage(c.get())));
    }
    connection = std::move(c);
    prepared.clear();
    in_transaction = false;
    const auto ms = std::to_string(options.timeout.count());
    // A transaction sits idle while the client works through a large result (the broker building
    // a million-device snapshot between statements): the idle limit only ends what a vanished
    // client left open, so it is generous.
    simple("SET statement_timeout = " + ms + "; SET lock_timeout = " + ms +
           "; SET idle_in_transaction_session_timeout = '5min'");
    // The broker reads only: refused by the server too, whatever the role's grants allow.
    if (options.read_only) simple("SET default_transaction_read_only = on");
    if (listening) simple(std::string("LISTEN ") + kChangeChannel);
  }

  void ensure_connected() {
    if (connection && PQstatus(connection.get()) == CONNECTION_OK) return;
    if (in_transaction) lost("the connection to the database was lost");
    connect_now();
  }

  // Waits for the statement sent last, up to the deadline; returns its result (the first error
  // if several results came back).
  ResultPtr wait_result() {
    PGconn* c = connection.get();
    const auto deadline = Clock::now() + options.timeout;
    ResultPtr kept;
    for (;;) {
      while (PQisBusy(c) != 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
          lost("the database did not answer within " +
               std::to_string(options.timeout.count() / 1000) + " s");
        }
        pollfd fd{PQsocket(c), POLLIN, 0};
        const int ready = ::poll(&fd, 1, static_cast<int>(left));
        if (ready < 0 && errno != EINTR) lost("cannot wait for the database");
        if (PQconsumeInput(c) == 0) lost("the connection to the database was lost");
      }
      ResultPtr result(PQgetResult(c));
      if (!result) break;
      const auto status = PQresultStatus(result.get());
      const bool failed = status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE;
      if (!kept || (failed && PQresultStatus(kept.get()) != PGRES_FATAL_ERROR)) {
        kept = std::move(result);
      }
    }
    if (!kept) lost("the connection to the database was lost");
    const auto status = PQresultStatus(kept.get());
    if (status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE) {
      if (PQstatus(c) != CONNECTION_OK) lost("the connection to the database was lost");
      throw failure_of(kept.get());
    }
    return kept;
  }

  // Statements without parameters, several allowed (the simple query protocol).
  ResultPtr simple(const std::string& sql) {
    if (PQsendQuery(connection.get(), sql.c_str()) == 0) {
      lost("cannot send to the database: " + first_line(PQerrorMessage(connection.get())));
    }
    return wait_result();
  }

  // A statement with bound values, prepared once per connection and kept by its text and types.
  ResultPtr run(const std::string& sql, const std::vector<sql::Value>& values) {
    ensure_connected();
    PGconn* c = connection.get();
    std::string key = sql;
    key.push_back('\0');
    for (const auto& v : values) key.push_back(v.type == sql::Value::Type::integer ? 'i' : 't');
    auto named = prepared.find(key);
    if (named == prepared.end()) {
      const auto types = types_of(values);
      std::string name(1, 's');
      name += std::to_string(prepared.size() + 1);
      if (PQsendPrepare(c, name.c_str(), sql.c_str(), static_cast<int>(types.size()),
                        types.data()) == 0) {
        lost("cannot send to the database: " + first_line(PQerrorMessage(c)));
      }
      wait_result();
      named = prepared.emplace(std::move(key), name).first;
    }
    const Bound bound(values);
    if (PQsendQueryPrepared(c, named->second.c_str(), bound.count(), bound.pointers.data(), nullptr,
                            nullptr, /*text results*/ 0) == 0) {
      lost("cannot send to the database: " + first_line(PQerrorMessage(c)));
    }
    return wait_result();
  }

  // A statement run once, not kept prepared: a scan's DECLARE and FETCH name their own cursor.
  ResultPtr run_once(const std::string& sql, const std::vector<sql::Value>& values) {
    ensure_connected();
    PGconn* c = connection.get();
    const auto types = types_of(values);
    const Bound bound(values);
    if (PQsendQueryParams(c, sql.c_str(), bound.count(), types.data(), bound.pointers.data(),
                          nullptr, nullptr, /*text results*/ 0) == 0) {
      lost("cannot send to the database: " + first_line(PQerrorMessage(c)));
    }
    return wait_result();
  }

  // Cursors declared on this connection: each scan names a new one (they close at the end of
  // their transaction).
  std::uint64_t scans = 0;

 private:
  static std::vector<Oid> types_of(const std::vector<sql::Value>& values) {
    std::vector<Oid> types;
    types.reserve(values.size());
    for (const auto& v : values) {
      types.push_back(v.type == sql::Value::Type::integer ? kInt8Oid : kTextOid);
    }
    return types;
  }

  // Values in libpq's text format; the pointers stay valid while this lives.
  struct Bound {
    explicit Bound(const std::vector<sql::Value>& values)
        : integers(values.size()), pointers(values.size(), nullptr) {
      for (std::size_t i = 0; i < values.size(); ++i) {
        const auto& v = values[i];
        if (v.null) continue;
        if (v.type == sql::Value::Type::integer) {
          integers[i] = std::to_string(v.integer);
          pointers[i] = integers[i].c_str();
        } else {
          pointers[i] = v.text.c_str();
        }
      }
    }
    int count() const { return static_cast<int>(pointers.size()); }
    std::vector<std::string> integers;
    std::vector<const char*> pointers;
  };
};

namespace {

class PgCursor final : public sql::Cursor {
 public:
  enum class Kind { statement, scan };
  PgCursor(PgDatabase::Impl& db, std::string_view sql, Kind kind)
      : db_(db), sql_(numbered_parameters(sql)), kind_(kind) {}

  void bind(std::vector<sql::Value> values) override {
    values_ = std::move(values);
    reset();
  }

  bool next() override {
    if (!result_) {
      start();
    } else if (row_ + 1 >= rows_ && !cursor_.empty()) {
      fetch();
    }
    return ++row_ < rows_;
  }

  std::int64_t exec() override {
    result_ = db_.run(sql_, values_);
    // PQcmdTuples points into the result: read it before the result goes.
    const char* changed = PQcmdTuples(result_.get());
    std::int64_t n = 0;
    if (changed != nullptr) std::from_chars(changed, changed + std::strlen(changed), n);
    reset();
    return n;
  }

  void reset() override {
    result_.reset();
    rows_ = 0;
    row_ = -1;
    cursor_.clear();  // a declared cursor is left to close with its transaction
  }

  bool is_null(int column) const override {
    check(column);
    return PQgetisnull(result_.get(), row_, column) != 0;
  }

  std::int64_t integer(int column) const override {
    const std::string_view value = text(column);
    if (value == "t") return 1;  // a boolean expression
    if (value == "f") return 0;
    std::int64_t n = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (error != std::errc() || end != value.data() + value.size()) {
      throw sql::CorruptValue("a value that is not an integer");
    }
    return n;
  }

  std::string_view text(int column) const override {
    check(column);
    return {PQgetvalue(result_.get(), row_, column),
            static_cast<std::size_t>(PQgetlength(result_.get(), row_, column))};
  }

 private:
  void check(int column) const {
    if (!result_ || row_ < 0 || row_ >= rows_ || column < 0 || column >= PQnfields(result_.get())) {
      throw Failure(Errc::internal, "a column was read without a row");
    }
  }

  // Runs the statement: whole, or (a scan inside a transaction) as a server-side cursor whose
  // first batch is fetched here.
  void start() {
    if (kind_ == Kind::scan && db_.in_transaction) {
      const std::string name = "onboard_scan_" + std::to_string(++db_.scans);
      db_.run_once("DECLARE " + name + " NO SCROLL CURSOR FOR " + sql_, values_);
      cursor_ = name;
      fetch();
      return;
    }
    take(db_.run(sql_, values_));
  }

  // The next batch of a scan; a short batch is the last.
  void fetch() {
    const int batch = std::max(1, db_.options.scan_batch);
    take(db_.run_once("FETCH " + std::to_string(batch) + " FROM " + cursor_, {}));
    if (rows_ < batch) cursor_.clear();
  }

  void take(ResultPtr result) {
    result_ = std::move(result);
    rows_ = PQntuples(result_.get());
    row_ = -1;
  }

  PgDatabase::Impl& db_;
  std::string sql_;
  Kind kind_;
  std::vector<sql::Value> values_;
  ResultPtr result_;
  int rows_ = 0;
  int row_ = -1;
  std::string cursor_;  // the scan's server-side cursor while it has rows left to fetch
};

}  // namespace

PgDatabase::PgDatabase(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PgDatabase::~PgDatabase() = default;

std::unique_ptr<sql::Cursor> PgDatabase::prepare(std::string_view sql) {
  return std::make_unique<PgCursor>(*impl_, sql, PgCursor::Kind::statement);
}

std::unique_ptr<sql::Cursor> PgDatabase::prepare_scan(std::string_view sql) {
  return std::make_unique<PgCursor>(*impl_, sql, PgCursor::Kind::scan);
}

void PgDatabase::exec(std::string_view sql) {
  impl_->ensure_connected();
  impl_->simple(std::string(sql));
}

void PgDatabase::begin(sql::Transaction kind) {
  impl_->ensure_connected();
  if (kind == sql::Transaction::read) {
    impl_->simple("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    impl_->in_transaction = true;
    return;
  }
  if (impl_->options.read_only) {
    throw Failure(Errc::io, "the registry is open read-only");
  }
  impl_->simple("BEGIN");
  impl_->in_transaction = true;
  impl_->simple(kWriteLock);
}

void PgDatabase::commit() {
  impl_->simple("COMMIT");
  impl_->in_transaction = false;
}

void PgDatabase::rollback() noexcept {
  auto& db = *impl_;
  db.in_transaction = false;
  if (!db.connection || PQstatus(db.connection.get()) != CONNECTION_OK) return;
  if (PQtransactionStatus(db.connection.get()) == PQTRANS_IDLE) return;
  try {
    db.simple("ROLLBACK");
  } catch (...) {
    // The connection is dropped by then; the server rolls back when it notices.
  }
}

// PostgreSQL keeps a deleted row's old version until VACUUM reclaims its space; autovacuum does
// so in time, and this asks for it now. Without ownership of the table VACUUM only warns.
void PgDatabase::scrub() noexcept {
  try {
    exec("VACUUM held_keys");
  } catch (...) {
  }
}

int PgDatabase::schema_version() {
  auto probe = prepare(
      "SELECT to_regclass('meta') IS NOT NULL, "
      "(SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()), "
      "coalesce(obj_description(to_regclass('meta'), 'pg_class'), '')");
  if (!probe->next()) throw sql::CorruptValue("no answer about the schema");
  const bool has_meta = probe->integer(0) != 0;
  const std::int64_t tables = probe->integer(1);
  const std::string marker(probe->text(2));
  probe->reset();
  if (!has_meta) {
    if (tables == 0) return 0;
    throw Failure(Errc::corrupt,
                  "the database holds other tables but no mosquitto-onboard registry; name an "
                  "empty database");
  }
  if (marker != kRegistryMarker) {
    throw Failure(Errc::corrupt, "the database's meta table is not a mosquitto-onboard registry's");
  }
  auto version = prepare("SELECT schema_version FROM meta WHERE id = 1");
  if (!version->next()) throw Failure(Errc::corrupt, "the registry's meta row is missing");
  const std::int64_t v = version->integer(0);
  version->reset();
  if (v > sql::kSchemaVersion) {
    throw Failure(Errc::corrupt, "the registry has schema version " + std::to_string(v) +
                                     ", newer than this build understands (" +
                                     std::to_string(sql::kSchemaVersion) + "); upgrade onboardctl");
  }
  if (v < sql::kOldestPostgresVersion) {
    throw Failure(Errc::corrupt, "the registry has an unknown schema version " + std::to_string(v));
  }
  return static_cast<int>(v);
}

void PgDatabase::migrate(int from, UnixTime now) {
  if (from >= sql::kOldestPostgresVersion && from < sql::kSchemaVersion) {
    // Version 4 changes no table (schema.cpp); the store records the state it starts from.
    // Version 5 adds the claims.
    if (from < 5) exec(kMigrateTo5);
    // Version 6 links renewals to what they renew.
    if (from < 6) exec(kMigrateTo6);
    sql::Statement bump(prepare("UPDATE meta SET schema_version = ?1 WHERE id = 1"));
    bump.bind(sql::kSchemaVersion);
    bump.exec();
    return;
  }
  if (from != 0) {
    throw Failure(Errc::corrupt,
                  "no migration from schema version " + std::to_string(from) + " on PostgreSQL");
  }
  exec(kSchema);
  sql::Statement meta(
      prepare("INSERT INTO meta (id, schema_version, change_seq, audit_head_seq, audit_head_hash, "
              "crl_number, root_crl_number) VALUES (1, ?1, 0, 0, ?2, 0, 0)"));
  meta.bind(sql::kSchemaVersion, std::string(64, '0'));
  meta.exec();
  sql::Statement group(
      prepare("INSERT INTO groups (name, description, created_at) "
              "VALUES ('default', 'every device is a member', ?1)"));
  group.bind(static_cast<std::int64_t>(now));
  group.exec();
  // The documented default: each device may publish, subscribe and read below its own subtree.
  sql::Statement rule(
      prepare("INSERT INTO acl_rules (group_name, access, pattern, effect, priority, created_at) "
              "VALUES ('default', 7, 'devices/%d/#', 'allow', 0, ?1)"));
  rule.bind(static_cast<std::int64_t>(now));
  rule.exec();
}

void PgDatabase::listen() {
  impl_->listening = true;
  impl_->ensure_connected();
  impl_->simple(std::string("LISTEN ") + kChangeChannel);
}

bool PgDatabase::wait_for_change(std::chrono::milliseconds timeout) {
  auto& db = *impl_;
  const PGconn* before = db.connection.get();
  db.ensure_connected();
  PGconn* c = db.connection.get();
  // A new connection may have missed notifications while there was none: say "changed", so that
  // the caller reads the feed.
  if (c != before) return true;
  auto drain = [&] {
    bool any = false;
    while (PGnotify* n = PQnotifies(c)) {
      any = true;
      PQfreemem(n);
    }
    return any;
  };
  if (PQconsumeInput(c) == 0) db.lost("the connection to the database was lost");
  if (drain()) return true;
  pollfd fd{PQsocket(c), POLLIN, 0};
  const int ready = ::poll(&fd, 1, static_cast<int>(timeout.count()));
  if (ready < 0 && errno != EINTR) db.lost("cannot wait for the database");
  if (ready > 0 && PQconsumeInput(c) == 0) db.lost("the connection to the database was lost");
  return drain();
}

Result<std::unique_ptr<PgDatabase>> connect(const Location& location, const Options& options) {
  const std::string where = "registry " + location.display();
  try {
    auto impl = std::make_unique<PgDatabase::Impl>();
    impl->location = location;
    impl->options = options;
    impl->connect_now();
    std::unique_ptr<PgDatabase> db(new PgDatabase(std::move(impl)));
    if (options.read_only) {
      const int version = db->schema_version();
      if (version == 0)
        return make_error(Errc::not_found, where + " is not an initialised registry");
      if (version < sql::kSchemaVersion) {
        return make_error(Errc::corrupt, where + " has the old schema version " +
                                             std::to_string(version) +
                                             "; open it once with onboardctl to upgrade it");
      }
    }
    return db;
  } catch (...) {
    return sql::current_exception_error(where);
  }
}

}  // namespace onboard::registry::pg
