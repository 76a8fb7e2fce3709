#include "registry/open.h"

#include "registry/sqlite_store.h"

namespace onboard::registry {

Result<std::unique_ptr<Store>> open_store(const Location& location, OpenMode mode) {
  if (location.backend == Backend::sqlite) return open_sqlite_store(location.target, mode);
  return make_error(Errc::invalid_input,
                    "registry " + location.display() + ": PostgreSQL is not supported yet");
}

}  // namespace onboard::registry
