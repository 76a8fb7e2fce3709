// Opening the registry wherever it is (location.h): the one entry point onboardctl, the REST
// server and the plugin use, so that none of them names a backend.
#pragma once

#include <memory>

#include "core/error.h"
#include "registry/access_store.h"
#include "registry/location.h"
#include "registry/store.h"

namespace onboard::registry {

enum class OpenMode {
  read_write,  // creates the registry if needed and brings its schema up to date (onboardctl)
  read_only,   // never writes and never migrates; the registry must be current
};

// The whole Store. Errc::not_found when read_only and there is no registry; Errc::corrupt for
// something that is not a registry of ours or of a newer schema; Errc::io when it cannot be
// reached (a file's permissions, a database server down, refused or timing out).
Result<std::unique_ptr<Store>> open_store(const Location& location, OpenMode mode);

// The broker's role alone, read-only (part of onboard_registry_access, which the plugin links).
Result<std::unique_ptr<AccessStore>> open_access(const Location& location);

}  // namespace onboard::registry
