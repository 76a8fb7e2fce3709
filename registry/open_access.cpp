#include "registry/open.h"
#include "registry/sqlite_access.h"

namespace onboard::registry {

Result<std::unique_ptr<AccessStore>> open_access(const Location& location) {
  if (location.backend == Backend::sqlite) return open_sqlite_access(location.target);
  return make_error(Errc::invalid_input,
                    "registry " + location.display() + ": PostgreSQL is not supported yet");
}

}  // namespace onboard::registry
