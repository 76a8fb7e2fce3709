#include "registry/sqlite_access.h"

#include <utility>

#include "registry/sqlite_internal.h"

namespace onboard::registry {

Result<std::unique_ptr<AccessStore>> open_sqlite_access(const std::filesystem::path& path) {
  const std::string where = path.string();
  ONBOARD_TRY(auto db, sqlite::open_registry_file(where, /*read_only=*/true));
  try {
    return sql::access_only_store(std::move(db), where);
  } catch (...) {
    return sql::current_exception_error("open registry " + where);
  }
}

}  // namespace onboard::registry
