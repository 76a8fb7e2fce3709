// What the registry's tests share: a clock, an operator, certificate records that never collide,
// and a store for each test. Records only: nothing here signs anything.
//
// The Store tests are one conformance suite for every backend, compiled once and linked twice: with
// backend_sqlite.cpp they run on an SQLite file in the test's temporary directory (registry_tests),
// with backend_postgres.cpp on a fresh database in the test cluster (registry_pg_tests). A test of
// one backend's own behaviour carries the tag [sqlite] or [postgres] and runs only there.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <SQLiteCpp/Database.h>

#include <filesystem>
#include <fstream>

#include "registry/open.h"
#include "registry/pg_database.h"
#include "registry/sqlite_store.h"
#include "tests/support/postgres.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

namespace onboard::test {

inline constexpr UnixTime kNow = 1'700'000'000;
inline const registry::Actor kAlice{"alice", kNow};
inline constexpr std::string_view kTestIssuer = "CN=Onboard Test CA";

inline std::string registry_path(const TempDir& dir) { return (dir / "registry.db").string(); }

// Defined by the executable: backend_sqlite.cpp or backend_postgres.cpp.
extern const registry::Backend kTestBackend;

// The registry of the test that uses `dir`: the SQLite file in it, or a fresh PostgreSQL database
// made on first use and remembered in the directory, so that reopening finds the same one.
inline registry::Location test_location(const TempDir& dir) {
  if (kTestBackend == registry::Backend::sqlite) {
    return registry::Location{registry::Backend::sqlite, registry_path(dir)};
  }
  const auto remembered = dir / "postgres.conninfo";
  std::string conninfo;
  if (std::ifstream in(remembered); in) std::getline(in, conninfo);
  if (conninfo.empty()) {
    conninfo = fresh_test_database("registry");
    std::ofstream(remembered) << conninfo << '\n';
  }
  return registry::Location{registry::Backend::postgresql, conninfo};
}

inline std::unique_ptr<registry::Store> open_test_store(
    const TempDir& dir, registry::OpenMode mode = registry::OpenMode::read_write) {
  return must(registry::open_store(test_location(dir), mode));
}

// SQL run on the test's registry behind the Store's back: to count what a change left behind, or
// to damage the registry on purpose. Throws on failure.
inline void raw_exec(const TempDir& dir, const std::string& sql) {
  const auto location = test_location(dir);
  if (location.backend == registry::Backend::sqlite) {
    SQLite::Database raw(location.target, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec(sql);
    return;
  }
  must(registry::pg::connect(location, {}))->exec(sql);
}

inline std::int64_t raw_int64(const TempDir& dir, const std::string& sql) {
  const auto location = test_location(dir);
  if (location.backend == registry::Backend::sqlite) {
    SQLite::Database raw(location.target, SQLite::OPEN_READONLY);
    return raw.execAndGet(sql).getInt64();
  }
  auto db = must(registry::pg::connect(location, {}));
  return registry::sql::query_int64(*db, sql);
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
