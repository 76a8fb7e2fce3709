// Reads the registry into Snapshots: once in full, then only what the change feed says changed.
// Runs on the plugin's own thread, never on the broker's.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "registry/access_store.h"
#include "registry/snapshot.h"

namespace onboard::registry {

// Everything, in one read transaction (AccessStore::read_access): the snapshot's change seq is
// exactly the registry the rows were read from.
Result<std::shared_ptr<const Snapshot>> load_snapshot(AccessStore& store);

// One device's or group's part of a snapshot (nullopt: no such device; a group that does not exist
// has no rules).
Result<std::optional<DeviceAccess>> load_device_access(AccessStore& store, std::string_view id);
Result<GroupAccess> load_group_access(AccessStore& store, std::string_view name);

struct Refresh {
  std::shared_ptr<const Snapshot> snapshot;
  // Usernames to disconnect now: devices no longer registered or active, or one of whose
  // certificates that was active is not any more (revoked, superseded, removed); and
  // claim_username() of each claim revoked or removed.
  std::vector<std::string> kicks;
  std::size_t devices_reloaded = 0;
  std::size_t groups_reloaded = 0;
  // Set instead of everything above when the change feed cannot say what changed: the registry's
  // change counter went back (a copy was restored over it in place), so whatever the snapshot
  // holds may differ from it anywhere. The caller reads everything again.
  std::optional<std::string> read_in_full_because;
};

// The devices and groups the change feed names after current.change_seq(), read with the feed in
// one transaction, applied with Snapshot::with_changes. nullopt when nothing changed.
Result<std::optional<Refresh>> refresh_snapshot(AccessStore& store, const Snapshot& current);

// claim_username() of every claim usable in `before` (active, its certificate active) that is not
// in `after`: its clients are to be disconnected.
std::vector<std::string> claim_kicks(const Snapshot& before, const Snapshot& after);

// Would a device that was `before` have to be disconnected now that it is `after` (nullptr: gone)?
bool must_disconnect(const SnapshotDevice& before, const DeviceAccess* after) noexcept;
bool must_disconnect(const SnapshotDevice& before, const SnapshotDevice* after) noexcept;
bool must_disconnect(const DeviceAccess& before, const DeviceAccess* after) noexcept;

}  // namespace onboard::registry
