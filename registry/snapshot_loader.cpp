#include "registry/snapshot_loader.h"

#include <algorithm>

namespace onboard::registry {

bool must_disconnect(const DeviceAccess& before, const DeviceAccess* after) noexcept {
  if (after == nullptr || after->status != DeviceStatus::active) return true;
  for (const auto& old_cert : before.certificates) {
    if (old_cert.status != CertificateStatus::active) continue;
    auto still = std::find_if(
        after->certificates.begin(), after->certificates.end(),
        [&](const auto& c) { return c.sha256_fingerprint == old_cert.sha256_fingerprint; });
    if (still == after->certificates.end() || still->status != CertificateStatus::active)
      return true;
  }
  return false;
}

std::vector<std::string> claim_kicks(const Snapshot& before, const Snapshot& after) {
  auto usable = [](const ClaimAccess& c) {
    return c.status == ClaimStatus::active && c.certificate_status == CertificateStatus::active;
  };
  std::vector<std::string> kicks;
  before.for_each_claim([&](const ClaimEntry& was) {
    if (!usable(was.access)) return;
    const ClaimEntry* now = after.find_claim(was.access.name);
    if (now == nullptr || !usable(now->access) ||
        now->access.certificate_sha256 != was.access.certificate_sha256) {
      kicks.push_back(claim_username(was.access.name));
    }
  });
  return kicks;
}

Result<std::optional<DeviceAccess>> load_device_access(AccessStore& store, std::string_view id) {
  ONBOARD_TRY(auto data, store.read_access(AccessQuery::listed({std::string(id)}, {})));
  if (data.devices.empty()) return std::optional<DeviceAccess>();
  return std::optional<DeviceAccess>(std::move(data.devices.front()));
}

Result<GroupAccess> load_group_access(AccessStore& store, std::string_view name) {
  ONBOARD_TRY(auto data, store.read_access(AccessQuery::listed({}, {std::string(name)})));
  if (data.groups.empty())
    return GroupAccess{std::string(name), {}};  // not expected: see AccessData
  return std::move(data.groups.front());
}

Result<std::shared_ptr<const Snapshot>> load_snapshot(AccessStore& store) {
  ONBOARD_TRY(auto data, store.read_access(AccessQuery::everything()));
  auto snapshot = Snapshot::build(std::move(data.devices), std::move(data.groups), data.change_seq);
  if (data.claims) return snapshot->with_claims(std::move(*data.claims));
  return snapshot;
}

Result<std::optional<Refresh>> refresh_snapshot(AccessStore& store, const Snapshot& current) {
  ONBOARD_TRY(auto data, store.read_access(AccessQuery::changed_since(current.change_seq())));
  // The seq and the rows come from one read transaction: nothing committed in between is lost or
  // half seen, and whatever commits after is the next refresh's.
  if (data.change_seq < current.change_seq()) {
    Refresh rewound;
    rewound.read_in_full_because =
        "its change counter went back from " + std::to_string(current.change_seq()) + " to " +
        std::to_string(data.change_seq) + " (an older copy put in its place?)";
    return std::optional<Refresh>(std::move(rewound));
  }
  if (data.change_seq == current.change_seq()) return std::optional<Refresh>();

  Refresh refresh;
  for (const auto& device : data.devices) {
    const DeviceAccess* before = current.find_device(device.id);
    if (before != nullptr && must_disconnect(*before, &device)) refresh.kicks.push_back(device.id);
  }
  for (const auto& id : data.missing_devices) {
    if (current.find_device(id) != nullptr) refresh.kicks.push_back(id);
  }
  refresh.devices_reloaded = data.devices.size() + data.missing_devices.size();
  refresh.groups_reloaded = data.groups.size();
  refresh.snapshot = current.with_changes(std::move(data.devices), data.missing_devices,
                                          std::move(data.groups), data.change_seq);
  if (data.claims) {
    refresh.snapshot = refresh.snapshot->with_claims(std::move(*data.claims));
    auto kicks = claim_kicks(current, *refresh.snapshot);
    refresh.kicks.insert(refresh.kicks.end(), kicks.begin(), kicks.end());
  }
  return std::optional<Refresh>(std::move(refresh));
}

}  // namespace onboard::registry
