// The immutable picture of the registry that the broker plugin decides from. Built off the broker's
// thread, swapped in on its tick, read by every callback without locks or I/O.
//
// Devices and certificates are split into 4096 shards by hash, each an immutable flat table of
// tagged pointers. A change to a few devices rebuilds only the shards they live in (about 250
// slots each at a million devices) and shares every other shard with the previous snapshot; every
// device it did not change stays the same record at the same address. Each device is one compact
// record (SnapshotDevice, about 390 bytes with ten rules and a certificate). One change at a
// million devices costs about 0.1 ms of CPU on the watcher thread (bench/registry_bench.cpp,
// with_changes; docs/benchmarks.md).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "registry/access.h"
#include "registry/acl.h"
#include "registry/id_pattern.h"
#include "registry/model.h"

namespace onboard::registry {

// Why a connection was refused; `accepted` when it was not.
enum class ConnectReason {
  accepted,
  registry_stale,       // the plugin has not read the registry for too long
  no_certificate,       // the client presented none (should not pass TLS)
  unknown_certificate,  // signed by the CA but not in the registry
  certificate_revoked,
  certificate_not_yet_valid,
  certificate_expired,
  common_name_mismatch,  // the certificate's CN is not the device it is registered to
  device_disabled,
  device_revoked,
  client_id_mismatch,  // the MQTT client id is not the device id
  // A claim certificate (docs/provisioning.md):
  claim_revoked,         // the claim or its certificate is revoked
  claim_expired,         // after the claim's expiry
  claim_used_up,         // every unit of its quota is spent
  claim_id_not_allowed,  // the client id is no device id, or does not match the id pattern
  claim_id_registered,   // the client id is a registered device's
  claim_rate_limited,    // more connects with this claim than its rate allows (the plugin's)
};
std::string_view to_string(ConnectReason reason) noexcept;

struct ConnectRequest {
  std::string_view sha256_fingerprint;  // of the presented certificate; empty when there is none
  std::string_view common_name;         // its subject CN
  std::string_view client_id;           // the MQTT client id
};

struct ConnectVerdict {
  ConnectReason reason = ConnectReason::accepted;
  std::string_view device_id;  // the registered device, when the certificate is known
  // The claim, when the certificate is a claim's (then device_id is empty).
  std::string_view claim;
  bool accepted() const noexcept { return reason == ConnectReason::accepted; }
};

// A claim as the snapshot holds it: its id pattern compiled once, when the snapshot is built
// (nullopt when the stored pattern does not compile: every id is refused).
struct ClaimEntry {
  ClaimAccess access;
  std::optional<IdPattern> pattern;
};

// The username the plugin gives a client it accepted with claim `name`. ':' is in no device id,
// so no claim client ever has a device's rights, and revoking a claim can disconnect every client
// of it by this username.
inline constexpr std::string_view kClaimUsernamePrefix = "claim:";
std::string claim_username(std::string_view claim_name);

// Whether a client connected with a claim may do this, by topic alone (the claim's state is the
// caller's): publish exactly `$provision/<client id>/csr`; subscribe to `$provision/<client id>/+`,
// `.../accepted` or `.../rejected`; receive messages on those two topics. Nothing else.
bool claim_topic_allowed(std::string_view client_id, acl::Access access,
                         std::string_view topic_or_filter) noexcept;
// The same for a device connected with its own certificate (docs/provisioning.md, "Renewal"):
// publish exactly `$provision/<client id>/renew`; subscribe and receive as a claim client. The
// plugin decides every `$provision/...` topic of a device by this alone: its rules never open one.
bool renewal_topic_allowed(std::string_view client_id, acl::Access access,
                           std::string_view topic_or_filter) noexcept;

class SnapshotDevice;

// One certificate as a snapshot holds it, inside its device's record (SnapshotDevice): 56 bytes
// where a CertificateAccess and its two heap strings took about 220. A fingerprint of 64
// lower-case hex digits (every one the CA records: core/x509.cpp) is kept as its 32 bytes; any
// other text, and the serial, are kept in the record's text after the certificates, the serial as
// packed hex digits when it is upper-case hex (as the CA writes it), else as it is.
class SnapshotCertificate {
 public:
  SnapshotCertificate(const SnapshotCertificate&) = delete;
  SnapshotCertificate& operator=(const SnapshotCertificate&) = delete;

  CertificateStatus status() const noexcept { return static_cast<CertificateStatus>(status_); }
  UnixTime not_before() const noexcept { return not_before_; }
  UnixTime not_after() const noexcept { return not_after_; }
  // Is its fingerprint exactly this text (as CertificateAccess::sha256_fingerprint == text)?
  bool has_fingerprint(std::string_view sha256_fingerprint) const noexcept;
  bool same_fingerprint(const SnapshotCertificate& other) const noexcept;
  // The texts it was made from.
  std::string sha256_fingerprint() const;
  std::string serial_hex() const;
  // The device it is registered to (the record holding it).
  const SnapshotDevice& device() const noexcept;

 private:
  friend class SnapshotDevice;
  friend class Snapshot;
  static constexpr std::uint8_t kRawFingerprint = 1;  // fingerprint_ holds it; no text
  SnapshotCertificate() = default;
  // Where its serial's (and its fingerprint's, when not raw) text starts in the device's record.
  const unsigned char* text() const noexcept;

  UnixTime not_before_ = 0;
  UnixTime not_after_ = 0;
  std::array<std::uint8_t, 32> fingerprint_{};
  std::uint32_t back_ = 0;  // bytes from its device's record to this
  std::uint8_t status_ = 0;
  std::uint8_t flags_ = 0;
};

// One device as a snapshot holds it: ONE allocation holding a 16-byte header, its status byte, id
// and type (each text a LEB128 length and its bytes), its certificates (SnapshotCertificate, from
// the next 8-byte boundary), their texts (each serial, and a fingerprint kept as text), then its
// rules (acl::Rule, patterns from the snapshot's pool) from the next 8-byte boundary. Where
// DeviceAccess took a heap object, its shared_ptr block, a rule vector, a certificate vector and
// three heap strings. Counted by the snapshots' shards that hold it (an intrusive count, no
// shared_ptr block); immutable once made, so that every snapshot sharing it reads it without
// locks, and at the same address as long as it is not changed (with_changes keeps it).
class SnapshotDevice {
 public:
  SnapshotDevice(const SnapshotDevice&) = delete;
  SnapshotDevice& operator=(const SnapshotDevice&) = delete;

  // A record of `device`, its rules' patterns interned in `patterns`, held once by the caller.
  static const SnapshotDevice* make(const DeviceAccess& device,
                                    acl::PatternPool::Session& patterns);
  void hold() const noexcept { holders_.fetch_add(1, std::memory_order_relaxed); }
  // Frees the record when this was its last holder.
  void release() const noexcept;

  std::string_view id() const noexcept {
    const unsigned char* p = texts() + 1;
    const std::size_t size = read_size(p);
    return {reinterpret_cast<const char*>(p), size};
  }
  DeviceStatus status() const noexcept { return static_cast<DeviceStatus>(texts()[0]); }
  std::string_view type() const noexcept {
    const unsigned char* p = texts() + 1;
    p += read_size(p);
    const std::size_t size = read_size(p);
    return {reinterpret_cast<const char*>(p), size};
  }
  // Its own rules, sorted as DeviceAccess::rules.
  std::span<const acl::Rule> rules() const noexcept {
    return {reinterpret_cast<const acl::Rule*>(reinterpret_cast<const char*>(this) + rules_at_),
            rule_count_};
  }
  // Its certificates, in the order they were added.
  std::span<const SnapshotCertificate> certificates() const noexcept {
    const unsigned char* p = texts() + 1;
    p += read_size(p);  // the id
    p += read_size(p);  // the type
    const auto at = (static_cast<std::size_t>(p - texts()) + sizeof(SnapshotDevice) + 7) & ~7;
    return {reinterpret_cast<const SnapshotCertificate*>(reinterpret_cast<const char*>(this) + at),
            certificate_count_};
  }
  // The values it was made from.
  DeviceAccess to_access() const;
  // LEB128: seven bits a byte, low first, the high bit set on every byte but the last.
  static std::size_t read_size(const unsigned char*& p) noexcept {
    std::size_t size = 0;
    for (unsigned shift = 0;; shift += 7) {
      const unsigned char byte = *p++;
      size |= static_cast<std::size_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return size;
    }
  }

 private:
  friend class SnapshotCertificate;
  SnapshotDevice() = default;
  ~SnapshotDevice() = default;
  // The status byte, then the id and the type, right after the header: the connect check and a
  // device lookup read the same cache line as the header.
  const unsigned char* texts() const noexcept {
    return reinterpret_cast<const unsigned char*>(this + 1);
  }

  mutable std::atomic<std::uint32_t> holders_{1};
  std::uint32_t rule_count_ = 0;
  std::uint32_t certificate_count_ = 0;
  std::uint32_t rules_at_ = 0;  // bytes from the record's start to its rules
};
static_assert(sizeof(SnapshotDevice) == 16 && sizeof(SnapshotCertificate) == 56);

inline const SnapshotDevice& SnapshotCertificate::device() const noexcept {
  return *reinterpret_cast<const SnapshotDevice*>(reinterpret_cast<const char*>(this) - back_);
}
static_assert(alignof(acl::Rule) <= 8 && alignof(SnapshotCertificate) <= 8);

// The topic decision for one device, given its groups' rules (nullptr: the group has none). A
// device that is not active is denied everything; otherwise its own rules, its type group's and
// "default"'s are evaluated together by acl::evaluate. Allocates nothing. Snapshot::check_access
// and `onboardctl acl check` both decide through this.
acl::Evaluation check_device_access(const DeviceAccess& device, const GroupAccess* type_group,
                                    const GroupAccess* default_group, std::string_view username,
                                    std::string_view client_id, acl::Access access,
                                    std::string_view topic_or_filter) noexcept;
acl::Evaluation check_device_access(const SnapshotDevice& device, const GroupAccess* type_group,
                                    const GroupAccess* default_group, std::string_view username,
                                    std::string_view client_id, acl::Access access,
                                    std::string_view topic_or_filter) noexcept;

class Snapshot {
 public:
  static constexpr std::size_t kShards = 4096;

  // A snapshot of everything. Later snapshots are derived with with_changes().
  static std::shared_ptr<const Snapshot> build(std::vector<DeviceAccess> devices,
                                               std::vector<GroupAccess> groups,
                                               std::int64_t change_seq);

  // A new snapshot with these devices replaced (or added), `removed` devices dropped, these groups
  // replaced and the given change seq. Shares every untouched shard with *this.
  std::shared_ptr<const Snapshot> with_changes(std::vector<DeviceAccess> devices,
                                               std::span<const std::string> removed,
                                               std::vector<GroupAccess> groups,
                                               std::int64_t change_seq) const;

  const SnapshotDevice* find_device(std::string_view id) const noexcept;
  // The device a certificate is registered to, with the certificate's own record. Any text may be
  // asked for: one that is no fingerprint (a wrong length, not hex) is found only when a device
  // was registered with exactly that text.
  struct CertificateOwner {
    const SnapshotDevice* device;
    const SnapshotCertificate* certificate;
  };
  std::optional<CertificateOwner> find_certificate(
      std::string_view sha256_fingerprint) const noexcept;
  const GroupAccess* find_group(std::string_view name) const noexcept;
  // The claim of this certificate fingerprint, or of this name (nullptr: none).
  const ClaimEntry* find_claim_by_certificate(std::string_view sha256_fingerprint) const noexcept;
  const ClaimEntry* find_claim(std::string_view name) const noexcept;
  // A new snapshot with the claims replaced by these (every claim; they are few) and otherwise the
  // same, sharing every shard.
  std::shared_ptr<const Snapshot> with_claims(std::vector<ClaimAccess> claims) const;
  // Calls f(const ClaimEntry&) for every claim.
  template <class F>
  void for_each_claim(F&& f) const {
    if (!claims_) return;
    for (const auto& claim : claims_->entries) f(claim);
  }
  std::size_t claim_count() const noexcept { return claims_ ? claims_->entries.size() : 0; }

  // Calls f(const SnapshotDevice&) for every device, in no particular order.
  template <class F>
  void for_each_device(F&& f) const {
    for (const auto& shard : devices_) {
      for (const std::uintptr_t slot : shard->slots) {
        if (slot != 0) f(*device_in(slot));
      }
    }
  }
  // Calls f(const GroupAccess&) for every group, in no particular order.
  template <class F>
  void for_each_group(F&& f) const {
    if (!groups_) return;
    for (const auto& [name, group] : *groups_) f(*group);
  }

  std::int64_t change_seq() const noexcept { return change_seq_; }
  // Names this snapshot's set of groups: equal for two snapshots only when they share the very
  // same group objects (find_group returns the same pointers), as with_changes without group
  // changes and with_claims leave them. Never reused within a process, so, unlike an address, an
  // equal value cannot be a later set of groups made where an earlier one was freed.
  std::uint64_t groups_serial() const noexcept { return groups_serial_; }
  // Where find_device(id) looks: one of kShards device shards.
  static std::size_t device_shard(std::string_view id) noexcept { return shard_of(id); }
  // Both snapshots hold the very same device shard, so that find_device(id) returns the same record
  // (or null) in both for every id of it. A change rebuilds only the shards of the devices it
  // changes and shares the others. Compared by address, without reading either shard (the broker
  // thread asks it of every shard at a swap): valid while both snapshots are alive, as a shard one
  // of them holds cannot be freed and another made in its place.
  bool shares_device_shard(const Snapshot& other, std::size_t shard) const noexcept {
    return devices_[shard] == other.devices_[shard];
  }
  std::size_t device_count() const noexcept { return device_count_; }
  // Distinct rule patterns held by this snapshot's pool (some may be only in older snapshots).
  std::size_t distinct_patterns() const { return patterns_->size(); }

  // Decision table, in order (the first that applies decides):
  //  1. stale registry → registry_stale (fail closed: the registry may have revoked this device)
  //  2. no certificate → no_certificate
  //  3. fingerprint not registered → unknown_certificate
  //  4. certificate revoked → certificate_revoked
  //  5. now before not_before / after not_after → not_yet_valid / expired
  //  6. CN differs from the device the certificate is registered to → common_name_mismatch
  //  7. device disabled / revoked → device_disabled / device_revoked
  //  8. client id differs from the device id → client_id_mismatch
  //  9. otherwise accepted.
  // A fingerprint that is no device's but a claim's certificate's (step 3) is decided by
  // claim_verdict instead.
  // Claim table, in order:
  //  1. claim or its certificate revoked → claim_revoked
  //  2. now before not_before → certificate_not_yet_valid; after not_after → claim_expired
  //  3. quota_used >= quota → claim_used_up
  //  4. client id no valid device id, or not matching the id pattern → claim_id_not_allowed
  //  5. client id a registered device's id → claim_id_registered
  //  6. otherwise accepted, with `claim` set.
  ConnectVerdict connect_verdict(const ConnectRequest& request, UnixTime now,
                                 bool stale) const noexcept;

  // Topic decision for a connected device (`username` is its device id). A device that is not
  // active, or unknown, is denied everything. Its own rules, its type group's and "default"'s are
  // evaluated together by acl::evaluate. Allocates nothing.
  acl::Evaluation check_access(std::string_view username, std::string_view client_id,
                               acl::Access access, std::string_view topic_or_filter) const noexcept;

  // The claim's standing now, for a client it was accepted with (ConnectReason::accepted while
  // it is usable: not revoked, not expired; a used-up claim may still subscribe and receive its
  // answer, but not publish another request).
  ConnectReason claim_standing(const ClaimEntry& claim, UnixTime now) const noexcept;

 private:
  // Inline and cheap: std::hash<std::string_view>, an out-of-line Murmur, was a tenth of a hot
  // decision's instructions (callgrind: a device and a group lookup per decision). Eight bytes per
  // step, each mixed by a multiply, then splitmix64's finalizer so that the low bits (the shard,
  // the bucket) depend on every byte. Seedless: keys are registry data (device ids, group names,
  // fingerprints of certificates the CA signed), not chosen by an unauthenticated client.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      std::uint64_t h = 0x9e3779b97f4a7c15ull ^ s.size();
      std::size_t i = 0;
      for (; i + 8 <= s.size(); i += 8) {
        std::uint64_t word;
        std::memcpy(&word, s.data() + i, 8);
        h = (h ^ word) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
      }
      std::uint64_t tail = 0;
      for (std::size_t k = 0; i + k < s.size(); ++k) {
        tail |= std::uint64_t{static_cast<unsigned char>(s[i + k])} << (8 * k);
      }
      h ^= tail;
      h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
      h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
      return static_cast<std::size_t>(h ^ (h >> 31));
    }
  };
  // A shard: an open-addressing table (linear probing, at most 80% full) of what hashes to it.
  // Built whole and never changed afterwards: with_changes builds a new table for each shard it
  // touches, holding the very same device records for the devices that did not change, so their
  // addresses stay what find_device returned before. The slot a key starts probing at comes from
  // the hash's high half; the shard from its low bits.
  //
  // A slot is one word: the record's address, whose low bits (always 0: records and certificates
  // are 8-aligned) hold bits of the key's hash, so that most probes of other keys are passed
  // without reading their record (a cache miss at a million devices). 0: an empty slot. Eight
  // bytes a slot, ten a device at 80% full.
  static std::size_t home_slot(std::size_t hash, std::size_t capacity) noexcept {
    return static_cast<std::size_t>(((static_cast<std::uint64_t>(hash) >> 32) * capacity) >> 32);
  }
  static constexpr std::uintptr_t kTagMask = 7;
  static std::uintptr_t tag_of(std::size_t hash) noexcept {
    return static_cast<std::uintptr_t>(hash >> 29) & kTagMask;
  }
  static const SnapshotDevice* device_in(std::uintptr_t slot) noexcept {
    return reinterpret_cast<const SnapshotDevice*>(slot & ~kTagMask);
  }
  static const SnapshotCertificate* certificate_in(std::uintptr_t slot) noexcept {
    return reinterpret_cast<const SnapshotCertificate*>(slot & ~kTagMask);
  }
  // Devices by id. Holds each of its devices once (released when the shard goes).
  struct DeviceShard {
    std::vector<std::uintptr_t> slots;
    std::size_t size = 0;
    DeviceShard() = default;
    DeviceShard(const DeviceShard&) = delete;
    DeviceShard& operator=(const DeviceShard&) = delete;
    DeviceShard(DeviceShard&&) = default;
    ~DeviceShard();
  };
  // Certificates by fingerprint (SnapshotCertificate::device() is the device). Holds nothing:
  // the devices are held by the device shards of every snapshot that holds this shard
  // (with_changes rebuilds the certificate shards of every device it drops or replaces).
  struct CertificateShard {
    std::vector<std::uintptr_t> slots;
    std::size_t size = 0;
  };
  using Groups =
      std::unordered_map<std::string, std::shared_ptr<const GroupAccess>, Hash, std::equal_to<>>;

  // A fingerprint as the tables hash and compare it: its 32 bytes when it is 64 lower-case hex
  // digits, else its text.
  struct FingerprintKey {
    explicit FingerprintKey(std::string_view text) noexcept;
    explicit FingerprintKey(const SnapshotCertificate& certificate) noexcept;
    bool raw = false;
    std::array<std::uint8_t, 32> bytes{};
    std::string_view text;  // when not raw; views the caller's text or the certificate's
    std::size_t hash() const noexcept;
    bool matches(const SnapshotCertificate& certificate) const noexcept;
  };

  // The tables for lists of entries; a later entry replaces an earlier one of the same key.
  // `replaced` (when given) collects the devices so replaced.
  static DeviceShard make_device_shard(std::span<const SnapshotDevice* const> list,
                                       std::vector<const SnapshotDevice*>* replaced);
  static CertificateShard make_certificate_shard(std::span<const SnapshotCertificate* const> list);

  static std::size_t shard_of(std::string_view key) noexcept { return Hash{}(key) % kShards; }

  std::array<std::shared_ptr<const DeviceShard>, kShards> devices_;
  std::array<std::shared_ptr<const CertificateShard>, kShards> certificates_;
  std::shared_ptr<const Groups> groups_;
  struct Claims {
    std::vector<ClaimEntry> entries;
    std::unordered_map<std::string, std::size_t, Hash, std::equal_to<>> by_certificate, by_name;
  };
  std::shared_ptr<const Claims> claims_;
  // groups_'s "default", looked up once per snapshot instead of once per decision (nullptr: none).
  const GroupAccess* default_group_ = nullptr;
  std::uint64_t groups_serial_ = 0;  // groups_serial(); set with groups_ by set_groups()
  // The serials of sets of groups: counted up from 1, once per process.
  static std::uint64_t next_serial() noexcept;
  // Makes `groups` this snapshot's set of groups, under a fresh groups_serial() (and its
  // "default" looked up again): the one place groups_ is set.
  void set_groups(std::shared_ptr<const Groups> groups);
  // Every rule's pattern comes from here, so equal patterns share one node; passed on by
  // with_changes.
  std::shared_ptr<acl::PatternPool> patterns_;
  std::int64_t change_seq_ = 0;
  std::size_t device_count_ = 0;
};

}  // namespace onboard::registry
