// The PostgreSQL backend of the registry's SQL seam (sql.h), through libpq. Internal to registry/.
//
// - Every statement is prepared once per connection and run with bound parameters, typed (bigint
//   or text) so that the server never guesses; results come back as text.
// - Nothing waits on the network without a deadline: connecting has connect_timeout (unless the
//   location sets its own), and every statement is sent asynchronously and waited for with
//   poll(), so that a server that stops answering (a SIGSTOP, a dead route) fails the statement
//   after `timeout` instead of hanging the caller; the connection is then dropped and made anew
//   on the next transaction.
// - Writers serialise on one transaction-level advisory lock taken at BEGIN, as SQLite's BEGIN
//   IMMEDIATE does: the audit chain, the change feed and the CRL numbers read-modify-write meta,
//   and must stay one sequence with writers on any number of hosts.
// - A commit that inserts change rows notifies kChangeChannel (a trigger in the schema): brokers
//   LISTEN on it and read the change feed when woken.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "core/error.h"
#include "registry/location.h"
#include "registry/sql.h"

namespace onboard::registry::pg {

inline constexpr const char* kChangeChannel = "onboard_changes";

struct Options {
  bool read_only = false;
  // How long one statement may take, and (when the location does not say) how long connecting.
  std::chrono::milliseconds timeout{30'000};
  const char* application_name = "onboardctl";
  // Rows a scan (prepare_scan inside a transaction) fetches at once: a few megabytes, and a
  // million-row table in a hundred round trips.
  int scan_batch = 10'000;
};

class PgDatabase;

// Connects to the database at `location` (Backend::postgresql) and recognises it. read_only: the
// database must hold a current registry; otherwise an empty database is fine (the caller
// migrates). Errors: Errc::io when the server cannot be reached or refuses; Errc::not_found
// (read_only) for an empty database; Errc::corrupt for a database with other tables, or a
// registry of another schema version.
Result<std::unique_ptr<PgDatabase>> connect(const Location& location, const Options& options);

class PgDatabase final : public sql::Database {
 public:
  ~PgDatabase() override;
  PgDatabase(const PgDatabase&) = delete;
  PgDatabase& operator=(const PgDatabase&) = delete;

  std::unique_ptr<sql::Cursor> prepare(std::string_view sql) override;
  std::unique_ptr<sql::Cursor> prepare_scan(std::string_view sql) override;
  void exec(std::string_view sql) override;
  void begin(sql::Transaction kind) override;
  void commit() override;
  void rollback() noexcept override;
  void scrub() noexcept override;
  int schema_version() override;
  void migrate(int from, UnixTime now) override;

  // LISTEN on kChangeChannel (again after every reconnect). Throws Failure.
  void listen();
  // Waits up to `timeout` for a notification on kChangeChannel; true when one (or several)
  // arrived, or when the connection had to be made anew (notifications may have been missed).
  // Throws Failure when the connection is lost or cannot be made.
  bool wait_for_change(std::chrono::milliseconds timeout);

  // Used by the cursors (pg_database.cpp).
  struct Impl;
  Impl& impl() noexcept { return *impl_; }

 private:
  explicit PgDatabase(std::unique_ptr<Impl> impl);
  friend Result<std::unique_ptr<PgDatabase>> connect(const Location&, const Options&);
  std::unique_ptr<Impl> impl_;
};

}  // namespace onboard::registry::pg
