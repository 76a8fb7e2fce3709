// The broker's role on a PostgreSQL registry: what it decides from (AccessStore), and waiting for
// the notification every committed change sends (pg_database.h), so that a broker learns of a
// revocation at once without polling the database.
#pragma once

#include <chrono>
#include <memory>

#include "core/error.h"
#include "registry/access_store.h"
#include "registry/location.h"

namespace onboard::registry {

class PgAccessStore : public AccessStore {
 public:
  // Waits up to `timeout` for a change notification: true when one arrived (or the connection was
  // made anew, after which changes may have been missed: read the feed either way). Errc::io when
  // the database cannot be reached; the next call connects again.
  virtual Result<bool> wait_for_change(std::chrono::milliseconds timeout) = 0;
};

// Connects read-only (the broker's role may only read) and LISTENs. Every statement and the
// connection itself give up after `timeout`. Errors as pg::connect's (pg_database.h).
Result<std::unique_ptr<PgAccessStore>> open_pg_access(const Location& location,
                                                      std::chrono::milliseconds timeout);

}  // namespace onboard::registry
