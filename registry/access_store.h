// The broker's role of the registry's storage: the one read the plugin and the snapshot loader
// make. A store that only the broker uses implements this alone (sqlite_access.h opens one
// read-only); the full Store (store.h) is this role plus the ones onboardctl and the REST server
// use, so that a new backend can serve the broker before it serves anything else.
//
// The part of the Store contract (store.h) that applies here: no exception escapes; failures are
// Result errors with a message safe to show an operator (Errc::io for disk, permission and lock
// problems, Errc::corrupt for a damaged or foreign file or a value the schema forbids). An object
// belongs to one thread at a time.
#pragma once

#include "core/error.h"
#include "registry/access.h"

namespace onboard::registry {

class AccessStore {
 public:
  virtual ~AccessStore() = default;

  // What the broker decides from, read in ONE read transaction so that the change seq and the
  // data agree: everything (a few set-based reads, never one query per device), the listed
  // devices and groups, or those the change feed names after query.after_seq (then
  // change_seq == after_seq means nothing changed). See AccessData for what comes back.
  virtual Result<AccessData> read_access(const AccessQuery& query) = 0;
};

}  // namespace onboard::registry
