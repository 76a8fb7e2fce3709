#include "registry/open.h"

#include "registry/pg_database.h"
#include "registry/sqlite_store.h"
#include "registry/store_internal.h"

namespace onboard::registry {

Result<std::unique_ptr<Store>> open_store(const Location& location, OpenMode mode) {
  if (location.backend == Backend::sqlite) return open_sqlite_store(location.target, mode);
  const bool read_only = mode == OpenMode::read_only;
  pg::Options options;
  options.read_only = read_only;
  ONBOARD_TRY(auto db, pg::connect(location, options));
  const std::string where = "registry " + location.display();
  try {
    auto store = std::make_unique<sql::SqlStore>(std::move(db), location.display(), read_only);
    if (!read_only) ONBOARD_CHECK(store->create_or_upgrade(unix_now()));
    return std::unique_ptr<Store>(std::move(store));
  } catch (...) {
    return sql::current_exception_error(where);
  }
}

}  // namespace onboard::registry
