// The connection to the registry at a location, of either backend, behind the SQL seam: what
// open_store, open_access and copy_registry build on. Internal to registry/.
#pragma once

#include <memory>

#include "core/error.h"
#include "registry/location.h"
#include "registry/sql.h"

namespace onboard::registry {

// SQLite: the file recognised as sqlite::open_registry_file does; PostgreSQL: connected and
// recognised as pg::connect does, `application_name` naming the client to the server. read_only:
// the registry must exist and be current, and nothing is written.
Result<std::unique_ptr<sql::Database>> open_database(const Location& location, bool read_only,
                                                     const char* application_name = "onboardctl");

}  // namespace onboard::registry
