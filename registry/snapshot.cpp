#include "registry/snapshot.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include "core/identity.h"

namespace onboard::registry {
namespace {

constexpr std::size_t kFingerprintBytes = 32;

// The 32 bytes of a fingerprint of exactly 64 lower-case hex digits; false for any other text.
// On the connect path (once per connect), so eight digits at a time in a 64-bit word: a byte
// table took twice the time of the rest of a connect verdict.
bool decode_fingerprint(std::string_view text, std::array<std::uint8_t, 32>& out) noexcept {
  if (text.size() != 2 * kFingerprintBytes) return false;
  constexpr std::uint64_t kOnes = 0x0101010101010101ull;
  constexpr std::uint64_t kLow7 = kOnes * 0x7f, kHigh = kOnes * 0x80;
  // Each byte's high bit set when it is strictly between m and n (0 <= m < n <= 128), exactly,
  // byte by byte: no byte's arithmetic carries into the next (Anderson's bit hacks, hasbetween).
  auto between = [&](std::uint64_t x, std::uint64_t m, std::uint64_t n) {
    const std::uint64_t low = x & kLow7;
    return (kOnes * (127 + n) - low) & ~x & (low + kOnes * (127 - m)) & kHigh;
  };
  std::uint64_t valid = kHigh;
  for (std::size_t w = 0; w < 8; ++w) {
    std::uint64_t x;  // digit k of these eight in byte k, whatever the host's byte order
    std::memcpy(&x, text.data() + 8 * w, 8);
    if constexpr (std::endian::native == std::endian::big) x = __builtin_bswap64(x);
    valid &= between(x, '0' - 1, '9' + 1) | between(x, 'a' - 1, 'f' + 1);
    // '0'..'9' are 0x30..0x39, 'a'..'f' 0x61..0x66: the low nibble, plus 9 for a letter (bit 6).
    const std::uint64_t v = (x & (kOnes * 0x0f)) + 9 * ((x >> 6) & kOnes);
    const std::uint64_t pairs = (v << 4) | (v >> 8);  // byte 2j: digit 2j high, 2j+1 low
    for (std::size_t j = 0; j < 4; ++j)
      out[4 * w + j] = static_cast<std::uint8_t>(pairs >> (16 * j));
  }
  return valid == kHigh;
}

// Upper-case hex digits only (as BN_bn2hex writes a serial): kept two to a byte.
bool packable_serial(std::string_view serial) noexcept {
  return std::all_of(serial.begin(), serial.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); });
}

std::size_t size_bytes(std::size_t size) noexcept {
  std::size_t n = 1;
  while (size >= 0x80) {
    size >>= 7;
    ++n;
  }
  return n;
}

unsigned char* write_size(unsigned char* p, std::size_t size) noexcept {
  while (size >= 0x80) {
    *p++ = static_cast<unsigned char>(size | 0x80);
    size >>= 7;
  }
  *p++ = static_cast<unsigned char>(size);
  return p;
}

unsigned char* write_text(unsigned char* p, std::string_view text) noexcept {
  p = write_size(p, text.size());
  if (!text.empty()) std::memcpy(p, text.data(), text.size());
  return p + text.size();
}

// A serial's bytes in a record: one size, (digits << 1 | 1) then the digits two to a byte when
// packable, (bytes << 1) then the text otherwise.
std::size_t serial_bytes(std::string_view serial) noexcept {
  if (packable_serial(serial)) return size_bytes(serial.size() << 1 | 1) + (serial.size() + 1) / 2;
  return size_bytes(serial.size() << 1) + serial.size();
}

unsigned char* write_serial(unsigned char* p, std::string_view serial) noexcept {
  if (!packable_serial(serial)) {
    p = write_size(p, serial.size() << 1);
    if (!serial.empty()) std::memcpy(p, serial.data(), serial.size());
    return p + serial.size();
  }
  p = write_size(p, serial.size() << 1 | 1);
  for (std::size_t i = 0; i < serial.size(); i += 2) {
    auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'A' + 10; };
    const int high = nibble(serial[i]);
    const int low = i + 1 < serial.size() ? nibble(serial[i + 1]) : 0;
    *p++ = static_cast<unsigned char>(high << 4 | low);
  }
  return p;
}

// Skips a serial's bytes; returns its text when `out` is given.
const unsigned char* read_serial(const unsigned char* p, std::string* out) {
  const std::size_t size = SnapshotDevice::read_size(p);
  const std::size_t length = size >> 1;
  if ((size & 1) == 0) {
    if (out != nullptr) out->assign(reinterpret_cast<const char*>(p), length);
    return p + length;
  }
  if (out != nullptr) {
    static constexpr char kDigits[] = "0123456789ABCDEF";
    out->resize(length);
    for (std::size_t i = 0; i < length; ++i) {
      const unsigned char byte = p[i / 2];
      (*out)[i] = kDigits[i % 2 == 0 ? byte >> 4 : byte & 0xf];
    }
  }
  return p + (length + 1) / 2;
}

// Gives every rule the pool's node for its pattern, so equal patterns are held once.
void intern_rules(std::vector<acl::Rule>& rules, acl::PatternPool::Session& patterns) {
  for (auto& rule : rules) rule.pattern = patterns.intern(rule.pattern);
  rules.shrink_to_fit();
}

}  // namespace

// ---- SnapshotDevice and SnapshotCertificate ---------------------------------------------------

const SnapshotDevice* SnapshotDevice::make(const DeviceAccess& device,
                                           acl::PatternPool::Session& patterns) {
  auto align8 = [](std::size_t n) { return (n + 7) & ~std::size_t{7}; };
  const std::size_t certificates_at =
      align8(sizeof(SnapshotDevice) + 1 + size_bytes(device.id.size()) + device.id.size() +
             size_bytes(device.type.size()) + device.type.size());
  std::size_t text = 0;  // the certificates' texts
  for (const CertificateAccess& cert : device.certificates) {
    std::array<std::uint8_t, 32> ignored;
    text += serial_bytes(cert.serial_hex);
    if (!decode_fingerprint(cert.sha256_fingerprint, ignored))
      text += size_bytes(cert.sha256_fingerprint.size()) + cert.sha256_fingerprint.size();
  }
  const std::size_t rules_at =
      align8(certificates_at + device.certificates.size() * sizeof(SnapshotCertificate) + text);
  const std::size_t size = rules_at + device.rules.size() * sizeof(acl::Rule);
  // Counts and offsets are 32-bit (SnapshotCertificate::back_, rules_at_).
  if (size > std::numeric_limits<std::uint32_t>::max())
    throw std::length_error("a device's snapshot record exceeds 4 GiB");

  // Plain new: its 16-byte alignment is more than the 8 the records need (index tags use the low
  // three bits), and an aligned new would round the size up to 16 before malloc adds its own.
  static_assert(__STDCPP_DEFAULT_NEW_ALIGNMENT__ >= 8);
  auto* base = static_cast<unsigned char*>(::operator new(size));
  auto* record = new (base) SnapshotDevice();
  record->rule_count_ = static_cast<std::uint32_t>(device.rules.size());
  record->certificate_count_ = static_cast<std::uint32_t>(device.certificates.size());
  record->rules_at_ = static_cast<std::uint32_t>(rules_at);
  auto* rules = reinterpret_cast<acl::Rule*>(base + rules_at);
  std::size_t made = 0;
  try {
    for (const acl::Rule& r : device.rules) {
      new (rules + made)
          acl::Rule{r.id, patterns.intern(r.pattern), r.access, r.effect, r.priority};
      ++made;
    }
  } catch (...) {  // the pool could not add a pattern: nothing of the record is kept
    for (std::size_t i = 0; i < made; ++i) rules[i].~Rule();
    record->~SnapshotDevice();
    ::operator delete(static_cast<void*>(base));
    throw;
  }
  unsigned char* p = base + sizeof(SnapshotDevice);
  *p++ = static_cast<unsigned char>(device.status);
  p = write_text(p, device.id);
  p = write_text(p, device.type);
  std::memset(p, 0, static_cast<std::size_t>(base + certificates_at - p));  // the padding
  p = base + certificates_at + device.certificates.size() * sizeof(SnapshotCertificate);
  for (std::size_t i = 0; i < device.certificates.size(); ++i) {
    const CertificateAccess& from = device.certificates[i];
    const std::size_t at = certificates_at + i * sizeof(SnapshotCertificate);
    auto* cert = new (base + at) SnapshotCertificate();
    cert->not_before_ = from.not_before;
    cert->not_after_ = from.not_after;
    cert->back_ = static_cast<std::uint32_t>(at);
    cert->status_ = static_cast<std::uint8_t>(from.status);
    const bool raw = decode_fingerprint(from.sha256_fingerprint, cert->fingerprint_);
    if (raw)
      cert->flags_ = SnapshotCertificate::kRawFingerprint;
    else
      cert->fingerprint_ = {};
    p = write_serial(p, from.serial_hex);
    if (!raw) p = write_text(p, from.sha256_fingerprint);
  }
  return record;
}

void SnapshotDevice::release() const noexcept {
  if (holders_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  auto* self = const_cast<SnapshotDevice*>(this);
  for (const acl::Rule& rule : rules()) rule.~Rule();
  self->~SnapshotDevice();
  ::operator delete(static_cast<void*>(self));
}

DeviceAccess SnapshotDevice::to_access() const {
  DeviceAccess out;
  out.id = std::string(id());
  out.status = status();
  out.type = std::string(type());
  out.rules.assign(rules().begin(), rules().end());
  out.certificates.reserve(certificate_count_);
  for (const SnapshotCertificate& cert : certificates()) {
    out.certificates.push_back(CertificateAccess{cert.sha256_fingerprint(), cert.serial_hex(),
                                                 cert.status(), cert.not_before(),
                                                 cert.not_after()});
  }
  return out;
}

const unsigned char* SnapshotCertificate::text() const noexcept {
  const auto certificates = device().certificates();
  const auto* p = reinterpret_cast<const unsigned char*>(certificates.data() + certificates.size());
  for (const SnapshotCertificate& cert : certificates) {
    if (&cert == this) break;
    p = read_serial(p, nullptr);
    if ((cert.flags_ & kRawFingerprint) == 0) p += SnapshotDevice::read_size(p);
  }
  return p;
}

std::string SnapshotCertificate::serial_hex() const {
  std::string out;
  read_serial(text(), &out);
  return out;
}

std::string SnapshotCertificate::sha256_fingerprint() const {
  if ((flags_ & kRawFingerprint) != 0) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out(2 * kFingerprintBytes, '0');
    for (std::size_t i = 0; i < kFingerprintBytes; ++i) {
      out[2 * i] = kDigits[fingerprint_[i] >> 4];
      out[2 * i + 1] = kDigits[fingerprint_[i] & 0xf];
    }
    return out;
  }
  const unsigned char* p = read_serial(text(), nullptr);
  const std::size_t size = SnapshotDevice::read_size(p);
  return std::string(reinterpret_cast<const char*>(p), size);
}

bool SnapshotCertificate::has_fingerprint(std::string_view sha256_fingerprint) const noexcept {
  if ((flags_ & kRawFingerprint) != 0) {
    std::array<std::uint8_t, 32> bytes;
    return decode_fingerprint(sha256_fingerprint, bytes) && bytes == fingerprint_;
  }
  const unsigned char* p = read_serial(text(), nullptr);
  const std::size_t size = SnapshotDevice::read_size(p);
  return std::string_view(reinterpret_cast<const char*>(p), size) == sha256_fingerprint;
}

bool SnapshotCertificate::same_fingerprint(const SnapshotCertificate& other) const noexcept {
  if ((flags_ & kRawFingerprint) != (other.flags_ & kRawFingerprint)) return false;
  if ((flags_ & kRawFingerprint) != 0) return fingerprint_ == other.fingerprint_;
  const unsigned char* p = read_serial(other.text(), nullptr);
  const std::size_t size = SnapshotDevice::read_size(p);
  return has_fingerprint(std::string_view(reinterpret_cast<const char*>(p), size));
}

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

// ---- the tables --------------------------------------------------------------------------------

Snapshot::DeviceShard::~DeviceShard() {
  for (const std::uintptr_t slot : slots) {
    if (slot != 0) device_in(slot)->release();
  }
}

Snapshot::FingerprintKey::FingerprintKey(std::string_view fingerprint) noexcept
    : text(fingerprint) {
  raw = decode_fingerprint(fingerprint, bytes);
}

Snapshot::FingerprintKey::FingerprintKey(const SnapshotCertificate& certificate) noexcept
    : raw((certificate.flags_ & SnapshotCertificate::kRawFingerprint) != 0),
      bytes(certificate.fingerprint_) {
  if (!raw) {
    const unsigned char* p = read_serial(certificate.text(), nullptr);
    const std::size_t size = SnapshotDevice::read_size(p);
    text = std::string_view(reinterpret_cast<const char*>(p), size);
  }
}

inline std::size_t Snapshot::FingerprintKey::hash() const noexcept {
  if (raw) return Hash{}(std::string_view(reinterpret_cast<const char*>(bytes.data()), 32));
  return Hash{}(text);
}

inline bool Snapshot::FingerprintKey::matches(
    const SnapshotCertificate& certificate) const noexcept {
  const bool raw_certificate = (certificate.flags_ & SnapshotCertificate::kRawFingerprint) != 0;
  if (raw != raw_certificate) return false;
  if (raw) {  // four words, not a call to memcmp: this is on every connect
    std::uint64_t differ = 0;
    for (std::size_t i = 0; i < 32; i += 8) {
      std::uint64_t a, b;
      std::memcpy(&a, bytes.data() + i, 8);
      std::memcpy(&b, certificate.fingerprint_.data() + i, 8);
      differ |= a ^ b;
    }
    return differ == 0;
  }
  return certificate.has_fingerprint(text);
}

Snapshot::DeviceShard Snapshot::make_device_shard(std::span<const SnapshotDevice* const> list,
                                                  std::vector<const SnapshotDevice*>* replaced) {
  DeviceShard shard;  // with a fresh serial
  shard.slots.resize(capacity_for(list.size()));
  const std::size_t capacity = shard.slots.size();
  for (const SnapshotDevice* device : list) {
    const std::string_view id = device->id();
    const std::size_t hash = Hash{}(id);
    const std::uintptr_t entry = reinterpret_cast<std::uintptr_t>(device) | tag_of(hash);
    for (std::size_t i = home_slot(hash, capacity);; i = i + 1 == capacity ? 0 : i + 1) {
      std::uintptr_t& slot = shard.slots[i];
      if (slot == 0) {
        device->hold();
        slot = entry;
        ++shard.size;
        break;
      }
      if ((slot & kTagMask) == tag_of(hash) && device_in(slot)->id() == id) {
        if (replaced != nullptr) replaced->push_back(device_in(slot));
        device->hold();
        device_in(slot)->release();
        slot = entry;
        break;
      }
    }
  }
  return shard;
}

Snapshot::CertificateShard Snapshot::make_certificate_shard(
    std::span<const SnapshotCertificate* const> list) {
  CertificateShard shard;
  shard.slots.resize(capacity_for(list.size()));
  const std::size_t capacity = shard.slots.size();
  for (const SnapshotCertificate* certificate : list) {
    const FingerprintKey key(*certificate);
    const std::size_t hash = key.hash();
    const std::uintptr_t entry = reinterpret_cast<std::uintptr_t>(certificate) | tag_of(hash);
    for (std::size_t i = home_slot(hash, capacity);; i = i + 1 == capacity ? 0 : i + 1) {
      std::uintptr_t& slot = shard.slots[i];
      if (slot == 0) {
        slot = entry;
        ++shard.size;
        break;
      }
      if ((slot & kTagMask) == tag_of(hash) && key.matches(*certificate_in(slot))) {
        slot = entry;
        break;
      }
    }
  }
  return shard;
}

namespace {

// The records a build or a change made, each held once until the shards hold them.
class Made {
 public:
  Made() = default;
  Made(const Made&) = delete;
  Made& operator=(const Made&) = delete;
  ~Made() {
    for (const SnapshotDevice* device : devices_) device->release();
  }
  void reserve(std::size_t n) { devices_.reserve(n); }
  const SnapshotDevice* add(const DeviceAccess& device, acl::PatternPool::Session& patterns) {
    if (devices_.size() == devices_.capacity())  // before make: a record is never left unheld
      devices_.reserve(std::max<std::size_t>(8, 2 * devices_.size()));
    devices_.push_back(SnapshotDevice::make(device, patterns));
    return devices_.back();
  }
  const std::vector<const SnapshotDevice*>& devices() const { return devices_; }

 private:
  std::vector<const SnapshotDevice*> devices_;
};

}  // namespace

std::shared_ptr<const Snapshot> Snapshot::build(std::vector<DeviceAccess> devices,
                                                std::vector<GroupAccess> groups,
                                                std::int64_t change_seq) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->patterns_ = std::make_shared<acl::PatternPool>();
  acl::PatternPool::Session patterns(*snapshot->patterns_);

  // Every device in input order, and the lists of each shard. Each value is freed once its record
  // is made, so that the two are not both in memory for the whole fleet.
  Made made;
  made.reserve(devices.size());
  std::vector<std::vector<const SnapshotDevice*>> lists(kShards);
  for (auto& list : lists)
    list.reserve(devices.size() / kShards + devices.size() / kShards / 4 + 1);
  for (auto& device : devices) {
    const SnapshotDevice* record = made.add(device, patterns);
    device = {};
    lists[shard_of(record->id())].push_back(record);
  }
  devices = {};
  // Of two devices with one id the last is kept, and only kept devices' certificates are indexed.
  std::vector<const SnapshotDevice*> replaced;
  for (std::size_t i = 0; i < kShards; ++i) {
    auto shard = std::make_shared<DeviceShard>(make_device_shard(lists[i], &replaced));
    snapshot->device_count_ += shard->size;
    snapshot->devices_[i] = std::move(shard);
    lists[i] = {};
  }
  std::sort(replaced.begin(), replaced.end());
  std::vector<std::vector<const SnapshotCertificate*>> cert_lists(kShards);
  for (auto& list : cert_lists)
    list.reserve(made.devices().size() / kShards + made.devices().size() / kShards / 4 + 1);
  for (const SnapshotDevice* device : made.devices()) {
    if (!replaced.empty() && std::binary_search(replaced.begin(), replaced.end(), device)) continue;
    for (const SnapshotCertificate& cert : device->certificates())
      cert_lists[FingerprintKey(cert).hash() % kShards].push_back(&cert);
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
  snapshot->set_groups(std::move(group_map));
  snapshot->change_seq_ = change_seq;
  return snapshot;
}

std::uint64_t Snapshot::next_serial() noexcept {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void Snapshot::set_groups(std::shared_ptr<const Groups> groups) {
  groups_ = std::move(groups);
  default_group_ = find_group(kDefaultGroup);
  groups_serial_ = next_serial();
}

std::shared_ptr<const Snapshot> Snapshot::with_changes(std::vector<DeviceAccess> devices,
                                                       std::span<const std::string> removed,
                                                       std::vector<GroupAccess> groups,
                                                       std::int64_t change_seq) const {
  auto next = std::make_shared<Snapshot>(*this);  // shares every shard
  // The shards touched, as plain lists of their entries; made into tables at the end. A shard
  // holds about 250 devices at a million, so a linear search in its list costs little. Every
  // device listed is held by this snapshot's shards or by `made`.
  std::unordered_map<std::size_t, std::vector<const SnapshotDevice*>> device_lists;
  std::unordered_map<std::size_t, std::vector<const SnapshotCertificate*>> cert_lists;
  auto device_list = [&](std::string_view id) -> auto& {
    const std::size_t i = shard_of(id);
    auto [it, fresh] = device_lists.try_emplace(i);
    if (fresh) {
      it->second.reserve(devices_[i]->size + 1);
      for (const std::uintptr_t slot : devices_[i]->slots) {
        if (slot != 0) it->second.push_back(device_in(slot));
      }
    }
    return it->second;
  };
  auto cert_list = [&](const FingerprintKey& key) -> auto& {
    const std::size_t i = key.hash() % kShards;
    auto [it, fresh] = cert_lists.try_emplace(i);
    if (fresh) {
      it->second.reserve(certificates_[i]->size + 1);
      for (const std::uintptr_t slot : certificates_[i]->slots) {
        if (slot != 0) it->second.push_back(certificate_in(slot));
      }
    }
    return it->second;
  };
  auto drop = [&](std::string_view id) {
    if (find_device(id) == nullptr && !device_lists.contains(shard_of(id))) return;
    auto& list = device_list(id);
    auto it = std::find_if(list.begin(), list.end(),
                           [&](const SnapshotDevice* d) { return d->id() == id; });
    if (it == list.end()) return;
    for (const SnapshotCertificate& cert : (*it)->certificates()) {
      std::erase(cert_list(FingerprintKey(cert)), &cert);
    }
    *it = list.back();
    list.pop_back();
    --next->device_count_;
  };

  acl::PatternPool::Session patterns(*patterns_);
  Made made;
  made.reserve(devices.size());
  for (const auto& id : removed) drop(id);
  for (const auto& device : devices) {
    drop(device.id);
    const SnapshotDevice* entry = made.add(device, patterns);
    for (const SnapshotCertificate& cert : entry->certificates()) {
      const FingerprintKey key(cert);
      auto& certs = cert_list(key);
      // As in a table: the certificate's fingerprint now names this device, whichever it named.
      std::erase_if(certs, [&](const SnapshotCertificate* c) { return key.matches(*c); });
      certs.push_back(&cert);
    }
    device_list(entry->id()).push_back(entry);
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
    next->set_groups(std::move(group_map));
  }
  next->change_seq_ = change_seq;
  return next;
}

const SnapshotDevice* Snapshot::find_device(std::string_view id) const noexcept {
  const std::size_t hash = Hash{}(id);
  const DeviceShard& shard = *devices_[hash % kShards];
  const std::size_t capacity = shard.slots.size();
  if (capacity == 0) return nullptr;
  const std::uintptr_t tag = tag_of(hash);
  for (std::size_t i = home_slot(hash, capacity);; i = i + 1 == capacity ? 0 : i + 1) {
    const std::uintptr_t slot = shard.slots[i];
    if (slot == 0) return nullptr;
    if ((slot & kTagMask) == tag && device_in(slot)->id() == id) return device_in(slot);
  }
}

std::optional<Snapshot::CertificateOwner> Snapshot::find_certificate(
    std::string_view fingerprint) const noexcept {
  const FingerprintKey key(fingerprint);
  const std::size_t hash = key.hash();
  const CertificateShard& shard = *certificates_[hash % kShards];
  const std::size_t capacity = shard.slots.size();
  if (capacity == 0) return std::nullopt;
  const std::uintptr_t tag = tag_of(hash);
  for (std::size_t i = home_slot(hash, capacity);; i = i + 1 == capacity ? 0 : i + 1) {
    const std::uintptr_t slot = shard.slots[i];
    if (slot == 0) return std::nullopt;
    if ((slot & kTagMask) != tag) continue;
    const SnapshotCertificate* certificate = certificate_in(slot);
    if (key.matches(*certificate)) return CertificateOwner{&certificate->device(), certificate};
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
  const SnapshotDevice& device = *owner->device;
  const SnapshotCertificate& cert = *owner->certificate;
  const std::string_view id = device.id();
  if (cert.status() != CertificateStatus::active)
    return {ConnectReason::certificate_revoked, id, {}};
  if (now < cert.not_before()) return {ConnectReason::certificate_not_yet_valid, id, {}};
  if (now > cert.not_after()) return {ConnectReason::certificate_expired, id, {}};
  if (request.common_name != id) return {ConnectReason::common_name_mismatch, id, {}};
  if (device.status() == DeviceStatus::disabled) return {ConnectReason::device_disabled, id, {}};
  if (device.status() == DeviceStatus::revoked) return {ConnectReason::device_revoked, id, {}};
  if (request.client_id != id) return {ConnectReason::client_id_mismatch, id, {}};
  return {ConnectReason::accepted, id, {}};
}

namespace {

acl::Evaluation decide(DeviceStatus status, std::span<const acl::Rule> own,
                       const GroupAccess* type_group, const GroupAccess* default_group,
                       std::string_view device_id, std::string_view username,
                       std::string_view client_id, acl::Access access,
                       std::string_view topic_or_filter) noexcept {
  if (status != DeviceStatus::active) return acl::Evaluation{acl::Decision::deny, nullptr};
  std::array<std::span<const acl::Rule>, 3> sets;
  std::size_t n = 0;
  sets[n++] = own;
  if (type_group != nullptr) sets[n++] = type_group->rules;
  if (default_group != nullptr) sets[n++] = default_group->rules;
  acl::Substitutions subs{device_id, client_id, username};
  return acl::evaluate(std::span<const std::span<const acl::Rule>>(sets.data(), n), access,
                       topic_or_filter, subs);
}

}  // namespace

acl::Evaluation check_device_access(const DeviceAccess& device, const GroupAccess* type_group,
                                    const GroupAccess* default_group, std::string_view username,
                                    std::string_view client_id, acl::Access access,
                                    std::string_view topic_or_filter) noexcept {
  return decide(device.status, device.rules, type_group, default_group, device.id, username,
                client_id, access, topic_or_filter);
}

acl::Evaluation check_device_access(const SnapshotDevice& device, const GroupAccess* type_group,
                                    const GroupAccess* default_group, std::string_view username,
                                    std::string_view client_id, acl::Access access,
                                    std::string_view topic_or_filter) noexcept {
  return decide(device.status(), device.rules(), type_group, default_group, device.id(), username,
                client_id, access, topic_or_filter);
}

acl::Evaluation Snapshot::check_access(std::string_view username, std::string_view client_id,
                                       acl::Access access,
                                       std::string_view topic_or_filter) const noexcept {
  const SnapshotDevice* device = find_device(username);
  if (device == nullptr) return acl::Evaluation{acl::Decision::deny, nullptr};
  const std::string_view type = device->type();
  const GroupAccess* type_group = type.empty() ? nullptr : find_group(type);
  return check_device_access(*device, type_group, default_group_, username, client_id, access,
                             topic_or_filter);
}

}  // namespace onboard::registry
