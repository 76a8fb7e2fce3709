// What the registry's tests share: a clock, an operator, certificate records that never collide,
// and a store in a temporary directory. Records only: nothing here signs anything.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "registry/sqlite_store.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

namespace onboard::test {

inline constexpr UnixTime kNow = 1'700'000'000;
inline const registry::Actor kAlice{"alice", kNow};
inline constexpr std::string_view kTestIssuer = "CN=Onboard Test CA";

inline std::string registry_path(const TempDir& dir) { return (dir / "registry.db").string(); }

inline std::unique_ptr<registry::Store> open_test_store(
    const TempDir& dir, registry::OpenMode mode = registry::OpenMode::read_write) {
  return must(registry::open_sqlite_store(registry_path(dir), mode));
}

// A certificate record for `subject_cn` whose serial (upper-case hex) and fingerprint no other
// call in the process returns, valid for a year from kNow; `held_key` as register_device takes it.
inline registry::NewCertificate test_certificate(std::string_view subject_cn,
                                                 std::string_view issuer = kTestIssuer,
                                                 std::string held_key = "") {
  static std::atomic<std::uint64_t> counter{1};
  const auto n = static_cast<unsigned long long>(counter++);
  char serial[33], fingerprint[65];
  std::snprintf(serial, sizeof serial, "%032llX", n);
  std::snprintf(fingerprint, sizeof fingerprint, "%064llx", n);
  return registry::NewCertificate{serial,
                                  std::string(issuer),
                                  fingerprint,
                                  "CN=" + std::string(subject_cn),
                                  kNow,
                                  kNow + 365 * 86400,
                                  "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                                  std::move(held_key)};
}

inline registry::NewDevice new_device(std::string id, std::string type = "") {
  registry::NewDevice d;
  d.id = std::move(id);
  d.type = std::move(type);
  return d;
}

// Registers `id` with a fresh certificate; returns the certificate recorded.
inline registry::NewCertificate register_test_device(registry::Store& store, const std::string& id,
                                                     const std::string& type = "") {
  auto certificate = test_certificate(id);
  must(store.register_device(new_device(id, type), certificate, kAlice));
  return certificate;
}

}  // namespace onboard::test
