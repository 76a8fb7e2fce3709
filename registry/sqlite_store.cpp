// Opening the full store on an SQLite file (migrations included).
#include "registry/sqlite_store.h"

#include <utility>

#include "registry/sqlite_internal.h"
#include "registry/store_internal.h"

namespace onboard::registry {

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& path, OpenMode mode) {
  const std::string where = path.string();
  const bool read_only = mode == OpenMode::read_only;
  ONBOARD_TRY(auto db, sqlite::open_registry_file(where, read_only));
  try {
    auto store = std::make_unique<sql::SqlStore>(std::move(db), where, read_only);
    if (!read_only) ONBOARD_CHECK(store->create_or_upgrade(unix_now()));
    return std::unique_ptr<Store>(std::move(store));
  } catch (...) {
    return sql::current_exception_error("open registry " + where);
  }
}

}  // namespace onboard::registry
