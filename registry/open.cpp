#include "registry/open.h"

#include "registry/open_database.h"
#include "registry/sqlite_store.h"
#include "registry/store_internal.h"

namespace onboard::registry {

Result<std::unique_ptr<Store>> open_store(const Location& location, OpenMode mode) {
  const bool read_only = mode == OpenMode::read_only;
  ONBOARD_TRY(auto db, open_database(location, read_only));
  try {
    auto store = std::make_unique<sql::SqlStore>(std::move(db), location.display(), read_only);
    if (!read_only) ONBOARD_CHECK(store->create_or_upgrade(unix_now()));
    return std::unique_ptr<Store>(std::move(store));
  } catch (...) {
    return sql::current_exception_error("open registry " + location.display());
  }
}

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& path, OpenMode mode) {
  return open_store(Location{Backend::sqlite, path.string()}, mode);
}

}  // namespace onboard::registry
