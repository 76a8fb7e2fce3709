#include "registry/snapshot.h"

#include <algorithm>
#include <array>

#include "core/identity.h"

namespace onboard::registry {
namespace {

// Gives every rule the pool's node for its pattern, so equal patterns are held once, and trims the
// rule list to its size: read row by row, ten rules had room for sixteen (400 bytes instead of 256
// per device).
void intern_rules(std::vector<acl::Rule>& rules, acl::PatternPool::Session& patterns) {
  for (auto& rule : rules) rule.pattern = patterns.intern(rule.pattern);
  rules.shrink_to_fit();
}

}  // namespace

std::string_view to_string(ConnectReason reason) noexcept {
  switch (reason) {
    case ConnectReason::accepted:
      return "accepted";
    case ConnectReason::registry_stale:
      return "registry not read for too long";
    case ConnectReason::no_certificate:
      return "no client certificate";
    case ConnectReason::unknown_certificate:
      return "certificate not in the registry";
    case ConnectReason::certificate_revoked:
      return "certificate revoked";
    case ConnectReason::certificate_not_yet_valid:
      return "certificate not yet valid";
    case ConnectReason::certificate_expired:
      return "certificate expired";
    case ConnectReason::common_name_mismatch:
      return "certificate CN is not its registered device";
    case ConnectReason::device_disabled:
      return "device disabled";
    case ConnectReason::device_revoked:
      return "device revoked";
    case ConnectReason::client_id_mismatch:
      return "client id is not the device id";
    case ConnectReason::claim_revoked:
      return "claim revoked";
    case ConnectReason::claim_expired:
      return "claim expired";
    case ConnectReason::claim_used_up:
      return "claim used up (its quota is spent)";
    case ConnectReason::claim_id_not_allowed:
      return "client id not allowed by the claim's id pattern";
    case ConnectReason::claim_id_registered:
      return "client id is a registered device's";
    case ConnectReason::claim_rate_limited:
      return "too many connects with this claim (rate limit)";
  }
  return "refused";
}

namespace {

// The capacity for `n` entries: at most 80% full, so that probes stay short and always end.
std::size_t capacity_for(std::size_t n) { return n == 0 ? 0 : n + n / 4 + 1; }

}  // namespace

Snapshot::DeviceShard Snapshot::make_device_shard(
    std::span<const std::shared_ptr<const DeviceAccess>> list,
    std::vector<const DeviceAccess*>* replaced) {
  DeviceShard shard;
  shard.slots.resize(capacity_for(list.size()));
  for (const auto& device : list) {
    const std::size_t capacity = shard.slots.size();
    for (std::size_t i = home_slot(Hash{}(device->id), capacity);;
         i = i + 1 == capacity ? 0 : i + 1) {
      auto& slot = shard.slots[i];
      if (!slot) {
        slot = device;
        ++shard.size;
        break;
      }
      if (slot->id == device->id) {
        if (replaced != nullptr) replaced->push_back(slot.get());
        slot = device;
        break;
      }
    }
  }
  return shard;
}

Snapshot::CertificateShard Snapshot::make_certificate_shard(std::span<const CertificateSlot> list) {
  CertificateShard shard;
  shard.slots.resize(capacity_for(list.size()));
  for (const auto& entry : list) {
    const std::size_t capacity = shard.slots.size();
    const std::string_view key = entry.certificate->sha256_fingerprint;
    for (std::size_t i = home_slot(Hash{}(key), capacity);; i = i + 1 == capacity ? 0 : i + 1) {
      auto& slot = shard.slots[i];
      if (slot.device == nullptr) {
        slot = entry;
        ++shard.size;
        break;
      }
      if (slot.certificate->sha256_fingerprint == key) {
        slot = entry;
        break;
      }
    }
  }
  return shard;
}

std::shared_ptr<const Snapshot> Snapshot::build(std::vector<DeviceAccess> devices,
                                                std::vector<GroupAccess> groups,
                                                std::int64_t change_seq) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->patterns_ = std::make_shared<acl::PatternPool>();
  acl::PatternPool::Session patterns(*snapshot->patterns_);

  // Every device in input order, and the lists of each shard.
  std::vector<std::shared_ptr<const DeviceAccess>> entries;
  entries.reserve(devices.size());
  std::vector<std::vector<std::shared_ptr<const DeviceAccess>>> lists(kShards);
  for (auto& list : lists)
    list.reserve(devices.size() / kShards + devices.size() / kShards / 4 + 1);
  for (auto& device : devices) {
    intern_rules(device.rules, patterns);
    entries.push_back(std::make_shared<const DeviceAccess>(std::move(device)));
    lists[shard_of(entries.back()->id)].push_back(entries.back());
  }
  devices = {};
  // Of two devices with one id the last is kept, and only kept devices' certificates are indexed.
  std::vector<const DeviceAccess*> replaced;
  for (std::size_t i = 0; i < kShards; ++i) {
    auto shard = std::make_shared<DeviceShard>(make_device_shard(lists[i], &replaced));
    snapshot->device_count_ += shard->size;
    snapshot->devices_[i] = std::move(shard);
    lists[i] = {};
  }
  std::sort(replaced.begin(), replaced.end());
  std::vector<std::vector<CertificateSlot>> cert_lists(kShards);
  for (auto& list : cert_lists)
    list.reserve(entries.size() / kShards + entries.size() / kShards / 4 + 1);
  for (const auto& device : entries) {
    if (!replaced.empty() && std::binary_search(replaced.begin(), replaced.end(), device.get()))
      continue;
    for (const auto& cert : device->certificates)
      cert_lists[shard_of(cert.sha256_fingerprint)].push_back({device.get(), &cert});
  }
  for (std::size_t i = 0; i < kShards; ++i) {
    snapshot->certificates_[i] =
        std::make_shared<CertificateShard>(make_certificate_shard(cert_lists[i]));
    cert_lists[i] = {};
  }

  auto group_map = std::make_shared<Groups>();
  for (auto& group : groups) {
    intern_rules(group.rules, patterns);
    std::string name = group.name;
    (*group_map)[name] = std::make_shared<const GroupAccess>(std::move(group));
  }
  snapshot->groups_ = std::move(group_map);
  snapshot->default_group_ = snapshot->find_group(kDefaultGroup);
  snapshot->change_seq_ = change_seq;
  return snapshot;
}

std::shared_ptr<const Snapshot> Snapshot::with_changes(std::vector<DeviceAccess> devices,
                                                       std::span<const std::string> removed,
                                                       std::vector<GroupAccess> groups,
                                                       std::int64_t change_seq) const {
  auto next = std::make_shared<Snapshot>(*this);  // shares every shard
  // The shards touched, as plain lists of their entries; made into tables at the end. A shard
  // holds about 250 devices at a million, so a linear search in its list costs little.
  std::unordered_map<std::size_t, std::vector<std::shared_ptr<const DeviceAccess>>> device_lists;
  std::unordered_map<std::size_t, std::vector<CertificateSlot>> cert_lists;
  auto device_list = [&](std::string_view id) -> auto& {
    const std::size_t i = shard_of(id);
    auto [it, fresh] = device_lists.try_emplace(i);
    if (fresh) {
      it->second.reserve(devices_[i]->size + 1);
      for (const auto& device : devices_[i]->slots) {
        if (device) it->second.push_back(device);
      }
    }
    return it->second;
  };
  auto cert_list = [&](std::string_view fingerprint) -> auto& {
    const std::size_t i = shard_of(fingerprint);
    auto [it, fresh] = cert_lists.try_emplace(i);
    if (fresh) {
      it->second.reserve(certificates_[i]->size + 1);
      for (const auto& slot : certificates_[i]->slots) {
        if (slot.device != nullptr) it->second.push_back(slot);
      }
    }
    return it->second;
  };
  auto drop = [&](std::string_view id) {
    if (find_device(id) == nullptr && !device_lists.contains(shard_of(id))) return;
    auto& list = device_list(id);
    auto it = std::find_if(list.begin(), list.end(), [&](const auto& d) { return d->id == id; });
    if (it == list.end()) return;
    for (const auto& cert : (*it)->certificates) {
      auto& certs = cert_list(cert.sha256_fingerprint);
      std::erase_if(certs, [&](const CertificateSlot& slot) {
        return slot.device == it->get() &&
               slot.certificate->sha256_fingerprint == cert.sha256_fingerprint;
      });
    }
    *it = std::move(list.back());
    list.pop_back();
    --next->device_count_;
  };

  acl::PatternPool::Session patterns(*patterns_);
  for (const auto& id : removed) drop(id);
  for (auto& device : devices) {
    drop(device.id);
    intern_rules(device.rules, patterns);
    auto entry = std::make_shared<const DeviceAccess>(std::move(device));
    for (const auto& cert : entry->certificates) {
      auto& certs = cert_list(cert.sha256_fingerprint);
      // As in a table: the certificate's fingerprint now names this device, whichever it named.
      std::erase_if(certs, [&](const CertificateSlot& slot) {
        return slot.certificate->sha256_fingerprint == cert.sha256_fingerprint;
      });
      certs.push_back({entry.get(), &cert});
    }
    device_list(entry->id).push_back(std::move(entry));
    ++next->device_count_;
  }
  for (const auto& [i, list] : device_lists)
    next->devices_[i] = std::make_shared<DeviceShard>(make_device_shard(list, nullptr));
  for (const auto& [i, list] : cert_lists)
    next->certificates_[i] = std::make_shared<CertificateShard>(make_certificate_shard(list));

  if (!groups.empty()) {
    auto group_map = std::make_shared<Groups>(*groups_);
    for (auto& group : groups) {
      intern_rules(group.rules, patterns);
      std::string name = group.name;
      (*group_map)[name] = std::make_shared<const GroupAccess>(std::move(group));
    }
    next->groups_ = std::move(group_map);
    next->default_group_ = next->find_group(kDefaultGroup);
  }
  next->change_seq_ = change_seq;
  return next;
}

const DeviceAccess* Snapshot::find_device(std::string_view id) const noexcept {
  const std::size_t hash = Hash{}(id);
  const DeviceShard& shard = *devices_[hash % kShards];
  const std::size_t capacity = shard.slots.size();
  if (capacity == 0) return nullptr;
  for (std::size_t i = home_slot(hash, capacity);; i = i + 1 == capacity ? 0 : i + 1) {
    const DeviceAccess* device = shard.slots[i].get();
    if (device == nullptr || device->id == id) return device;
  }
}

std::optional<Snapshot::CertificateOwner> Snapshot::find_certificate(
    std::string_view fingerprint) const noexcept {
  const std::size_t hash = Hash{}(fingerprint);
  const CertificateShard& shard = *certificates_[hash % kShards];
  const std::size_t capacity = shard.slots.size();
  if (capacity == 0) return std::nullopt;
  for (std::size_t i = home_slot(hash, capacity);; i = i + 1 == capacity ? 0 : i + 1) {
    const CertificateSlot& slot = shard.slots[i];
    if (slot.device == nullptr) return std::nullopt;
    if (slot.certificate->sha256_fingerprint == fingerprint)
      return CertificateOwner{slot.device, slot.certificate};
  }
}

const GroupAccess* Snapshot::find_group(std::string_view name) const noexcept {
  auto it = groups_->find(name);
  return it == groups_->end() ? nullptr : it->second.get();
}

std::string claim_username(std::string_view claim_name) {
  return std::string(kClaimUsernamePrefix) + std::string(claim_name);
}

namespace {

// `$provision/<client id>/<leaf>`: publish only `request`; subscribe `+`, `accepted`, `rejected`;
// receive `accepted`, `rejected`.
bool provision_topic_allowed(std::string_view client_id, acl::Access access, std::string_view topic,
                             std::string_view request) noexcept {
  constexpr std::string_view kRoot = "$provision/";
  if (client_id.empty() || !topic.starts_with(kRoot)) return false;
  topic.remove_prefix(kRoot.size());
  if (!topic.starts_with(client_id) || topic.size() <= client_id.size() ||
      topic[client_id.size()] != '/') {
    return false;
  }
  const std::string_view leaf = topic.substr(client_id.size() + 1);
  switch (access) {
    case acl::kPublish:
      return leaf == request;
    case acl::kSubscribe:
      return leaf == "+" || leaf == "accepted" || leaf == "rejected";
    case acl::kRead:
      return leaf == "accepted" || leaf == "rejected";
    default:
      return false;
  }
}

}  // namespace

bool claim_topic_allowed(std::string_view client_id, acl::Access access,
                         std::string_view topic) noexcept {
  return provision_topic_allowed(client_id, access, topic, "csr");
}

bool renewal_topic_allowed(std::string_view client_id, acl::Access access,
                           std::string_view topic) noexcept {
  return provision_topic_allowed(client_id, access, topic, "renew");
}

const ClaimEntry* Snapshot::find_claim_by_certificate(
    std::string_view sha256_fingerprint) const noexcept {
  if (!claims_) return nullptr;
  auto it = claims_->by_certificate.find(sha256_fingerprint);
  return it == claims_->by_certificate.end() ? nullptr : &claims_->entries[it->second];
}

const ClaimEntry* Snapshot::find_claim(std::string_view name) const noexcept {
  if (!claims_) return nullptr;
  auto it = claims_->by_name.find(name);
  return it == claims_->by_name.end() ? nullptr : &claims_->entries[it->second];
}

std::shared_ptr<const Snapshot> Snapshot::with_claims(std::vector<ClaimAccess> claims) const {
  auto next = std::make_shared<Snapshot>(*this);  // shares every shard
  auto table = std::make_shared<Claims>();
  table->entries.reserve(claims.size());
  for (auto& claim : claims) {
    ClaimEntry entry{std::move(claim), std::nullopt};
    if (auto pattern = IdPattern::compile(entry.access.id_pattern); pattern.ok())
      entry.pattern = std::move(pattern).value();
    table->by_certificate.emplace(entry.access.certificate_sha256, table->entries.size());
    table->by_name.emplace(entry.access.name, table->entries.size());
    table->entries.push_back(std::move(entry));
  }
  next->claims_ = std::move(table);
  return next;
}

ConnectReason Snapshot::claim_standing(const ClaimEntry& claim, UnixTime now) const noexcept {
  const ClaimAccess& c = claim.access;
  if (c.status != ClaimStatus::active || c.certificate_status != CertificateStatus::active)
    return ConnectReason::claim_revoked;
  if (now < c.not_before) return ConnectReason::certificate_not_yet_valid;
  if (now > c.not_after) return ConnectReason::claim_expired;
  return ConnectReason::accepted;
}

ConnectVerdict Snapshot::connect_verdict(const ConnectRequest& request, UnixTime now,
                                         bool stale) const noexcept {
  if (stale) return {ConnectReason::registry_stale, {}, {}};
  if (request.sha256_fingerprint.empty()) return {ConnectReason::no_certificate, {}, {}};
  auto owner = find_certificate(request.sha256_fingerprint);
  if (!owner) {
    const ClaimEntry* claim = find_claim_by_certificate(request.sha256_fingerprint);
    if (claim == nullptr) return {ConnectReason::unknown_certificate, {}, {}};
    const std::string_view name = claim->access.name;
    if (auto standing = claim_standing(*claim, now); standing != ConnectReason::accepted)
      return {standing, {}, name};
    if (claim->access.quota_used >= claim->access.quota)
      return {ConnectReason::claim_used_up, {}, name};
    if (!is_valid_device_id(request.client_id) || !claim->pattern ||
        !claim->pattern->matches(request.client_id)) {
      return {ConnectReason::claim_id_not_allowed, {}, name};
    }
    if (find_device(request.client_id) != nullptr)
      return {ConnectReason::claim_id_registered, {}, name};
    return {ConnectReason::accepted, {}, name};
  }
  const DeviceAccess& device = *owner->device;
  const CertificateAccess& cert = *owner->certificate;
  if (cert.status != CertificateStatus::active)
    return {ConnectReason::certificate_revoked, device.id, {}};
  if (now < cert.not_before) return {ConnectReason::certificate_not_yet_valid, device.id, {}};
  if (now > cert.not_after) return {ConnectReason::certificate_expired, device.id, {}};
  if (request.common_name != device.id) return {ConnectReason::common_name_mismatch, device.id, {}};
  if (device.status == DeviceStatus::disabled)
    return {ConnectReason::device_disabled, device.id, {}};
  if (device.status == DeviceStatus::revoked) return {ConnectReason::device_revoked, device.id, {}};
  if (request.client_id != device.id) return {ConnectReason::client_id_mismatch, device.id, {}};
  return {ConnectReason::accepted, device.id, {}};
}

acl::Evaluation check_device_access(const DeviceAccess& device, const GroupAccess* type_group,
                                    const GroupAccess* default_group, std::string_view username,
                                    std::string_view client_id, acl::Access access,
                                    std::string_view topic_or_filter) noexcept {
  if (device.status != DeviceStatus::active) return acl::Evaluation{acl::Decision::deny, nullptr};
  std::array<std::span<const acl::Rule>, 3> sets;
  std::size_t n = 0;
  sets[n++] = device.rules;
  if (type_group != nullptr) sets[n++] = type_group->rules;
  if (default_group != nullptr) sets[n++] = default_group->rules;
  acl::Substitutions subs{device.id, client_id, username};
  return acl::evaluate(std::span<const std::span<const acl::Rule>>(sets.data(), n), access,
                       topic_or_filter, subs);
}

acl::Evaluation Snapshot::check_access(std::string_view username, std::string_view client_id,
                                       acl::Access access,
                                       std::string_view topic_or_filter) const noexcept {
  const DeviceAccess* device = find_device(username);
  if (device == nullptr) return acl::Evaluation{acl::Decision::deny, nullptr};
  const GroupAccess* type_group = device->type.empty() ? nullptr : find_group(device->type);
  return check_device_access(*device, type_group, default_group_, username, client_id, access,
                             topic_or_filter);
}

}  // namespace onboard::registry
