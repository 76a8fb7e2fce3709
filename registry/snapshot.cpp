#include "registry/snapshot.h"

#include <array>

#include "core/identity.h"

namespace onboard::registry {
namespace {

const CertificateAccess* certificate_of(const DeviceAccess& device,
                                        std::string_view fingerprint) noexcept {
  for (const auto& cert : device.certificates) {
    if (cert.sha256_fingerprint == fingerprint) return &cert;
  }
  return nullptr;
}

// Puts `device` under `key`, a view into `device` itself, replacing any entry of that key whole:
// assigning only the value would leave the old key viewing a device that may be freed.
// Returns whether the key is new.
template <class Index>
bool put(Index& index, std::string_view key, const std::shared_ptr<const DeviceAccess>& device) {
  auto [it, inserted] = index.try_emplace(key, device);
  if (!inserted) {
    index.erase(it);
    index.emplace(key, device);
  }
  return inserted;
}

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

std::shared_ptr<const Snapshot> Snapshot::build(std::vector<DeviceAccess> devices,
                                                std::vector<GroupAccess> groups,
                                                std::int64_t change_seq) {
  auto snapshot = std::make_shared<Snapshot>();
  std::array<std::shared_ptr<DeviceShard>, kShards> device_shards;
  std::array<std::shared_ptr<CertificateShard>, kShards> cert_shards;
  for (std::size_t i = 0; i < kShards; ++i) {
    device_shards[i] = std::make_shared<DeviceShard>();
    cert_shards[i] = std::make_shared<CertificateShard>();
    // Sized up front: growing them by rehashing made the build three times slower at a million
    // devices (bench/registry_bench.cpp).
    device_shards[i]->reserve(devices.size() / kShards + 1);
    cert_shards[i]->reserve(devices.size() / kShards + 1);
  }
  snapshot->patterns_ = std::make_shared<acl::PatternPool>();
  acl::PatternPool::Session patterns(*snapshot->patterns_);
  for (auto& device : devices) {
    intern_rules(device.rules, patterns);
    auto entry = std::make_shared<const DeviceAccess>(std::move(device));
    for (const auto& cert : entry->certificates) {
      put(*cert_shards[shard_of(cert.sha256_fingerprint)], cert.sha256_fingerprint, entry);
    }
    if (put(*device_shards[shard_of(entry->id)], entry->id, entry)) ++snapshot->device_count_;
  }
  for (std::size_t i = 0; i < kShards; ++i) {
    snapshot->devices_[i] = std::move(device_shards[i]);
    snapshot->certificates_[i] = std::move(cert_shards[i]);
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
  std::array<std::shared_ptr<DeviceShard>, kShards> device_copies;
  std::array<std::shared_ptr<CertificateShard>, kShards> cert_copies;
  auto device_shard = [&](std::string_view key) -> DeviceShard& {
    std::size_t i = shard_of(key);
    if (!device_copies[i]) {
      device_copies[i] = std::make_shared<DeviceShard>(*devices_[i]);
      next->devices_[i] = device_copies[i];
    }
    return *device_copies[i];
  };
  auto cert_shard = [&](std::string_view key) -> CertificateShard& {
    std::size_t i = shard_of(key);
    if (!cert_copies[i]) {
      cert_copies[i] = std::make_shared<CertificateShard>(*certificates_[i]);
      next->certificates_[i] = cert_copies[i];
    }
    return *cert_copies[i];
  };
  auto drop = [&](std::string_view id) {
    auto& shard = device_shard(id);
    auto it = shard.find(id);
    if (it == shard.end()) return;
    for (const auto& cert : it->second->certificates) {
      auto& certs = cert_shard(cert.sha256_fingerprint);
      auto owner = certs.find(cert.sha256_fingerprint);
      if (owner != certs.end() && owner->second == it->second) certs.erase(owner);
    }
    shard.erase(it);
    --next->device_count_;
  };

  acl::PatternPool::Session patterns(*patterns_);
  for (const auto& id : removed) drop(id);
  for (auto& device : devices) {
    drop(device.id);
    intern_rules(device.rules, patterns);
    auto entry = std::make_shared<const DeviceAccess>(std::move(device));
    for (const auto& cert : entry->certificates)
      put(cert_shard(cert.sha256_fingerprint), cert.sha256_fingerprint, entry);
    device_shard(entry->id).emplace(entry->id, entry);
    ++next->device_count_;
  }
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
  const auto& shard = *devices_[shard_of(id)];
  auto it = shard.find(id);
  return it == shard.end() ? nullptr : it->second.get();
}

std::optional<Snapshot::CertificateOwner> Snapshot::find_certificate(
    std::string_view fingerprint) const noexcept {
  const auto& shard = *certificates_[shard_of(fingerprint)];
  auto it = shard.find(fingerprint);
  if (it == shard.end()) return std::nullopt;
  const CertificateAccess* cert = certificate_of(*it->second, fingerprint);
  if (cert == nullptr) return std::nullopt;
  return CertificateOwner{it->second.get(), cert};
}

const GroupAccess* Snapshot::find_group(std::string_view name) const noexcept {
  auto it = groups_->find(name);
  return it == groups_->end() ? nullptr : it->second.get();
}

std::string claim_username(std::string_view claim_name) {
  return std::string(kClaimUsernamePrefix) + std::string(claim_name);
}

bool claim_topic_allowed(std::string_view client_id, acl::Access access,
                         std::string_view topic) noexcept {
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
      return leaf == "csr";
    case acl::kSubscribe:
      return leaf == "+" || leaf == "accepted" || leaf == "rejected";
    case acl::kRead:
      return leaf == "accepted" || leaf == "rejected";
    default:
      return false;
  }
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
