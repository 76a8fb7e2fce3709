#include "registry/snapshot_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/digest.h"
#include "core/files.h"

namespace onboard::registry {
namespace {

constexpr std::size_t kDigestChars = 64;  // SHA-256 in hex

// The smallest encoding of each record, for checking a count against the bytes left before
// anything is reserved: a count can then never ask for more than the file could hold.
constexpr std::size_t kMinString = 4;
constexpr std::size_t kMinRule = 8 + 1 + 1 + 4 + kMinString;
constexpr std::size_t kMinCertificate = kMinString * 2 + 1 + 8 + 8;
constexpr std::size_t kMinDevice = kMinString + 1 + kMinString + 4 + 4;
constexpr std::size_t kMinGroup = kMinString + 4;

// The codes written for each enum, spelled out so that reordering an enum cannot change the format.
std::uint8_t code_of(DeviceStatus status) {
  switch (status) {
    case DeviceStatus::active:
      return 0;
    case DeviceStatus::disabled:
      return 1;
    case DeviceStatus::revoked:
      return 2;
  }
  return 0xff;
}
std::uint8_t code_of(CertificateStatus status) {
  switch (status) {
    case CertificateStatus::active:
      return 0;
    case CertificateStatus::revoked:
      return 1;
  }
  return 0xff;
}
std::uint8_t code_of(acl::Effect effect) {
  switch (effect) {
    case acl::Effect::allow:
      return 0;
    case acl::Effect::deny:
      return 1;
  }
  return 0xff;
}

// --- Writing -------------------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) { fixed(v, 4); }
  void i32(std::int32_t v) { fixed(static_cast<std::uint32_t>(v), 4); }
  void i64(std::int64_t v) { fixed(static_cast<std::uint64_t>(v), 8); }
  void count(std::size_t n) { u32(static_cast<std::uint32_t>(n)); }
  void str(std::string_view s) {
    count(s.size());
    out_.append(s);
  }

 private:
  void fixed(std::uint64_t v, int bytes) {
    char buffer[8];
    for (int i = 0; i < bytes; ++i) buffer[i] = static_cast<char>(v >> (8 * i));
    out_.append(buffer, static_cast<std::size_t>(bytes));
  }
  std::string& out_;
};

void write_rules(Writer& w, const std::vector<acl::Rule>& rules) {
  w.count(rules.size());
  for (const auto& rule : rules) {
    w.i64(rule.id);
    w.u8(rule.access);
    w.u8(code_of(rule.effect));
    w.i32(rule.priority);
    w.str(rule.pattern.text());
  }
}

// A string or list too long for its u32 length could not be read back; refused rather than cut.
bool fits_u32(std::size_t n) { return n <= UINT32_MAX; }

bool encodable(const std::vector<acl::Rule>& rules) {
  if (!fits_u32(rules.size())) return false;
  for (const auto& rule : rules) {
    // A mask the reader refuses would make a cache that no broker can start from.
    if (!fits_u32(rule.pattern.text().size()) || rule.access < 1 ||
        rule.access > kAccessReadWrite) {
      return false;
    }
  }
  return true;
}

// --- Reading -------------------------------------------------------------------------------------

// Why a file is refused; thrown inside decode only, caught there.
struct Refused {
  std::string reason;
};

class Reader {
 public:
  explicit Reader(std::string_view bytes) : rest_(bytes) {}

  std::uint8_t u8(const char* what) { return static_cast<std::uint8_t>(take(1, what)[0]); }
  std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(fixed(4, what)); }
  std::int32_t i32(const char* what) { return static_cast<std::int32_t>(u32(what)); }
  std::int64_t i64(const char* what) { return static_cast<std::int64_t>(fixed(8, what)); }
  // A count of records of at least `min_size` bytes each, checked against the bytes left.
  std::size_t count(const char* what, std::size_t min_size) {
    const std::size_t n = u32(what);
    if (n > rest_.size() / min_size) {
      throw Refused{std::string(what) + " count " + std::to_string(n) + " exceeds the " +
                    std::to_string(rest_.size()) + " bytes left"};
    }
    return n;
  }
  std::string_view str(const char* what) {
    const std::size_t n = u32(what);
    if (n > rest_.size()) {
      throw Refused{std::string(what) + " length " + std::to_string(n) + " exceeds the " +
                    std::to_string(rest_.size()) + " bytes left"};
    }
    return take(n, what);
  }
  bool done() const { return rest_.empty(); }
  std::size_t left() const { return rest_.size(); }

 private:
  std::string_view take(std::size_t n, const char* what) {
    if (n > rest_.size()) throw Refused{std::string("truncated in ") + what};
    std::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return out;
  }
  std::uint64_t fixed(std::size_t bytes, const char* what) {
    const std::string_view b = take(bytes, what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < bytes; ++i) {
      v |= std::uint64_t{static_cast<unsigned char>(b[i])} << (8 * i);
    }
    return v;
  }
  std::string_view rest_;
};

DeviceStatus device_status_of(std::uint8_t code) {
  switch (code) {
    case 0:
      return DeviceStatus::active;
    case 1:
      return DeviceStatus::disabled;
    case 2:
      return DeviceStatus::revoked;
  }
  throw Refused{"invalid device status " + std::to_string(code)};
}
CertificateStatus certificate_status_of(std::uint8_t code) {
  switch (code) {
    case 0:
      return CertificateStatus::active;
    case 1:
      return CertificateStatus::revoked;
  }
  throw Refused{"invalid certificate status " + std::to_string(code)};
}
acl::Effect effect_of(std::uint8_t code) {
  switch (code) {
    case 0:
      return acl::Effect::allow;
    case 1:
      return acl::Effect::deny;
  }
  throw Refused{"invalid rule effect " + std::to_string(code)};
}

// As registry/access_read.cpp reads a rule: the mask checked, the pattern interned from its text.
std::vector<acl::Rule> read_rules(Reader& r, acl::PatternPool::Session& patterns) {
  std::vector<acl::Rule> rules;
  const std::size_t n = r.count("rule", kMinRule);
  rules.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    acl::Rule rule;
    rule.id = r.i64("a rule id");
    rule.access = r.u8("a rule access mask");
    if (rule.access < 1 || rule.access > kAccessReadWrite) {
      throw Refused{"invalid access mask " + std::to_string(rule.access)};
    }
    rule.effect = effect_of(r.u8("a rule effect"));
    rule.priority = r.i32("a rule priority");
    rule.pattern = patterns.intern_text(r.str("a rule pattern"));
    rules.push_back(std::move(rule));
  }
  return rules;
}

std::shared_ptr<const Snapshot> decode_body(std::string_view body) {
  Reader r(body);
  acl::PatternPool pool;  // equal patterns share a node from the start, as in access_read.cpp
  acl::PatternPool::Session patterns(pool);
  const std::int64_t change_seq = r.i64("the change seq");

  std::vector<DeviceAccess> devices(r.count("device", kMinDevice));
  for (auto& device : devices) {
    device.id = r.str("a device id");
    device.status = device_status_of(r.u8("a device status"));
    device.type = r.str("a device type");
    device.rules = read_rules(r, patterns);
    device.certificates.resize(r.count("certificate", kMinCertificate));
    for (auto& cert : device.certificates) {
      cert.sha256_fingerprint = r.str("a certificate fingerprint");
      cert.serial_hex = r.str("a certificate serial");
      cert.status = certificate_status_of(r.u8("a certificate status"));
      cert.not_before = r.i64("a certificate not_before");
      cert.not_after = r.i64("a certificate not_after");
    }
  }

  std::vector<GroupAccess> groups(r.count("group", kMinGroup));
  std::unordered_set<std::string_view> group_names;
  for (auto& group : groups) {
    group.name = r.str("a group name");
    group.rules = read_rules(r, patterns);
  }
  for (const auto& group : groups) {
    if (!group_names.insert(group.name).second) {
      throw Refused{"a group name is listed twice"};
    }
  }
  if (!r.done()) throw Refused{std::to_string(r.left()) + " trailing bytes after the groups"};

  const std::size_t listed = devices.size();
  auto snapshot = Snapshot::build(std::move(devices), std::move(groups), change_seq);
  // Build keeps the last of two equal ids; a file that lists one twice was not written by us.
  if (snapshot->device_count() != listed) throw Refused{"a device id is listed twice"};
  return snapshot;
}

Error cache_error(Errc code, std::string_view name, std::string_view reason) {
  return make_error(code, "snapshot cache " + std::string(name) + ": " + std::string(reason));
}

}  // namespace

Result<std::string> encode_snapshot_cache(const Snapshot& snapshot) {
  std::string out(kSnapshotCacheMagic);
  // About what a device with two rules and a certificate takes; a guess, so growth stays rare.
  out.reserve(out.size() + 64 + snapshot.device_count() * 200);
  Writer w(out);
  bool ok = true;
  w.i64(snapshot.change_seq());
  w.count(snapshot.device_count());
  std::size_t devices = 0;
  snapshot.for_each_device([&](const SnapshotDevice& record) {
    ++devices;
    const DeviceAccess device = record.to_access();
    ok = ok && fits_u32(device.id.size()) && fits_u32(device.type.size()) &&
         encodable(device.rules) && fits_u32(device.certificates.size());
    w.str(device.id);
    w.u8(code_of(device.status));
    w.str(device.type);
    write_rules(w, device.rules);
    w.count(device.certificates.size());
    for (const auto& cert : device.certificates) {
      ok = ok && fits_u32(cert.sha256_fingerprint.size()) && fits_u32(cert.serial_hex.size());
      w.str(cert.sha256_fingerprint);
      w.str(cert.serial_hex);
      w.u8(code_of(cert.status));
      w.i64(cert.not_before);
      w.i64(cert.not_after);
    }
  });
  std::size_t groups = 0;
  snapshot.for_each_group([&](const GroupAccess&) { ++groups; });
  w.count(groups);
  snapshot.for_each_group([&](const GroupAccess& group) {
    ok = ok && fits_u32(group.name.size()) && encodable(group.rules);
    w.str(group.name);
    write_rules(w, group.rules);
  });
  if (!ok || devices != snapshot.device_count() || !fits_u32(devices) || !fits_u32(groups)) {
    return make_error(Errc::internal,
                      "the snapshot does not fit the cache format (an over-long list or string, or "
                      "an invalid access mask)");
  }
  ONBOARD_TRY(std::string digest, sha256_hex(out));
  out += digest;
  if (out.size() > kSnapshotCacheMaxBytes) {
    return make_error(Errc::invalid_input, "the snapshot takes " + std::to_string(out.size()) +
                                               " bytes, more than a cache file may hold");
  }
  return out;
}

Status write_snapshot_cache(const Snapshot& snapshot, const std::filesystem::path& path) {
  ONBOARD_TRY(std::string bytes, encode_snapshot_cache(snapshot));
  return write_file_atomic(path, bytes, 0600, Overwrite::replace);
}

Result<std::shared_ptr<const Snapshot>> decode_snapshot_cache(std::string_view bytes,
                                                              std::string_view name) {
  // The magic's text before its version, so that another version is named as such.
  constexpr std::string_view kPrefix = "onboard-snapshot-cache ";
  if (bytes.substr(0, kPrefix.size()) != kPrefix) {
    return cache_error(Errc::corrupt, name, "not a snapshot cache file (wrong magic)");
  }
  const std::size_t line_end = bytes.find('\n');
  if (line_end == std::string_view::npos) {
    return cache_error(Errc::corrupt, name, "truncated in the header line");
  }
  if (bytes.substr(0, line_end + 1) != kSnapshotCacheMagic) {
    // The version is named only when it looks like one: file bytes do not go into the log as such.
    const std::string_view version = bytes.substr(kPrefix.size(), line_end - kPrefix.size());
    const bool plain = !version.empty() && version.size() <= 8 &&
                       version.find_first_not_of("0123456789") == std::string_view::npos;
    return cache_error(
        Errc::corrupt, name,
        (plain ? "format version " + std::string(version) : std::string("a format version")) +
            " that is not supported (this build reads 1)");
  }
  if (bytes.size() < kSnapshotCacheMagic.size() + kDigestChars) {
    return cache_error(Errc::corrupt, name, "truncated before its checksum");
  }
  const std::string_view covered = bytes.substr(0, bytes.size() - kDigestChars);
  const std::string_view stored = bytes.substr(covered.size());
  auto digest = sha256_hex(covered);
  if (!digest) return cache_error(Errc::crypto, name, digest.error().message);
  if (*digest != stored) {
    return cache_error(Errc::corrupt, name,
                       "checksum mismatch (the file is damaged, truncated or has trailing bytes)");
  }
  try {
    return decode_body(covered.substr(kSnapshotCacheMagic.size()));
  } catch (const Refused& refused) {
    return cache_error(Errc::corrupt, name, refused.reason);
  } catch (const std::bad_alloc&) {
    return cache_error(Errc::internal, name, "out of memory while decoding");
  } catch (const std::exception& e) {  // none is expected; the plugin's callers must never see one
    return cache_error(Errc::internal, name, std::string("cannot decode: ") + e.what());
  }
}

Result<std::shared_ptr<const Snapshot>> read_snapshot_cache(const std::filesystem::path& path) {
  const std::string name = path.string();
  // O_NOFOLLOW: a symbolic link is refused, never followed. O_NONBLOCK: a FIFO planted in its place
  // cannot hang the open; fstat refuses it below.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT) return cache_error(Errc::not_found, name, "no such file");
    if (err == ELOOP) {
      return cache_error(Errc::invalid_input, name, "is a symbolic link; refusing to follow it");
    }
    return cache_error(Errc::io, name, std::string("cannot open: ") + std::strerror(err));
  }
  // Checked on the open descriptor, so the file judged is the file read.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return cache_error(Errc::io, name, std::string("cannot stat: ") + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return cache_error(Errc::invalid_input, name, "not a regular file");
  if (st.st_uid != ::geteuid()) {
    return cache_error(Errc::invalid_input, name,
                       "owned by uid " + std::to_string(st.st_uid) +
                           ", not by this process's uid " + std::to_string(::geteuid()) +
                           "; refusing to trust it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return cache_error(
        Errc::invalid_input, name,
        std::string("mode ") + mode + " lets its group or others write it; refusing to trust it");
  }
  if (st.st_size < 0 || static_cast<std::uintmax_t>(st.st_size) > kSnapshotCacheMaxBytes) {
    return cache_error(Errc::corrupt, name,
                       std::to_string(st.st_size) + " bytes, more than a cache file may hold");
  }
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  // One byte more than fstat said: a file that grows while read is not the file judged.
  char extra = 0;
  for (;;) {
    char* into = got < bytes.size() ? bytes.data() + got : &extra;
    const std::size_t room = got < bytes.size() ? bytes.size() - got : 1;
    const ssize_t n = ::read(fd.get(), into, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      return cache_error(Errc::io, name, std::string("cannot read: ") + std::strerror(errno));
    }
    if (n == 0) break;
    if (got >= bytes.size()) return cache_error(Errc::io, name, "changed while it was read");
    got += static_cast<std::size_t>(n);
  }
  bytes.resize(got);
  return decode_snapshot_cache(bytes, name);
}

}  // namespace onboard::registry
