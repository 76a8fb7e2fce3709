#include "registry/snapshot_loader.h"

#include <algorithm>

namespace onboard::registry {

namespace {

bool same_fingerprint(const SnapshotCertificate& a, const CertificateAccess& b) {
  return a.has_fingerprint(b.sha256_fingerprint);
}
bool same_fingerprint(const SnapshotCertificate& a, const SnapshotCertificate& b) {
  return a.same_fingerprint(b);
}
CertificateStatus status_of(const CertificateAccess& c) { return c.status; }
CertificateStatus status_of(const SnapshotCertificate& c) { return c.status(); }
DeviceStatus status_of(const DeviceAccess& d) { return d.status; }
DeviceStatus status_of(const SnapshotDevice& d) { return d.status(); }
std::span<const CertificateAccess> certificates_of(const DeviceAccess& d) { return d.certificates; }
std::span<const SnapshotCertificate> certificates_of(const SnapshotDevice& d) {
  return d.certificates();
}

bool same_fingerprint(const CertificateAccess& a, const CertificateAccess& b) {
  return a.sha256_fingerprint == b.sha256_fingerprint;
}

template <class Before, class After>
bool disconnects(const Before& before, const After* after) noexcept {
  if (after == nullptr || status_of(*after) != DeviceStatus::active) return true;
  const auto now = certificates_of(*after);
  for (const auto& old_cert : certificates_of(before)) {
    if (status_of(old_cert) != CertificateStatus::active) continue;
    auto still = std::find_if(now.begin(), now.end(),
                              [&](const auto& c) { return same_fingerprint(old_cert, c); });
    if (still == now.end() || status_of(*still) != CertificateStatus::active) return true;
  }
  return false;
}

}  // namespace

bool must_disconnect(const SnapshotDevice& before, const DeviceAccess* after) noexcept {
  return disconnects(before, after);
}

bool must_disconnect(const SnapshotDevice& before, const SnapshotDevice* after) noexcept {
  return disconnects(before, after);
}

bool must_disconnect(const DeviceAccess& before, const DeviceAccess* after) noexcept {
  return disconnects(before, after);
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
    const SnapshotDevice* before = current.find_device(device.id);
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
