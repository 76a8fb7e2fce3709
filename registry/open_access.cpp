#include "registry/open.h"
#include "registry/pg_database.h"
#include "registry/sqlite_access.h"

namespace onboard::registry {

Result<std::unique_ptr<AccessStore>> open_access(const Location& location) {
  if (location.backend == Backend::sqlite) return open_sqlite_access(location.target);
  pg::Options options;
  options.read_only = true;
  options.application_name = "mosquitto-onboard";
  ONBOARD_TRY(auto db, pg::connect(location, options));
  try {
    return sql::access_only_store(std::move(db), location.display());
  } catch (...) {
    return sql::current_exception_error("registry " + location.display());
  }
}

}  // namespace onboard::registry
