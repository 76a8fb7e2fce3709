#include "registry/snapshot_loader.h"

#include <algorithm>
#include <set>

namespace onboard::registry {
namespace {

Result<std::vector<acl::Rule>> rules_of(Store& store, SubjectKind kind, std::string_view name) {
  ONBOARD_TRY(auto records, store.rules_for_subject(kind, name));
  std::vector<acl::Rule> rules;
  rules.reserve(records.size());
  for (const auto& record : records) rules.push_back(to_acl_rule(record));
  return rules;
}

// nullopt when the device does not exist (any more).
Result<std::optional<DeviceAccess>> load_device(Store& store, const Device& device) {
  DeviceAccess access;
  access.id = device.id;
  access.status = device.status;
  access.type = device.type;
  ONBOARD_TRY(access.rules, rules_of(store, SubjectKind::device, device.id));
  ONBOARD_TRY(auto certs, store.certificates_of(device.id));
  for (const auto& cert : certs) {
    access.certificates.push_back(CertificateAccess{cert.sha256_fingerprint, cert.serial_hex, cert.status,
                                                    cert.not_before, cert.not_after});
  }
  return std::optional<DeviceAccess>(std::move(access));
}

Result<std::optional<DeviceAccess>> load_device(Store& store, std::string_view id) {
  auto device = store.get_device(id);
  if (!device.ok()) {
    if (device.error().code == Errc::not_found) return std::optional<DeviceAccess>();
    return std::move(device).error();
  }
  return load_device(store, device.value());
}

Result<GroupAccess> load_group(Store& store, std::string_view name) {
  GroupAccess group;
  group.name = std::string(name);
  ONBOARD_TRY(group.rules, rules_of(store, SubjectKind::group, name));
  return group;
}

}  // namespace

Result<std::optional<DeviceAccess>> load_device_access(Store& store, std::string_view id) {
  return load_device(store, id);
}
Result<GroupAccess> load_group_access(Store& store, std::string_view name) { return load_group(store, name); }

bool must_disconnect(const DeviceAccess& before, const DeviceAccess* after) noexcept {
  if (after == nullptr || after->status != DeviceStatus::active) return true;
  for (const auto& old_cert : before.certificates) {
    if (old_cert.status != CertificateStatus::active) continue;
    auto still = std::find_if(after->certificates.begin(), after->certificates.end(), [&](const auto& c) {
      return c.sha256_fingerprint == old_cert.sha256_fingerprint;
    });
    if (still == after->certificates.end() || still->status != CertificateStatus::active) return true;
  }
  return false;
}

Result<std::shared_ptr<const Snapshot>> load_snapshot(Store& store) {
  // Read the seq first: anything committed after it is picked up again by the next refresh.
  ONBOARD_TRY(std::int64_t seq, store.change_seq());
  DeviceFilter all;
  all.limit = 0;
  ONBOARD_TRY(auto devices, store.list_devices(all));
  std::vector<DeviceAccess> access;
  access.reserve(devices.size());
  for (const auto& device : devices) {
    ONBOARD_TRY(auto loaded, load_device(store, device));
    if (loaded) access.push_back(std::move(*loaded));
  }
  ONBOARD_TRY(auto groups, store.list_groups());
  std::vector<GroupAccess> group_access;
  for (const auto& group : groups) {
    ONBOARD_TRY(auto loaded, load_group(store, group.name));
    group_access.push_back(std::move(loaded));
  }
  return Snapshot::build(std::move(access), std::move(group_access), seq);
}

Result<std::optional<Refresh>> refresh_snapshot(Store& store, const Snapshot& current) {
  ONBOARD_TRY(auto changes, store.changes_since(current.change_seq()));
  if (changes.empty()) return std::optional<Refresh>();
  std::set<std::string, std::less<>> device_ids, group_names;
  std::int64_t seq = current.change_seq();
  for (const auto& change : changes) {
    seq = std::max(seq, change.seq);
    if (change.kind == ChangeKind::device) device_ids.insert(change.subject);
    if (change.kind == ChangeKind::group) group_names.insert(change.subject);
  }

  Refresh refresh;
  std::vector<DeviceAccess> devices;
  std::vector<std::string> removed;
  for (const auto& id : device_ids) {
    ONBOARD_TRY(auto loaded, load_device(store, id));
    const DeviceAccess* before = current.find_device(id);
    if (before != nullptr && must_disconnect(*before, loaded ? &*loaded : nullptr)) refresh.kicks.push_back(id);
    if (loaded) devices.push_back(std::move(*loaded));
    else removed.push_back(id);
  }
  std::vector<GroupAccess> groups;
  for (const auto& name : group_names) {
    ONBOARD_TRY(auto loaded, load_group(store, name));
    groups.push_back(std::move(loaded));
  }
  refresh.devices_reloaded = device_ids.size();
  refresh.groups_reloaded = groups.size();
  refresh.snapshot = current.with_changes(std::move(devices), removed, std::move(groups), seq);
  return std::optional<Refresh>(std::move(refresh));
}

}  // namespace onboard::registry
