// Registry benchmark: what the broker plugin's snapshot costs at 1k, 100k and 1M devices.
//
//   build_pure/N      Snapshot::build from DeviceAccess values already in memory
//   load_sqlite/N     load_snapshot from an SQLite registry (Store::read_access + build)
//   check_access/N    one ACL decision, ns; a mix of allowed, denied and unmatched topics, each on
//                     a random device of the N
//   check_access_hot/N the same decisions on 256 of the N devices (a broker's active few hundred)
//   connect_verdict/N one connect check, ns
//   with_changes/N    deriving the next snapshot with one device changed
//   refresh_sqlite/N  one registry change (a device disabled or enabled) picked up end to end:
//                     refresh_snapshot reading the change feed and the device, then with_changes
//
// The plugin's own path for a connected device (plugin/accepted_clients.h, client_rules.h), with
// C = 10k or 100k devices of the N connected (as many as N allows):
//   client_decide_Ck/N       one topic decision for a random connected client, ns: AcceptedClients'
//                            lookup, then its bound ClientRules; never the kept answer. Also the
//                            plugin's memory per connected client (resident, and as
//                            AcceptedClients::heap_bytes counts it)
//   client_decide_kept_Ck/N  the same, every answer the client's kept one
//   client_rebind_Ck/N       a client's first decision after a snapshot swap: its rules brought
//                            up to date (the change was to another device), never the kept answer
//   clients_rebind_Ck/N      every connected client's rules brought up to date after a swap, all
//                            C in one round, ms (and per client, ns; per client beyond reading its
//                            binding, extra_per_client_ns; bindings made again, rebound_per_swap)
//   snapshot_swap_Ck/N       the broker thread's part of a swap: Handover::take and
//                            BrokerSnapshot::replace, µs
// Every answer of the plugin's path is checked against Snapshot::check_access before timing.
//
// Every device has ten rules of its own and one certificate; ten type groups have two rules each
// and "default" has its usual one, so a decision weighs thirteen rules. The build and load
// benchmarks report the resident memory the snapshot added (from /proc/self/statm, after
// malloc_trim), in MiB and per device.
//
// The SQLite registry is made by the Store (open_sqlite_store creates the schema) and then filled
// with one raw INSERT transaction: the Store's one-transaction-per-change API with its audit chain
// would take hours for ten million rules. Rows are what the Store would write, with a realistic
// 1 KiB PEM per certificate so that the file is as large as a real one.
//
// Sizes: --sizes=1000,100000,1000000 (the default); the other flags are Google Benchmark's.
//
// Fill mode (no benchmarks): --fill=DATA_DIR/registry.db --devices=N [--revoked=M] adds N devices
// to an EXISTING registry that `onboardctl init` made and that has no devices yet, so that
// onboardctl itself can be timed on a large fleet (bench/run's `registry` part). Each device gets
// the rows `device register` would write (device, one certificate, a change row) plus the ten own
// rules above; the ten type groups get their two rules each. With --revoked=M the first M devices
// are revoked as `device revoke` would leave them (device and certificate revoked, reason
// keyCompromise), so that CRL building can be timed with a long revocation list. Invariants kept:
// meta.change_seq advances by one per change row, in the same transaction (one row per group and
// per device, so a reader that saw the old seq reloads exactly what was added); the audit chain
// gets ONE properly chained "bench.fill" row (not one per device), so `onboardctl audit verify`
// passes (after the next onboardctl command attested the fill, see the end of the fill) and the
// log says the fleet was bulk-loaded; the CRL number and file are untouched
// (`onboardctl crl` rewrites the file). No ANALYZE is run: the query planner sees what a registry
// grown by onboardctl would show it.
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark_main.h"
#include "plugin/accepted_clients.h"
#include "plugin/broker_snapshot.h"
#include "plugin/client_rules.h"
#include "registry/audit.h"
#include "registry/snapshot.h"
#include "registry/snapshot_loader.h"
#include "registry/sqlite_store.h"

namespace {

using namespace onboard;
using namespace onboard::registry;
using Clock = std::chrono::steady_clock;

constexpr UnixTime kNow = 1'700'000'000;
constexpr int kRulesPerDevice = 10;
constexpr int kTypes = 10;
constexpr std::size_t kQueries = 8192;  // decisions cycled through, on random devices

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "registry_bench: %s\n", message.c_str());
  std::exit(2);
}

template <class T>
T must(Result<T> result) {
  if (!result.ok()) die(result.error().message);
  return std::move(result).value();
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Resident set size in bytes, after handing freed memory back to the system so that what is left
// is what is in use.
double resident_bytes() {
  ::malloc_trim(0);
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

// --- the fleet --------------------------------------------------------------------------------

std::string device_id(std::size_t i) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "dev-%07zu", i);
  return buffer;
}
std::string type_of(std::size_t i) { return "type-" + std::to_string(i % kTypes); }
std::string hex(std::size_t value, int width, bool upper) {
  char buffer[80];
  std::snprintf(buffer, sizeof buffer, upper ? "%0*zX" : "%0*zx", width, value);
  return buffer;
}
std::string fingerprint_of(std::size_t i) { return hex(i + 1, 64, false); }

// The fleet's patterns are interned as Store::read_access interns them, so that the values handed
// to Snapshot::build look like what the loader hands it (one node per distinct pattern).
acl::PatternPool fleet_patterns;

acl::Rule rule(std::int64_t id, const std::string& pattern, std::uint8_t access, acl::Effect effect,
               int priority = 0) {
  return acl::Rule{id, fleet_patterns.intern_text(pattern), access, effect, priority};
}

DeviceAccess make_device(std::size_t i) {
  using acl::Effect;
  DeviceAccess d;
  d.id = device_id(i);
  d.type = type_of(i);
  const auto base = static_cast<std::int64_t>(i) * kRulesPerDevice + 100;
  d.rules = {
      rule(base + 0, "telemetry/%d/+", acl::kPublish, Effect::allow),
      rule(base + 1, "telemetry/%d/+/raw", acl::kPublish, Effect::allow),
      rule(base + 2, "commands/%d/#", acl::kSubscribe | acl::kRead, Effect::allow),
      rule(base + 3, "fleet/firmware/" + d.type + "/+", acl::kRead, Effect::allow),
      rule(base + 4, "events/%d/alarm", acl::kPublish, Effect::allow),
      rule(base + 5, "telemetry/%d/debug", acl::kPublish, Effect::deny, 1),
      rule(base + 6, "shadow/%d/state", acl::kReadWrite, Effect::allow),
      rule(base + 7, "commands/%d/factory-reset", acl::kReadWrite, Effect::deny, 1),
      rule(base + 8, "config/%d/+", acl::kSubscribe | acl::kRead, Effect::allow),
      rule(base + 9, "logs/%d/+/+", acl::kPublish, Effect::allow),
  };
  d.certificates.push_back(CertificateAccess{fingerprint_of(i), hex(i + 1, 32, true),
                                             CertificateStatus::active, kNow - 86'400,
                                             kNow + 365 * 86'400});
  return d;
}

std::vector<GroupAccess> make_groups() {
  std::vector<GroupAccess> groups;
  groups.push_back(
      GroupAccess{"default", {rule(1, "devices/%d/#", acl::kReadWrite, acl::Effect::allow)}});
  for (int t = 0; t < kTypes; ++t) {
    groups.push_back(GroupAccess{
        "type-" + std::to_string(t),
        {rule(2 + 2 * t, "fleet/broadcast/#", acl::kSubscribe | acl::kRead, acl::Effect::allow),
         rule(3 + 2 * t, "fleet/#", acl::kPublish, acl::Effect::deny, 2)}});
  }
  return groups;
}

std::vector<DeviceAccess> make_devices(std::size_t n) {
  std::vector<DeviceAccess> devices;
  devices.reserve(n);
  for (std::size_t i = 0; i < n; ++i) devices.push_back(make_device(i));
  return devices;
}

// --- an SQLite registry holding the same fleet
// ------------------------------------------------------

class SqliteFleet {
 public:
  explicit SqliteFleet(std::size_t n) {
    char pattern[] = "/tmp/onboard-registry-bench-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) die("mkdtemp failed");
    dir_ = pattern;
    path_ = dir_ / "registry.db";
    write(path_, n);
  }
  // The same fleet in a new registry at `path` that outlives the program (--write-fleet).
  static void write(const std::filesystem::path& path, std::size_t n) {
    if (std::filesystem::exists(path))
      die(path.string() + " exists; write the fleet to a new file");
    must(open_sqlite_store(path, OpenMode::read_write));  // the schema, as the Store makes it
    const auto start = Clock::now();
    fill(path, n);
    std::fprintf(stderr, "registry_bench: wrote %zu devices to %s in %.1f s (%.0f MiB)\n", n,
                 path.c_str(), seconds_since(start),
                 static_cast<double>(std::filesystem::file_size(path)) / (1 << 20));
  }
  SqliteFleet(const SqliteFleet&) = delete;
  SqliteFleet& operator=(const SqliteFleet&) = delete;
  ~SqliteFleet() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  static void fill(const std::filesystem::path& path, std::size_t n) {
    SQLite::Database db(path.string(), SQLite::OPEN_READWRITE);
    db.exec("PRAGMA synchronous = OFF");  // this connection only: filling, not measuring
    SQLite::Transaction transaction(db, SQLite::TransactionBehavior::IMMEDIATE);
    const std::string pem =
        "-----BEGIN CERTIFICATE-----\n" + std::string(960, 'A') + "\n-----END CERTIFICATE-----\n";
    SQLite::Statement group(db,
                            "INSERT INTO groups (name, description, created_at) VALUES (?, '', ?)");
    SQLite::Statement group_rule(db,
                                 "INSERT INTO acl_rules (group_name, access, pattern, effect, "
                                 "priority, created_at) VALUES (?, ?, ?, ?, ?, ?)");
    for (const auto& g : make_groups()) {
      if (g.name != kDefaultGroup) {
        group.reset();
        group.bind(1, g.name);
        group.bind(2, kNow);
        group.exec();
        for (const auto& r : g.rules) {
          group_rule.reset();
          group_rule.bind(1, g.name);
          group_rule.bind(2, r.access);
          group_rule.bind(3, std::string(r.pattern.text()));
          group_rule.bind(4, r.effect == acl::Effect::allow ? "allow" : "deny");
          group_rule.bind(5, r.priority);
          group_rule.bind(6, kNow);
          group_rule.exec();
        }
      }
    }
    SQLite::Statement device(db,
                             "INSERT INTO devices (id, name, type, location, firmware, status, "
                             "created_at, updated_at, metadata) "
                             "VALUES (?1, ?1, ?2, '', '1.0.0', 'active', ?3, ?3, '{}')");
    SQLite::Statement certificate(db,
                                  "INSERT INTO certificates (serial_hex, issuer, "
                                  "sha256_fingerprint, device_id, subject, not_before, not_after, "
                                  "status, pem) VALUES (?, 'CN=Bench CA', ?, ?, ?, ?, ?, "
                                  "'active', ?)");
    SQLite::Statement device_rule(db,
                                  "INSERT INTO acl_rules (device_id, access, pattern, effect, "
                                  "priority, created_at) VALUES (?, ?, ?, ?, ?, ?)");
    for (std::size_t i = 0; i < n; ++i) {
      const DeviceAccess d = make_device(i);
      device.reset();
      device.bind(1, d.id);
      device.bind(2, d.type);
      device.bind(3, kNow);
      device.exec();
      const auto& c = d.certificates.front();
      certificate.reset();
      certificate.bind(1, c.serial_hex);
      certificate.bind(2, c.sha256_fingerprint);
      certificate.bind(3, d.id);
      certificate.bind(4, "CN=" + d.id);
      certificate.bind(5, c.not_before);
      certificate.bind(6, c.not_after);
      certificate.bind(7, pem);
      certificate.exec();
      for (const auto& r : d.rules) {
        device_rule.reset();
        device_rule.bind(1, d.id);
        device_rule.bind(2, r.access);
        device_rule.bind(3, std::string(r.pattern.text()));
        device_rule.bind(4, r.effect == acl::Effect::allow ? "allow" : "deny");
        device_rule.bind(5, r.priority);
        device_rule.bind(6, kNow);
        device_rule.exec();
      }
    }
    db.exec("UPDATE meta SET change_seq = change_seq + 1 WHERE id = 1");
    db.exec(
        "INSERT INTO changes (seq, at, kind, subject) SELECT change_seq, 0, 'group', 'default' "
        "FROM meta WHERE id = 1");
    transaction.commit();
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
};

// --- fixtures, one size at a time
// -------------------------------------------------------------------

// The snapshot and registry of the size being measured; asking for another size drops these first,
// so that at most one fleet is in memory.
struct Fixtures {
  std::size_t size = 0;
  std::shared_ptr<const Snapshot> snapshot;
  std::unique_ptr<SqliteFleet> sqlite;

  void use(std::size_t n) {
    if (size == n) return;
    snapshot.reset();
    sqlite.reset();
    size = n;
  }
  const Snapshot& pure(std::size_t n) { return *snapshot_ptr(n); }
  std::shared_ptr<const Snapshot> snapshot_ptr(std::size_t n) {
    use(n);
    if (!snapshot) snapshot = Snapshot::build(make_devices(n), make_groups(), 1);
    return snapshot;
  }
  const SqliteFleet& registry(std::size_t n) {
    use(n);
    if (!sqlite) sqlite = std::make_unique<SqliteFleet>(n);
    return *sqlite;
  }
};
Fixtures fixtures;

void report_memory(benchmark::State& state, double added_bytes, std::size_t n) {
  state.counters["rss_added_MiB"] = added_bytes / (1 << 20);
  state.counters["bytes_per_device"] = added_bytes / static_cast<double>(n);
}

// --- benchmarks ---------------------------------------------------------------------------------

void build_pure(benchmark::State& state, std::size_t n) {
  fixtures.use(n);
  fixtures.snapshot.reset();  // the memory measured is this benchmark's snapshot alone
  double added = 0;
  for (auto _ : state) {
    const double before = resident_bytes();
    auto devices = make_devices(n);
    auto groups = make_groups();
    const auto start = Clock::now();
    auto snapshot = Snapshot::build(std::move(devices), std::move(groups), 1);
    state.SetIterationTime(seconds_since(start));
    devices = {};
    added = resident_bytes() - before;
    if (snapshot->device_count() != n) die("build_pure: wrong device count");
  }
  report_memory(state, added, n);
}

void load_sqlite(benchmark::State& state, std::size_t n) {
  const auto& fleet = fixtures.registry(n);
  auto store = must(open_sqlite_store(fleet.path(), OpenMode::read_only));
  double added = 0;
  for (auto _ : state) {
    const double before = resident_bytes();
    const auto start = Clock::now();
    auto snapshot = must(load_snapshot(*store));
    state.SetIterationTime(seconds_since(start));
    added = resident_bytes() - before;
    if (snapshot->device_count() != n) die("load_sqlite: wrong device count");
  }
  report_memory(state, added, n);
}

struct CheckQuery {
  std::string username;
  acl::Access access;
  std::string topic;
};

// `active` devices are asked about: all n (every decision is on a random device, mostly out of
// the CPU caches at 1M), or a few hundred, like a broker whose traffic comes from a few hundred
// devices at a time (their rules stay in cache).
void check_access_on(benchmark::State& state, std::size_t n, std::size_t active) {
  const Snapshot& snapshot = fixtures.pure(n);
  std::mt19937_64 random(7);
  std::vector<std::size_t> devices;
  for (std::size_t d = 0; d < std::min(active, n); ++d) devices.push_back(random() % n);
  std::vector<CheckQuery> queries;
  queries.reserve(kQueries);
  for (std::size_t q = 0; q < kQueries; ++q) {
    const std::size_t i = devices[random() % devices.size()];
    const std::string id = device_id(i);
    const std::string other = device_id((i + 1) % n);
    switch (q % 10) {
      case 0:
        queries.push_back({id, acl::kPublish, "telemetry/" + id + "/temp"});
        break;
      case 1:
        queries.push_back({id, acl::kPublish, "telemetry/" + id + "/debug"});
        break;
      case 2:
        queries.push_back({id, acl::kPublish, "telemetry/" + other + "/temp"});
        break;
      case 3:
        queries.push_back({id, acl::kRead, "commands/" + id + "/reboot"});
        break;
      case 4:
        queries.push_back({id, acl::kPublish, "commands/" + id + "/factory-reset"});
        break;
      case 5:
        queries.push_back({id, acl::kSubscribe, "config/" + id + "/+"});
        break;
      case 6:
        queries.push_back({id, acl::kRead, "fleet/broadcast/all"});
        break;
      case 7:
        queries.push_back({id, acl::kPublish, "fleet/x"});
        break;
      case 8:
        queries.push_back({id, acl::kPublish, "devices/" + id + "/status"});
        break;
      default:
        queries.push_back({id, acl::kPublish, "logs/" + id + "/app/error"});
        break;
    }
  }
  std::size_t q = 0, allowed = 0, decisions = 0;
  for (auto _ : state) {
    const auto& query = queries[q];
    auto e = snapshot.check_access(query.username, query.username, query.access, query.topic);
    benchmark::DoNotOptimize(e);
    allowed += e.decision == acl::Decision::allow;
    ++decisions;
    q = (q + 1) % kQueries;
  }
  state.counters["allowed_share"] = static_cast<double>(allowed) / static_cast<double>(decisions);
}
void check_access(benchmark::State& state, std::size_t n) { check_access_on(state, n, n); }
constexpr std::size_t kHotDevices = 256;
void check_access_hot(benchmark::State& state, std::size_t n) {
  check_access_on(state, n, kHotDevices);
}

void connect_verdict(benchmark::State& state, std::size_t n) {
  const Snapshot& snapshot = fixtures.pure(n);
  std::mt19937_64 random(11);
  std::vector<std::pair<std::string, std::string>> queries;  // fingerprint, device id
  for (std::size_t q = 0; q < kQueries; ++q) {
    const std::size_t i = random() % n;
    queries.emplace_back(fingerprint_of(i), device_id(i));
  }
  std::size_t q = 0, accepted = 0, checks = 0;
  for (auto _ : state) {
    const auto& [fp, id] = queries[q];
    auto v = snapshot.connect_verdict({fp, id, id}, kNow, false);
    benchmark::DoNotOptimize(v);
    accepted += v.accepted();
    ++checks;
    q = (q + 1) % kQueries;
  }
  if (accepted != checks) die("connect_verdict: a registered device was refused");
}

// The time to derive the next snapshot; the time to free the replaced one (which the plugin does
// on the broker's thread when it swaps snapshots) is reported beside it as release_us.
void with_changes(benchmark::State& state, std::size_t n) {
  const Snapshot& snapshot = fixtures.pure(n);
  std::mt19937_64 random(13);
  double release_seconds = 0;
  for (auto _ : state) {
    DeviceAccess changed = make_device(random() % n);
    changed.rules.push_back(rule(1, "extra/%d", acl::kPublish, acl::Effect::allow));
    std::vector<DeviceAccess> devices;
    devices.push_back(std::move(changed));
    const auto start = Clock::now();
    auto next = snapshot.with_changes(std::move(devices), {}, {}, snapshot.change_seq() + 1);
    state.SetIterationTime(seconds_since(start));
    const auto release = Clock::now();
    next.reset();
    release_seconds += seconds_since(release);
  }
  state.counters["release_us"] =
      benchmark::Counter(release_seconds * 1e6 / static_cast<double>(state.iterations()));
}

// One change end to end: a writer disables or enables a device (not timed), then the timed
// refresh_snapshot reads the change feed and the device and derives the next snapshot.
void refresh_sqlite(benchmark::State& state, std::size_t n) {
  const auto& fleet = fixtures.registry(n);
  auto writer = must(open_sqlite_store(fleet.path(), OpenMode::read_write));
  auto reader = must(open_sqlite_store(fleet.path(), OpenMode::read_only));
  auto current = must(load_snapshot(*reader));
  std::mt19937_64 random(17);
  std::int64_t kicks = 0;
  for (auto _ : state) {
    const std::string id = device_id(random() % n);
    const bool enable = current->find_device(id)->status() != DeviceStatus::active;
    must(writer->set_device_enabled(id, enable, Actor{"bench", kNow}));
    const auto start = Clock::now();
    auto refresh = must(refresh_snapshot(*reader, *current));
    state.SetIterationTime(seconds_since(start));
    if (!refresh) die("refresh_sqlite: the change was not seen");
    kicks += static_cast<std::int64_t>(refresh->kicks.size());
    current = refresh->snapshot;
  }
  state.counters["kicks"] = static_cast<double>(kicks);
}

// --- the plugin's path for a connected device --------------------------------------------------

// What the plugin does on a connected device's topic check (plugin.cpp, on_acl_check): find the
// client in AcceptedClients (a hash lookup by the broker's client pointer, its client id and
// username compared with the broker's C strings), then decide with the client's ClientRules,
// bound to the snapshot at its first check after the connect or a swap (placeholders written in,
// the last topic's answers kept). `clients` devices of the fleet are connected, each a distinct
// device with its device id as client id and username, as the connect check accepts them.
struct Connected {
  std::size_t count = 0;
  std::vector<std::size_t> device;  // the fleet's index of each client's device
  // The broker's own copies of each client's id and username (mosquitto_client_id and
  // mosquitto_client_username hand these over), apart from AcceptedClients' copies.
  std::vector<std::string> broker_client_id, broker_username;
  std::unique_ptr<plugin::AcceptedClients> clients;

  // The broker's `struct mosquitto*` of client c: only a key, never dereferenced.
  static plugin::AcceptedClients::Client handle(std::size_t c) {
    return reinterpret_cast<plugin::AcceptedClients::Client>(0x10000000 + c * 1024);
  }
  // Client c's device: distinct for distinct clients (1000003 is prime, so coprime with n).
  static std::size_t device_of(std::size_t c, std::size_t n) {
    return (c * 1'000'003 + 12'345) % n;
  }

  Connected(std::size_t clients_count, std::size_t n) : count(clients_count) {
    device.reserve(count);
    broker_client_id.reserve(count);
    broker_username.reserve(count);
    for (std::size_t c = 0; c < count; ++c) {
      device.push_back(device_of(c, n));
      broker_client_id.push_back(device_id(device.back()));
      broker_username.push_back(device_id(device.back()));
    }
  }
  void accept_all() {
    clients = std::make_unique<plugin::AcceptedClients>();
    for (std::size_t c = 0; c < count; ++c)
      clients->accept_device(handle(c), broker_client_id[c], broker_username[c]);
  }
};

// One decision as the plugin makes it for client c; false when the client was not found.
struct PluginQuery {
  std::uint32_t client;
  acl::Access access;
  std::uint32_t topic_at;  // into the query set's text: the topic, NUL-terminated
};
struct PluginQueries {
  std::vector<PluginQuery> queries;
  std::string text;
  const char* topic(const PluginQuery& q) const { return text.data() + q.topic_at; }
};

// The ten kinds of decision check_access_on mixes (allowed, denied and unmatched topics).
std::pair<acl::Access, std::string> query_of_kind(int kind, std::size_t device, std::size_t n) {
  const std::string id = device_id(device);
  const std::string other = device_id((device + 1) % n);
  switch (kind) {
    case 0:
      return {acl::kPublish, "telemetry/" + id + "/temp"};
    case 1:
      return {acl::kPublish, "telemetry/" + id + "/debug"};
    case 2:
      return {acl::kPublish, "telemetry/" + other + "/temp"};
    case 3:
      return {acl::kRead, "commands/" + id + "/reboot"};
    case 4:
      return {acl::kPublish, "commands/" + id + "/factory-reset"};
    case 5:
      return {acl::kSubscribe, "config/" + id + "/+"};
    case 6:
      return {acl::kRead, "fleet/broadcast/all"};
    case 7:
      return {acl::kPublish, "fleet/x"};
    case 8:
      return {acl::kPublish, "devices/" + id + "/status"};
    default:
      return {acl::kPublish, "logs/" + id + "/app/error"};
  }
}

// Every client twice per cycle through the set, in random order. `kept`: each client always asks
// the same (its kind fixed), so that after the first cycle every answer is the kept one. Else its
// two questions are of different kinds, so that no answer is ever the kept one (each question
// differs from the client's one before it, across the cycle's end too).
PluginQueries plugin_queries(const Connected& connected, std::size_t n, bool kept,
                             std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<std::uint32_t> order;
  order.reserve(2 * connected.count);
  for (std::size_t c = 0; c < connected.count; ++c) {
    order.push_back(static_cast<std::uint32_t>(c));
    order.push_back(static_cast<std::uint32_t>(c));
  }
  std::shuffle(order.begin(), order.end(), random);
  std::vector<int> first_kind(connected.count, -1);
  PluginQueries set;
  set.queries.reserve(order.size());
  for (const std::uint32_t c : order) {
    int kind = static_cast<int>(c % 10);
    if (!kept) {
      if (first_kind[c] < 0) {
        kind = static_cast<int>(random() % 10);
        first_kind[c] = kind;
      } else {
        kind = (first_kind[c] + 1 + static_cast<int>(random() % 9)) % 10;
      }
    }
    auto [access, topic] = query_of_kind(kind, connected.device[c], n);
    set.queries.push_back({c, access, static_cast<std::uint32_t>(set.text.size())});
    set.text += topic;
    set.text += '\0';
  }
  return set;
}

// The plugin's decision for query q (on_acl_check's device path): AcceptedClients, then
// BrokerSnapshot::decide with the topic as the broker's C string.
acl::Evaluation plugin_decide(Connected& connected, const plugin::BrokerSnapshot& broker,
                              const PluginQueries& set, const PluginQuery& q) {
  auto verdict = connected.clients->check(
      Connected::handle(q.client), connected.broker_client_id[q.client].c_str(),
      connected.broker_username[q.client].c_str(), [] { return true; });
  if (verdict.standing != plugin::AcceptedClients::Standing::device)
    die("plugin decision: a connected client was not found");
  return broker.decide(*verdict.rules, verdict.device_id, verdict.client_id, q.access,
                       set.topic(q));
}

// plugin_decide inside a timed loop: a function of its own, so that a profile can count the
// timed decisions alone (valgrind --tool=callgrind --toggle-collect='*timed_plugin_decide*').
[[gnu::noinline]] acl::Evaluation timed_plugin_decide(Connected& connected,
                                                      const plugin::BrokerSnapshot& broker,
                                                      const PluginQueries& set,
                                                      const PluginQuery& q) {
  return plugin_decide(connected, broker, set, q);
}

// Every query once, each answer checked against Snapshot::check_access (the plugin must give
// the same answers). Binds every client and leaves each one's last topic kept.
void plugin_verify(Connected& connected, const plugin::BrokerSnapshot& broker,
                   const PluginQueries& set) {
  for (const PluginQuery& q : set.queries) {
    const auto e = plugin_decide(connected, broker, set, q);
    const std::string& id = connected.broker_username[q.client];
    const auto expected = broker.get().check_access(id, id, q.access, set.topic(q));
    if (e.decision != expected.decision || e.rule == nullptr) {
      if (e.decision != expected.decision || expected.rule != nullptr)
        die("plugin decision: differs from Snapshot::check_access");
    } else if (expected.rule == nullptr || e.rule->id != expected.rule->id) {
      die("plugin decision: another rule than Snapshot::check_access's");
    }
  }
}

// The plugin's snapshot, holding the fixture's (the bench's own reference keeps it alive).
plugin::BrokerSnapshot broker_snapshot(std::size_t n) {
  plugin::BrokerSnapshot broker;
  plugin::Handover handover;
  broker.replace(std::shared_ptr<const Snapshot>(fixtures.snapshot_ptr(n)), handover);
  return broker;
}

// One decision for a random connected client (of `clients`), through the plugin's path.
// kept=false: no answer is the kept one (every decision evaluates the rules); kept=true: every
// answer is. Also reports the plugin's memory per connected client, after each client was bound
// and asked once: the resident set the clients added (rss_per_client) and the table's own count
// (AcceptedClients::heap_bytes, heap_per_client).
void client_decide(benchmark::State& state, std::size_t n, std::size_t clients, bool kept) {
  auto broker = broker_snapshot(n);
  Connected connected(clients, n);
  auto set = plugin_queries(connected, n, kept, kept ? 23 : 29);
  const double before = resident_bytes();
  connected.accept_all();
  plugin_verify(connected, broker, set);
  const double added = resident_bytes() - before;
  std::size_t q = 0, allowed = 0, decisions = 0;
  for (auto _ : state) {
    auto e = timed_plugin_decide(connected, broker, set, set.queries[q]);
    benchmark::DoNotOptimize(e);
    allowed += e.decision == acl::Decision::allow;
    ++decisions;
    if (++q == set.queries.size()) q = 0;
  }
  state.counters["allowed_share"] = static_cast<double>(allowed) / static_cast<double>(decisions);
  state.counters["rss_per_client"] = added / static_cast<double>(clients);
  state.counters["heap_per_client"] =
      static_cast<double>(connected.clients->heap_bytes()) / static_cast<double>(clients);
}

// The fleet's snapshot, and the next one with one device changed: a device none of the first
// `clients` is connected as (Connected::device_of), its rules changed.
std::array<std::shared_ptr<const Snapshot>, 2> fleet_and_one_change(std::size_t n,
                                                                    std::size_t clients) {
  std::array<std::shared_ptr<const Snapshot>, 2> snapshots;
  snapshots[0] = fixtures.snapshot_ptr(n);
  std::size_t changed_device = Connected::device_of(clients, n);  // the next client's, not one's
  if (clients >= n) changed_device = 0;  // every device is connected: one of them then
  DeviceAccess changed = make_device(changed_device);
  changed.rules.push_back(rule(1, "extra/%d", acl::kPublish, acl::Effect::allow));
  std::vector<DeviceAccess> devices;
  devices.push_back(std::move(changed));
  snapshots[1] =
      snapshots[0]->with_changes(std::move(devices), {}, {}, snapshots[0]->change_seq() + 1);
  return snapshots;
}

// The first decision of a client after a swap (for a snapshot in which its device did not change,
// as after most changes: its binding stays current unless the device shares the changed one's
// shard), then the decision (never the kept answer). Every client of `clients` in random order, a
// swap before each round; what the swap adds is the difference to client_decide. The swaps
// alternate between the fleet and the fleet with one other device changed, as a registry change
// does.
void client_rebind(benchmark::State& state, std::size_t n, std::size_t clients) {
  fixtures.pure(n);
  Connected connected(clients, n);
  auto set = plugin_queries(connected, n, false, 31);
  connected.accept_all();
  plugin::Handover handover;
  plugin::BrokerSnapshot broker;
  // Swapped in turn: the fleet, and the fleet with one device changed (not a connected one's).
  const auto snapshots = fleet_and_one_change(n, clients);
  broker.replace(snapshots[0], handover);
  plugin_verify(connected, broker, set);
  // Each client once per round, in the set's order: its first query in even rounds, its second
  // in odd ones, so that no answer is the kept one (the two differ) and every decision evaluates.
  std::array<std::vector<PluginQuery>, 2> rounds;
  std::vector<bool> seen(clients);
  for (const PluginQuery& q : set.queries) {
    rounds[seen[q.client] ? 1 : 0].push_back(q);
    seen[q.client] = true;
  }
  std::size_t q = 0, r = 0;
  for (auto _ : state) {
    if (q == 0) {
      state.PauseTiming();
      broker.replace(snapshots[r], handover);  // the other one: a swap
      handover.release_retired();
      state.ResumeTiming();
    }
    auto e = timed_plugin_decide(connected, broker, set, rounds[r][q]);
    benchmark::DoNotOptimize(e);
    if (++q == rounds[r].size()) {
      q = 0;
      r = 1 - r;
    }
  }
}

// Every connected client's rules brought up to date after a swap (the change to another device:
// the clients of its shard bind again, every other binding stays current), in random order, timed
// as one round: what the broker thread does for one registry change beyond the swap itself, once
// every client has decided after it (each at its next decision, not all at once). Reported per
// round (ms), per client (ns), and as the bindings made again per swap (rebound_per_swap) and the
// time they took (rebind_us_per_swap: the broker thread's work for the change beyond the swap).
// Each client's binding also comes from memory, which a decision has read already: so the same
// round without a swap is timed too, alternating with the other (each round follows one of the
// other kind), and the difference (extra_per_client_ns) is what a change adds to each client's next
// decision.
void clients_rebind(benchmark::State& state, std::size_t n, std::size_t clients) {
  fixtures.pure(n);
  Connected connected(clients, n);
  auto set = plugin_queries(connected, n, false, 41);
  connected.accept_all();
  plugin::Handover handover;
  plugin::BrokerSnapshot broker;
  const auto snapshots = fleet_and_one_change(n, clients);
  broker.replace(snapshots[0], handover);
  plugin_verify(connected, broker, set);
  struct Bound {
    plugin::ClientRules* rules;
    std::string_view device_id, client_id;
  };
  std::vector<Bound> bound;
  bound.reserve(clients);
  for (std::size_t c = 0; c < clients; ++c) {
    auto verdict =
        connected.clients->check(Connected::handle(c), connected.broker_client_id[c].c_str(),
                                 connected.broker_username[c].c_str(), [] { return true; });
    if (verdict.rules == nullptr) die("clients_rebind: a connected client was not found");
    bound.push_back({verdict.rules, verdict.device_id, verdict.client_id});
  }
  std::shuffle(bound.begin(), bound.end(), std::mt19937_64(43));
  std::size_t next = 1, current = 0, rebound = 0;
  double total = 0, unchanged = 0, binding = 0;
  for (auto _ : state) {
    // The baseline round: the same bindings in the same order, nothing swapped.
    const auto baseline_start = Clock::now();
    for (const Bound& b : bound) current += b.rules->current(broker.changes());
    unchanged += seconds_since(baseline_start);
    broker.replace(snapshots[next], handover);
    handover.release_retired();
    const auto start = Clock::now();
    for (const Bound& b : bound) {
      if (b.rules->current(broker.changes())) continue;
      const auto bind_start = Clock::now();
      b.rules->bind(broker.get(), broker.changes(), b.device_id, b.client_id);
      binding += seconds_since(bind_start);
      ++rebound;
    }
    const double took = seconds_since(start);
    state.SetIterationTime(took);
    total += took;
    next = 1 - next;
  }
  if (current != static_cast<std::size_t>(state.iterations()) * clients)
    die("clients_rebind: a binding was not current");
  const double per_round = static_cast<double>(state.iterations()) * static_cast<double>(clients);
  state.counters["per_client_ns"] = total * 1e9 / per_round;
  state.counters["extra_per_client_ns"] = (total - unchanged) * 1e9 / per_round;
  state.counters["rebound_per_swap"] =
      static_cast<double>(rebound) / static_cast<double>(state.iterations());
  state.counters["rebind_us_per_swap"] = binding * 1e6 / static_cast<double>(state.iterations());
}

// What the broker thread does when the watcher hands over the next snapshot (plugin.cpp,
// take_handover): Handover::take, then BrokerSnapshot::replace (the old snapshot retired to the
// watcher thread, which frees it, after their shards were compared: the clients of the changed
// device's shard bind again at their next decision, client_rebind). With `clients` connected and
// bound. The next snapshot has one device changed. Not included: a kicked device's log line and
// mosquitto_kick_client_by_username (a broker function), for a change that disconnects one.
void snapshot_swap(benchmark::State& state, std::size_t n, std::size_t clients) {
  fixtures.pure(n);
  const auto snapshots = fleet_and_one_change(n, clients);
  Connected connected(clients, n);
  auto set = plugin_queries(connected, n, false, 37);
  connected.accept_all();
  plugin::Handover handover;
  plugin::BrokerSnapshot broker;
  broker.replace(snapshots[0], handover);
  plugin_verify(connected, broker, set);
  std::size_t next = 1;
  for (auto _ : state) {
    handover.post(snapshots[next], {});  // the watcher thread's part
    const auto start = Clock::now();
    auto taken = handover.take();
    if (taken.snapshot) broker.replace(std::move(taken.snapshot), handover);
    state.SetIterationTime(seconds_since(start));
    handover.release_retired();  // the watcher thread's part
    next = 1 - next;
  }
}

// --- load mode: one timed load_snapshot of a kept registry
// ----------------------------------------

// What the plugin's start costs on this registry: the wall time of load_snapshot, the resident
// memory the snapshot adds (after malloc_trim, as the benchmarks report it), and the peak.
void time_load(const std::filesystem::path& path, int repeat) {
  auto store = must(open_sqlite_store(path, OpenMode::read_only));
  for (int run = 0; run < repeat; ++run) {
    const double before = resident_bytes();
    const auto start = Clock::now();
    auto snapshot = must(load_snapshot(*store));
    const double took = seconds_since(start);
    const double added = resident_bytes() - before;
    std::printf("load_snapshot %s: %zu devices in %.2f s, snapshot %.0f MiB (%.0f bytes/device)\n",
                path.c_str(), snapshot->device_count(), took, added / (1 << 20),
                added / static_cast<double>(std::max<std::size_t>(1, snapshot->device_count())));
    snapshot.reset();
    // Its two halves, as load_snapshot does them: the read, then the build.
    const auto read_start = Clock::now();
    auto data = must(store->read_access(AccessQuery::everything()));
    const double read = seconds_since(read_start);
    const auto build_start = Clock::now();
    auto built = Snapshot::build(std::move(data.devices), std::move(data.groups), data.change_seq);
    std::printf("  of which read_access %.2f s, Snapshot::build %.2f s\n", read,
                seconds_since(build_start));
    std::fflush(stdout);
  }
}

// --- fill mode: a large fleet in an onboardctl registry ---------------------------------------

void fill_registry(const std::filesystem::path& path, std::size_t n, std::size_t revoked) {
  if (!std::filesystem::is_regular_file(path)) {
    die("--fill: no registry at " + path.string() + "; run 'onboardctl init' first");
  }
  if (revoked > n) die("--revoked cannot exceed --devices");
  // The Store checks that this is a registry of the current schema version (and upgrades it).
  must(open_sqlite_store(path, OpenMode::read_write));
  const auto start = Clock::now();
  const UnixTime now = static_cast<UnixTime>(std::time(nullptr));
  SQLite::Database db(path.string(), SQLite::OPEN_READWRITE, 5000);
  db.exec("PRAGMA foreign_keys = ON");  // as the Store has it: the rows must satisfy them
  db.exec("PRAGMA synchronous = OFF");  // this connection only: filling, not measuring
  SQLite::Transaction transaction(db, SQLite::TransactionBehavior::IMMEDIATE);
  if (db.execAndGet("SELECT count(*) FROM devices").getInt64() != 0) {
    die("--fill: " + path.string() + " already holds devices; fill a fresh registry");
  }
  std::int64_t seq = db.execAndGet("SELECT change_seq FROM meta WHERE id = 1").getInt64();
  SQLite::Statement change(db, "INSERT INTO changes (seq, at, kind, subject) VALUES (?, ?, ?, ?)");
  auto record_change = [&](const char* kind, const std::string& subject) {
    change.reset();
    change.bind(1, ++seq);
    change.bind(2, now);
    change.bind(3, kind);
    change.bind(4, subject);
    change.exec();
  };
  SQLite::Statement group(
      db,
      "INSERT INTO groups (name, description, created_at) VALUES (?, 'devices of type ' || ?1, ?)");
  SQLite::Statement rule_insert(db,
                                "INSERT INTO acl_rules (device_id, group_name, access, pattern, "
                                "effect, priority, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
  auto insert_rule = [&](const std::string* device, const std::string* group_name,
                         const acl::Rule& r) {
    rule_insert.reset();
    if (device)
      rule_insert.bind(1, *device);
    else
      rule_insert.bind(1);
    if (group_name)
      rule_insert.bind(2, *group_name);
    else
      rule_insert.bind(2);
    rule_insert.bind(3, r.access);
    rule_insert.bind(4, std::string(r.pattern.text()));
    rule_insert.bind(5, r.effect == acl::Effect::allow ? "allow" : "deny");
    rule_insert.bind(6, r.priority);
    rule_insert.bind(7, now);
    rule_insert.exec();
  };
  for (const auto& g : make_groups()) {
    if (g.name == kDefaultGroup) continue;  // init made it, with its documented rule
    group.reset();
    group.bind(1, g.name);
    group.bind(2, now);
    group.exec();
    for (const auto& r : g.rules) insert_rule(nullptr, &g.name, r);
    record_change("group", g.name);
  }
  const std::string pem =
      "-----BEGIN CERTIFICATE-----\n" + std::string(960, 'A') + "\n-----END CERTIFICATE-----\n";
  SQLite::Statement device(db,
                           "INSERT INTO devices (id, name, type, location, firmware, status, "
                           "created_at, updated_at, metadata) "
                           "VALUES (?1, ?1, ?2, 'bench', '1.0.0', ?3, ?4, ?4, '{}')");
  // Issued by the root CA `onboardctl init` makes by default: a CRL lists only the revoked
  // certificates its own CA issued, so the long-CRL measurement needs this issuer.
  SQLite::Statement certificate(
      db,
      "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, "
      "device_id, subject, not_before, not_after, status, revoked_at, "
      "revocation_reason, pem) VALUES (?, 'CN=mosquitto-onboard Root CA', "
      "?, ?, ?, ?, ?, ?, ?, ?, ?)");
  for (std::size_t i = 0; i < n; ++i) {
    const DeviceAccess d = make_device(i);
    const bool is_revoked = i < revoked;
    device.reset();
    device.bind(1, d.id);
    device.bind(2, d.type);
    device.bind(3, is_revoked ? "revoked" : "active");
    device.bind(4, now);
    device.exec();
    certificate.reset();
    certificate.bind(1, d.certificates.front().serial_hex);
    certificate.bind(2, d.certificates.front().sha256_fingerprint);
    certificate.bind(3, d.id);
    certificate.bind(4, "CN=" + d.id);
    certificate.bind(5, now - 86'400);
    certificate.bind(6, now + 365 * 86'400);
    certificate.bind(7, is_revoked ? "revoked" : "active");
    if (is_revoked) {
      certificate.bind(8, now);
      certificate.bind(9, "keyCompromise");
    } else {
      certificate.bind(8);
      certificate.bind(9);
    }
    certificate.bind(10, pem);
    certificate.exec();
    for (const auto& r : d.rules) insert_rule(&d.id, nullptr, r);
    record_change("device", d.id);
  }
  db.exec("UPDATE meta SET change_seq = " + std::to_string(seq) + " WHERE id = 1");

  // One audit row for the whole fill, chained like the Store's own rows.
  SQLite::Statement head(db, "SELECT audit_head_seq, audit_head_hash FROM meta WHERE id = 1");
  if (!head.executeStep()) die("--fill: the registry has no meta row");
  AuditEvent event;
  event.seq = head.getColumn(0).getInt64() + 1;
  event.prev_hash = head.getColumn(1).getString();
  head.reset();
  event.at = now;
  event.actor = "bench:onboard_registry_bench";
  event.action = "bench.fill";
  event.subject = "registry";
  event.details = "{\"devices\":" + std::to_string(n) + ",\"revoked\":" + std::to_string(revoked) +
                  ",\"rules_per_device\":" + std::to_string(kRulesPerDevice) + "}";
  event.hash = audit_hash(event);
  SQLite::Statement audit(db,
                          "INSERT INTO audit_events (seq, at, actor, action, subject, details, "
                          "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  audit.bind(1, event.seq);
  audit.bind(2, event.at);
  audit.bind(3, event.actor);
  audit.bind(4, event.action);
  audit.bind(5, event.subject);
  audit.bind(6, event.details);
  audit.bind(7, event.prev_hash);
  audit.bind(8, event.hash);
  audit.exec();
  SQLite::Statement set_head(
      db, "UPDATE meta SET audit_head_seq = ?, audit_head_hash = ? WHERE id = 1");
  set_head.bind(1, event.seq);
  set_head.bind(2, event.hash);
  set_head.exec();
  // Rows written here record no state digests (registry/entity_state.h): the registry is left at
  // schema version 4 without its successor's claims table, as a registry from before the last
  // step, so that the next onboardctl command upgrades it and attests the whole fleet in the
  // audit log (every upgrade does), and `audit verify` then passes.
  db.exec("DROP TABLE claims");
  db.exec("UPDATE meta SET schema_version = 4 WHERE id = 1");
  transaction.commit();
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  std::fprintf(stderr,
               "registry_bench: filled %s with %zu devices (%zu revoked) in %.1f s (%.0f MiB)\n",
               path.c_str(), n, revoked, seconds_since(start),
               static_cast<double>(std::filesystem::file_size(path)) / (1 << 20));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Registry benchmark: what the broker plugin's snapshot costs (build, load, memory, ACL "
      "decisions, connect verdicts, changes) at several fleet sizes. With --fill it runs no "
      "benchmark but fills a registry for timing onboardctl on a large fleet."};
  std::vector<std::size_t> sizes{1'000, 100'000, 1'000'000};
  std::string fill;
  std::size_t devices = 0, revoked = 0;
  auto* sizes_option = app.add_option("--sizes", sizes, "fleet sizes, comma-separated")
                           ->delimiter(',')
                           ->allow_extra_args(false)
                           ->capture_default_str()
                           ->check(bench_cli::whole_number(1));
  auto* fill_option =
      app.add_option("--fill", fill,
                     "fill mode: add devices to this registry.db, which `onboardctl init` made "
                     "and which has no devices yet")
          ->check(CLI::ExistingFile);
  auto* devices_option = app.add_option("--devices", devices, "fill mode: devices to add")
                             ->check(bench_cli::whole_number())
                             ->needs(fill_option);
  app.add_option("--revoked", revoked,
                 "fill mode: revoke the first M of them as `device revoke` would")
      ->check(bench_cli::whole_number())
      ->needs(fill_option);
  fill_option->needs(devices_option)->excludes(sizes_option);
  std::string write_fleet, load;
  int repeat = 1;
  auto* write_option = app.add_option("--write-fleet", write_fleet,
                                      "write the benchmarks' SQLite fleet of --sizes' first size "
                                      "to this new file, kept for --load, and exit");
  auto* load_option =
      app.add_option("--load", load,
                     "time load_snapshot on this registry (--repeat times) and exit")
          ->check(CLI::ExistingFile);
  app.add_option("--repeat", repeat, "load mode: loads to time")->needs(load_option);
  write_option->excludes(fill_option)->excludes(load_option);
  if (const int rc = bench_cli::parse(app, argc, argv); rc >= 0) return rc;
  if (*write_option) {
    SqliteFleet::write(write_fleet, sizes.front());
    return 0;
  }
  if (*load_option) {
    time_load(load, repeat);
    return 0;
  }

  if (*fill_option) {
    if (!app.remaining().empty()) {
      die("fill mode takes only --fill, --devices and --revoked, not " + app.remaining().front());
    }
    fill_registry(fill, devices, revoked);
    return 0;
  }
  // Grouped by size, so that each fleet is made once and dropped before the next one.
  for (const std::size_t n : sizes) {
    const std::string suffix = "/" + std::to_string(n);
    benchmark::RegisterBenchmark(("build_pure" + suffix).c_str(), build_pure, n)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1)
        ->Repetitions(3)
        ->ReportAggregatesOnly(false);
    benchmark::RegisterBenchmark(("load_sqlite" + suffix).c_str(), load_sqlite, n)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1)
        ->Repetitions(3);
    benchmark::RegisterBenchmark(("refresh_sqlite" + suffix).c_str(), refresh_sqlite, n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(200);
    benchmark::RegisterBenchmark(("check_access" + suffix).c_str(), check_access, n);
    benchmark::RegisterBenchmark(("check_access_hot" + suffix).c_str(), check_access_hot, n);
    benchmark::RegisterBenchmark(("connect_verdict" + suffix).c_str(), connect_verdict, n);
    benchmark::RegisterBenchmark(("with_changes" + suffix).c_str(), with_changes, n)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    // The plugin's path for connected devices: 10k and 100k of them (as many as the fleet has).
    for (const std::size_t clients : {std::size_t{10'000}, std::size_t{100'000}}) {
      if (clients > n) continue;
      const std::string c = "_" + std::to_string(clients / 1000) + "k" + suffix;
      benchmark::RegisterBenchmark(("client_decide" + c).c_str(), client_decide, n, clients, false);
      benchmark::RegisterBenchmark(("client_decide_kept" + c).c_str(), client_decide, n, clients,
                                   true);
      benchmark::RegisterBenchmark(("client_rebind" + c).c_str(), client_rebind, n, clients);
      benchmark::RegisterBenchmark(("clients_rebind" + c).c_str(), clients_rebind, n, clients)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->Iterations(20);
      benchmark::RegisterBenchmark(("snapshot_swap" + c).c_str(), snapshot_swap, n, clients)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->Iterations(2000);
    }
  }
  const int rc = bench_cli::run_benchmarks(app, argv[0]);
  fixtures = {};
  return rc;
}
