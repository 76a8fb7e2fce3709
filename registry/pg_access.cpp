#include "registry/pg_access.h"

#include <utility>

#include "registry/pg_database.h"

namespace onboard::registry {
namespace {

class PgAccess final : public PgAccessStore, private sql::Connection {
 public:
  // `pg` is the database `db` owns.
  PgAccess(pg::PgDatabase& pg, std::unique_ptr<sql::Database> db, std::string where)
      : Connection(std::move(db), std::move(where), /*read_only=*/true), pg_(pg) {}

  Result<AccessData> read_access(const AccessQuery& query) override {
    return read_access_data(query);
  }

  Result<bool> wait_for_change(std::chrono::milliseconds timeout) override {
    try {
      return pg_.wait_for_change(timeout);
    } catch (...) {
      return sql::current_exception_error("wait for registry changes");
    }
  }

 private:
  pg::PgDatabase& pg_;
};

}  // namespace

Result<std::unique_ptr<PgAccessStore>> open_pg_access(const Location& location,
                                                      std::chrono::milliseconds timeout) {
  pg::Options options;
  options.read_only = true;
  options.timeout = timeout;
  options.application_name = "mosquitto-onboard";
  ONBOARD_TRY(auto db, pg::connect(location, options));
  try {
    db->listen();
    pg::PgDatabase& pg = *db;
    return std::unique_ptr<PgAccessStore>(
        std::make_unique<PgAccess>(pg, std::move(db), location.display()));
  } catch (...) {
    return sql::current_exception_error("registry " + location.display());
  }
}

}  // namespace onboard::registry
