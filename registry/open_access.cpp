#include "registry/open.h"
#include "registry/open_database.h"
#include "registry/pg_database.h"
#include "registry/sqlite_access.h"
#include "registry/sqlite_internal.h"

namespace onboard::registry {

Result<std::unique_ptr<sql::Database>> open_database(const Location& location, bool read_only,
                                                     const char* application_name) {
  if (location.backend == Backend::sqlite) {
    return sqlite::open_registry_file(location.target, read_only);
  }
  pg::Options options;
  options.read_only = read_only;
  options.application_name = application_name;
  ONBOARD_TRY(auto db, pg::connect(location, options));
  return std::unique_ptr<sql::Database>(std::move(db));
}

Result<std::unique_ptr<AccessStore>> open_access(const Location& location) {
  // The broker: an SQLite file without write access to it (see open_registry_reader).
  ONBOARD_TRY(auto db, location.backend == Backend::sqlite
                           ? sqlite::open_registry_reader(location.target)
                           : open_database(location, /*read_only=*/true, "mosquitto-onboard"));
  try {
    return sql::access_only_store(std::move(db), location.display());
  } catch (...) {
    return sql::current_exception_error("open registry " + location.display());
  }
}

Result<std::unique_ptr<AccessStore>> open_sqlite_access(const std::filesystem::path& path) {
  return open_access(Location{Backend::sqlite, path.string()});
}

}  // namespace onboard::registry
