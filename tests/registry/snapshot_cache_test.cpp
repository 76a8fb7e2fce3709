#include "registry/snapshot_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/files.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr UnixTime kNow = 1'700'000'000;
constexpr UnixTime kDay = 86'400;

std::string fingerprint(int n) {
  char buffer[65];
  std::snprintf(buffer, sizeof buffer, "%064x", n);
  return buffer;
}

CertificateAccess cert(int n, CertificateStatus status = CertificateStatus::active) {
  return CertificateAccess{fingerprint(n), "SERIAL" + std::to_string(n), status, kNow - kDay,
                           kNow + 365 * kDay};
}

acl::Rule allow(std::int64_t id, std::string pattern, std::uint8_t access, int priority = 0) {
  return acl::Rule{id, std::move(pattern), access, acl::Effect::allow, priority};
}
acl::Rule deny(std::int64_t id, std::string pattern, std::uint8_t access, int priority = 0) {
  return acl::Rule{id, std::move(pattern), access, acl::Effect::deny, priority};
}

// One device per behaviour the cache must carry: an active one with its own rules (a deny among
// them and %c/%u patterns), a renewed one with a revoked certificate, a disabled one and a typed
// one whose group grants it more.
std::shared_ptr<const Snapshot> fleet() {
  std::vector<DeviceAccess> devices;
  devices.push_back(DeviceAccess{"dev1",
                                 DeviceStatus::active,
                                 "",
                                 {deny(11, "devices/dev1/secret", acl::kReadWrite, 10),
                                  allow(12, "clients/%c/#", acl::kPublish, 5),
                                  allow(13, "users/%u/inbox", acl::kSubscribe | acl::kRead)},
                                 {cert(1)}});
  devices.push_back(DeviceAccess{
      "renewed", DeviceStatus::active, "", {}, {cert(2, CertificateStatus::revoked), cert(3)}});
  devices.push_back(DeviceAccess{"off", DeviceStatus::disabled, "", {}, {cert(4)}});
  devices.push_back(DeviceAccess{"sensor-7", DeviceStatus::active, "sensor", {}, {cert(5)}});
  std::vector<GroupAccess> groups;
  groups.push_back(GroupAccess{"default", {allow(1, "devices/%d/#", acl::kReadWrite)}});
  groups.push_back(GroupAccess{"sensor",
                               {allow(2, "fleet/sensors/#", acl::kSubscribe | acl::kRead),
                                deny(3, "fleet/sensors/admin", acl::kSubscribe, 1)}});
  return Snapshot::build(std::move(devices), std::move(groups), 4711);
}

ConnectReason verdict(const Snapshot& snapshot, int cert_n, std::string_view device) {
  const std::string fp = fingerprint(cert_n);
  return snapshot.connect_verdict({fp, device, device}, kNow, false).reason;
}

acl::Decision decide(const Snapshot& snapshot, std::string_view username,
                     std::string_view client_id, acl::Access access, std::string_view topic) {
  return snapshot.check_access(username, client_id, access, topic).decision;
}

// A file of the current format around `body`, with a checksum that matches: what a crafted or
// buggy writer could produce, to test the checks behind the checksum.
std::string with_checksum(const std::string& body) {
  std::string bytes = std::string(kSnapshotCacheMagic) + body;
  auto digest = sha256_hex(bytes);
  REQUIRE(digest.ok());
  return bytes + *digest;
}

// Little-endian pieces of a hand-written body.
std::string u8(std::uint8_t v) { return std::string(1, static_cast<char>(v)); }
std::string u32(std::uint32_t v) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  return out;
}
std::string i64(std::int64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i)));
  return out;
}
std::string str(std::string_view s) {
  return u32(static_cast<std::uint32_t>(s.size())) + std::string(s);
}
std::string rule(std::uint8_t access, std::uint8_t effect) {
  return i64(1) + u8(access) + u8(effect) + u32(0) + str("a/#");
}
// One device "d" with one rule and one certificate, then one group "default" with one rule.
std::string body(std::uint8_t device_status = 0, std::uint8_t cert_status = 0,
                 std::uint8_t access = 7, std::uint8_t effect = 0) {
  return i64(9) + u32(1) + str("d") + u8(device_status) + str("") + u32(1) + rule(access, effect) +
         u32(1) + str(fingerprint(1)) + str("01") + u8(cert_status) + i64(kNow - kDay) +
         i64(kNow + kDay) + u32(1) + str("default") + u32(1) + rule(7, 0);
}

std::string decode_error(std::string_view bytes, Errc expected = Errc::corrupt) {
  auto result = decode_snapshot_cache(bytes, "cache.bin");
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == expected);
  CHECK(result.error().message.find("cache.bin") != std::string::npos);
  return result.error().message;
}

std::string read_error(const fs::path& path, Errc expected) {
  auto result = read_snapshot_cache(path);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == expected);
  CHECK(result.error().message.find(path.string()) != std::string::npos);
  return result.error().message;
}

void write_bytes(const fs::path& path, std::string_view bytes, mode_t mode = 0600) {
  REQUIRE(write_file_atomic(path, bytes, mode, Overwrite::replace).ok());
}

std::string file_bytes(const fs::path& path) {
  auto bytes = read_file(path, kSnapshotCacheMaxBytes);
  REQUIRE(bytes.ok());
  return *bytes;
}

using Catch::Matchers::Contains;

}  // namespace

TEST_CASE("snapshot cache: a round trip decides every connect and topic check as the original") {
  TempDir dir;
  const auto original = fleet();
  REQUIRE(write_snapshot_cache(*original, dir / "cache").ok());
  auto read = read_snapshot_cache(dir / "cache");
  REQUIRE(read.ok());
  const Snapshot& copy = **read;

  CHECK(copy.change_seq() == 4711);
  CHECK(copy.device_count() == original->device_count());
  for (const Snapshot* s : {original.get(), &copy}) {
    CHECK(verdict(*s, 1, "dev1") == ConnectReason::accepted);
    CHECK(verdict(*s, 2, "renewed") == ConnectReason::certificate_revoked);
    CHECK(verdict(*s, 3, "renewed") == ConnectReason::accepted);
    CHECK(verdict(*s, 4, "off") == ConnectReason::device_disabled);
    CHECK(verdict(*s, 5, "sensor-7") == ConnectReason::accepted);
    CHECK(verdict(*s, 99, "dev1") == ConnectReason::unknown_certificate);

    // The default group's %d rule, the device's own deny above it, %c and %u.
    CHECK(decide(*s, "dev1", "dev1", acl::kPublish, "devices/dev1/x") == acl::Decision::allow);
    CHECK(decide(*s, "dev1", "dev1", acl::kPublish, "devices/dev1/secret") == acl::Decision::deny);
    CHECK(decide(*s, "dev1", "dev1", acl::kPublish, "devices/renewed/x") ==
          acl::Decision::no_match);
    CHECK(decide(*s, "dev1", "cid", acl::kPublish, "clients/cid/a") == acl::Decision::allow);
    CHECK(decide(*s, "dev1", "cid", acl::kPublish, "clients/other/a") == acl::Decision::no_match);
    CHECK(decide(*s, "dev1", "cid", acl::kSubscribe, "users/dev1/inbox") == acl::Decision::allow);
    CHECK(decide(*s, "dev1", "cid", acl::kSubscribe, "users/x/inbox") == acl::Decision::no_match);
    // A type group's rules, its deny, and none of them for a device of no type.
    CHECK(decide(*s, "sensor-7", "sensor-7", acl::kSubscribe, "fleet/sensors/t") ==
          acl::Decision::allow);
    CHECK(decide(*s, "sensor-7", "sensor-7", acl::kSubscribe, "fleet/sensors/admin") ==
          acl::Decision::deny);
    CHECK(decide(*s, "dev1", "dev1", acl::kSubscribe, "fleet/sensors/t") ==
          acl::Decision::no_match);
    // A disabled device is denied even what its rules allow.
    CHECK(decide(*s, "off", "off", acl::kPublish, "devices/off/x") == acl::Decision::deny);
  }

  // Every field came back, not only the ones the checks above happen to reach.
  original->for_each_device([&](const SnapshotDevice& record) {
    const DeviceAccess device = record.to_access();
    const SnapshotDevice* back = copy.find_device(device.id);
    REQUIRE(back != nullptr);
    CHECK(back->status() == device.status);
    CHECK(back->type() == device.type);
    REQUIRE(back->rules().size() == device.rules.size());
    for (std::size_t i = 0; i < device.rules.size(); ++i) {
      CHECK(back->rules()[i].id == device.rules[i].id);
      CHECK(back->rules()[i].pattern.text() == device.rules[i].pattern.text());
      CHECK(back->rules()[i].access == device.rules[i].access);
      CHECK(back->rules()[i].effect == device.rules[i].effect);
      CHECK(back->rules()[i].priority == device.rules[i].priority);
    }
    REQUIRE(back->certificates().size() == device.certificates.size());
    for (std::size_t i = 0; i < device.certificates.size(); ++i) {
      const auto& a = device.certificates[i];
      const auto& b = back->certificates()[i];
      CHECK(b.sha256_fingerprint() == a.sha256_fingerprint);
      CHECK(b.serial_hex() == a.serial_hex);
      CHECK(b.status() == a.status);
      CHECK(b.not_before() == a.not_before);
      CHECK(b.not_after() == a.not_after);
    }
  });
  std::size_t groups = 0;
  original->for_each_group([&](const GroupAccess& group) {
    ++groups;
    const GroupAccess* back = copy.find_group(group.name);
    REQUIRE(back != nullptr);
    REQUIRE(back->rules.size() == group.rules.size());
    for (std::size_t i = 0; i < group.rules.size(); ++i) {
      CHECK(back->rules[i].pattern.text() == group.rules[i].pattern.text());
      CHECK(back->rules[i].effect == group.rules[i].effect);
    }
  });
  CHECK(groups == 2);
}

TEST_CASE("snapshot cache: an empty registry round-trips") {
  TempDir dir;
  REQUIRE(write_snapshot_cache(*Snapshot::build({}, {}, 0), dir / "cache").ok());
  auto read = read_snapshot_cache(dir / "cache");
  REQUIRE(read.ok());
  CHECK((*read)->device_count() == 0);
  CHECK((*read)->change_seq() == 0);
  CHECK((*read)->find_group("default") == nullptr);
  CHECK((*read)->check_access("dev1", "dev1", acl::kPublish, "devices/dev1/x").decision !=
        acl::Decision::allow);
}

TEST_CASE("snapshot cache: the file is written 0600 and a second write replaces the first") {
  TempDir dir;
  ::umask(022);
  REQUIRE(write_snapshot_cache(*fleet(), dir / "cache").ok());
  CHECK(test::mode_of(dir / "cache") == 0600);
  REQUIRE(write_snapshot_cache(*Snapshot::build({}, {}, 5), dir / "cache").ok());
  CHECK(test::mode_of(dir / "cache") == 0600);
  CHECK(test::files_in(dir.path()) == 1);  // no temporary file left behind
  auto read = read_snapshot_cache(dir / "cache");
  REQUIRE(read.ok());
  CHECK((*read)->change_seq() == 5);
  CHECK(file_bytes(dir / "cache").starts_with(kSnapshotCacheMagic));
}

TEST_CASE("snapshot cache: a snapshot the reader would refuse is not written") {
  TempDir dir;
  std::vector<DeviceAccess> devices{
      DeviceAccess{"d", DeviceStatus::active, "", {allow(1, "a/#", 0)}, {cert(1)}}};
  auto status = write_snapshot_cache(*Snapshot::build(std::move(devices), {}, 1), dir / "cache");
  REQUIRE_FALSE(status.ok());
  CHECK(status.error().code == Errc::internal);
  CHECK_THAT(status.error().message, Contains("invalid access mask"));
  CHECK(test::files_in(dir.path()) == 0);
  CHECK(write_snapshot_cache(*fleet(), dir / "cache").ok());  // the control
}

TEST_CASE("snapshot cache: flipping any single byte is refused") {
  auto encoded = encode_snapshot_cache(*fleet());
  REQUIRE(encoded.ok());
  const std::string good = *encoded;
  REQUIRE(decode_snapshot_cache(good, "cache.bin").ok());  // the control
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    INFO("byte " << i);
    auto result = decode_snapshot_cache(bad, "cache.bin");
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Errc::corrupt);
  }
  // In the body, it is the checksum that notices.
  std::string bad = good;
  bad[kSnapshotCacheMagic.size() + 20] =
      static_cast<char>(bad[kSnapshotCacheMagic.size() + 20] ^ 0x40);
  CHECK_THAT(decode_error(bad), Contains("checksum mismatch"));

  // And from a file, as the broker reads it.
  TempDir dir;
  write_bytes(dir / "cache", bad);
  CHECK_THAT(read_error(dir / "cache", Errc::corrupt), Contains("checksum mismatch"));
}

TEST_CASE("snapshot cache: a truncated file is refused wherever it ends") {
  auto encoded = encode_snapshot_cache(*fleet());
  REQUIRE(encoded.ok());
  const std::string good = *encoded;
  for (std::size_t size :
       {std::size_t{0}, std::size_t{5}, kSnapshotCacheMagic.size() - 1, kSnapshotCacheMagic.size(),
        kSnapshotCacheMagic.size() + 30, good.size() / 2, good.size() - 64, good.size() - 1}) {
    INFO("cut at " << size);
    decode_error(good.substr(0, size));
  }
  CHECK_THAT(decode_error(good.substr(0, good.size() - 1)), Contains("checksum mismatch"));
  CHECK_THAT(decode_error(good.substr(0, kSnapshotCacheMagic.size() + 10)),
             Contains("truncated before its checksum"));
  // Behind a matching checksum, the body parser sees the cut too.
  const std::string b = body();
  CHECK_THAT(decode_error(with_checksum(b.substr(0, 4))), Contains("truncated in the change seq"));
  CHECK_THAT(decode_error(with_checksum(b.substr(0, b.size() - 1))),
             Contains("a rule pattern length 3 exceeds the 2 bytes left"));
  CHECK_THAT(decode_error(with_checksum(b.substr(0, b.size() - 5))),
             Contains("rule count 1 exceeds the 16 bytes left"));
  CHECK(decode_snapshot_cache(with_checksum(b), "cache.bin").ok());  // the control
}

TEST_CASE("snapshot cache: trailing bytes are refused") {
  auto encoded = encode_snapshot_cache(*fleet());
  REQUIRE(encoded.ok());
  CHECK_THAT(decode_error(*encoded + "x"), Contains("checksum mismatch"));
  CHECK_THAT(decode_error(with_checksum(body() + "x")),
             Contains("1 trailing bytes after the groups"));
}

TEST_CASE("snapshot cache: a wrong magic or an unknown version is refused") {
  auto encoded = encode_snapshot_cache(*fleet());
  REQUIRE(encoded.ok());
  std::string other = *encoded;
  other.replace(0, 7, "ONBOARD");
  CHECK_THAT(decode_error(other), Contains("not a snapshot cache file"));
  CHECK_THAT(decode_error("SQLite format 3"), Contains("wrong magic"));
  std::string v2 = "onboard-snapshot-cache 2\n" + body();
  v2 += sha256_hex(v2).value();
  CHECK_THAT(decode_error(v2), Contains("format version 2 that is not supported"));
  CHECK_THAT(decode_error("onboard-snapshot-cache 1"), Contains("header line"));
  // Bytes that are not a version number are not repeated into the log.
  const std::string odd = decode_error("onboard-snapshot-cache \x1b[2J\n" + body());
  CHECK_THAT(odd, Contains("a format version that is not supported"));
  CHECK(odd.find('\x1b') == std::string::npos);
}

TEST_CASE("snapshot cache: a count or length beyond the bytes left is refused before allocating") {
  // Four billion devices claimed by a file of a few bytes.
  CHECK_THAT(decode_error(with_checksum(i64(1) + u32(0xffffffff) + u32(0))),
             Contains("device count 4294967295 exceeds the 4 bytes left"));
  CHECK_THAT(decode_error(with_checksum(i64(1) + u32(1) + u32(0xfffffff0) + std::string(20, 'a'))),
             Contains("a device id length 4294967280 exceeds the 20 bytes left"));
  CHECK_THAT(decode_error(with_checksum(i64(1) + u32(0) + u32(1000))),
             Contains("group count 1000 exceeds the 0 bytes left"));
  std::string rules_claimed = i64(1) + u32(1) + str("d") + u8(0) + str("") + u32(0x10000000);
  CHECK_THAT(decode_error(with_checksum(rules_claimed + u32(0) + u32(0))),
             Contains("rule count 268435456 exceeds"));
}

TEST_CASE("snapshot cache: invalid enum values and access masks are refused") {
  CHECK(decode_snapshot_cache(with_checksum(body()), "cache.bin").ok());  // the control
  CHECK_THAT(decode_error(with_checksum(body(3))), Contains("invalid device status 3"));
  CHECK_THAT(decode_error(with_checksum(body(0, 2))), Contains("invalid certificate status 2"));
  CHECK_THAT(decode_error(with_checksum(body(0, 0, 0))), Contains("invalid access mask 0"));
  CHECK_THAT(decode_error(with_checksum(body(0, 0, 8))), Contains("invalid access mask 8"));
  CHECK_THAT(decode_error(with_checksum(body(0, 0, 7, 2))), Contains("invalid rule effect 2"));
  for (std::uint8_t mask = 1; mask <= 7; ++mask) {
    CHECK(decode_snapshot_cache(with_checksum(body(0, 0, mask)), "cache.bin").ok());
  }
}

TEST_CASE("snapshot cache: a device or group listed twice is refused") {
  const std::string device = str("d") + u8(0) + str("") + u32(0) + u32(0);
  CHECK_THAT(decode_error(with_checksum(i64(1) + u32(2) + device + device + u32(0))),
             Contains("a device id is listed twice"));
  const std::string group = str("default") + u32(0);
  CHECK_THAT(decode_error(with_checksum(i64(1) + u32(0) + u32(2) + group + group)),
             Contains("a group name is listed twice"));
  CHECK(decode_snapshot_cache(with_checksum(i64(1) + u32(1) + device + u32(1) + group), "c").ok());
}

TEST_CASE("snapshot cache: a file its group or others may write is refused") {
  TempDir dir;
  REQUIRE(write_snapshot_cache(*fleet(), dir / "cache").ok());
  REQUIRE(read_snapshot_cache(dir / "cache").ok());  // the control, 0600
  REQUIRE(::chmod((dir / "cache").c_str(), 0644) == 0);
  CHECK(read_snapshot_cache(dir / "cache").ok());  // readable by others is not a risk to us
  REQUIRE(::chmod((dir / "cache").c_str(), 0664) == 0);
  CHECK_THAT(read_error(dir / "cache", Errc::invalid_input),
             Contains("mode 0664 lets its group or others write it"));
  REQUIRE(::chmod((dir / "cache").c_str(), 0602) == 0);
  CHECK_THAT(read_error(dir / "cache", Errc::invalid_input), Contains("mode 0602"));
}

TEST_CASE("snapshot cache: a symbolic link is refused even to a good file") {
  TempDir dir;
  REQUIRE(write_snapshot_cache(*fleet(), dir / "cache").ok());
  REQUIRE(read_snapshot_cache(dir / "cache").ok());  // the control: the target itself
  fs::create_symlink(dir / "cache", dir / "link");
  CHECK_THAT(read_error(dir / "link", Errc::invalid_input), Contains("is a symbolic link"));
}

TEST_CASE("snapshot cache: a directory or a FIFO is refused as not a regular file") {
  TempDir dir;
  fs::create_directory(dir / "cache");
  CHECK_THAT(read_error(dir / "cache", Errc::invalid_input), Contains("not a regular file"));
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  CHECK_THAT(read_error(dir / "fifo", Errc::invalid_input), Contains("not a regular file"));
}

TEST_CASE("snapshot cache: a missing file is not_found and an unreadable one is io") {
  TempDir dir;
  CHECK_THAT(read_error(dir / "absent", Errc::not_found), Contains("no such file"));
  CHECK_THAT(read_error(dir / "absent" / "cache", Errc::not_found), Contains("no such file"));
  if (::geteuid() != 0) {  // root reads whatever the mode says
    REQUIRE(write_snapshot_cache(*fleet(), dir / "cache").ok());
    REQUIRE(::chmod((dir / "cache").c_str(), 0200) == 0);
    CHECK_THAT(read_error(dir / "cache", Errc::io), Contains("cannot open"));
  }
}

TEST_CASE("snapshot cache: a file owned by another user is refused") {
  if (::geteuid() != 0) {
    WARN("not root: cannot give a file to another user, so this case is not exercised");
    return;
  }
  TempDir dir;
  REQUIRE(write_snapshot_cache(*fleet(), dir / "cache").ok());
  REQUIRE(read_snapshot_cache(dir / "cache").ok());              // the control: our own file
  REQUIRE(::chown((dir / "cache").c_str(), 65534, 65534) == 0);  // nobody
  CHECK_THAT(read_error(dir / "cache", Errc::invalid_input),
             Contains("owned by uid 65534, not by this process's uid 0"));
}

// A fleet the size the format must carry (counts and lengths past 16 bits). Prints what the cache
// costs next to building the snapshot it holds; numbers from an optimised build are in
// docs/architecture.md (this is a Debug build: a note, not a timed assertion).
TEST_CASE("snapshot cache: a registry of 100k devices round-trips") {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  constexpr int kDevices = 100'000;
  std::vector<DeviceAccess> devices;
  devices.reserve(kDevices);
  for (int i = 0; i < kDevices; ++i) {
    const std::string id = "device-" + std::to_string(i);
    devices.push_back(DeviceAccess{
        id,
        DeviceStatus::active,
        "sensor",
        {allow(2 * i, "devices/%d/telemetry/#", acl::kPublish),
         deny(2 * i + 1, "devices/%d/config", acl::kPublish, 1)},
        {cert(i), CertificateAccess{fingerprint(kDevices + i), "0123456789abcdef0123456789abcdef",
                                    CertificateStatus::revoked, kNow - 400 * kDay, kNow - kDay}}});
  }
  std::vector<GroupAccess> groups{{"default", {allow(1, "devices/%d/#", acl::kReadWrite)}},
                                  {"sensor", {allow(2, "fleet/sensors/#", acl::kRead)}}};
  auto t0 = Clock::now();
  const auto snapshot = Snapshot::build(std::move(devices), std::move(groups), 1);
  auto t1 = Clock::now();
  TempDir dir;
  REQUIRE(write_snapshot_cache(*snapshot, dir / "cache").ok());
  auto t2 = Clock::now();
  auto read = read_snapshot_cache(dir / "cache");
  auto t3 = Clock::now();
  REQUIRE(read.ok());
  CHECK((*read)->device_count() == kDevices);
  CHECK((*read)
            ->connect_verdict({fingerprint(99'999), "device-99999", "device-99999"}, kNow, false)
            .accepted());
  CHECK((*read)
            ->connect_verdict({fingerprint(kDevices + 5), "device-5", "device-5"}, kNow, false)
            .reason == ConnectReason::certificate_revoked);
  CHECK(decide(**read, "device-77", "device-77", acl::kPublish, "devices/device-77/config") ==
        acl::Decision::deny);
  CHECK(decide(**read, "device-77", "device-77", acl::kPublish, "devices/device-77/telemetry/t") ==
        acl::Decision::allow);
  WARN("100k devices, 2 rules and 2 certificates each: build "
       << ms(t1 - t0) << " ms, write " << ms(t2 - t1) << " ms, read " << ms(t3 - t2) << " ms, file "
       << fs::file_size(dir / "cache") << " bytes");
}
