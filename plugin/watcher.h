// The plugin's own thread: polls the registry's change feed, builds the next Snapshot and hands it
// over with the devices to disconnect and the lines to log; watches the CRL file when asked to.
//
// It must never take the broker down: every poll runs inside a catch-all. A failure (an unreadable
// registry, an exception such as std::bad_alloc while building a snapshot) is logged once, the
// last good snapshot stays in force, and the next poll tries again.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "core/error.h"
#include "plugin/crl_guard.h"
#include "plugin/handover.h"
#include "registry/location.h"
#include "registry/snapshot.h"
#include "registry/snapshot_loader.h"

namespace onboard::plugin {

using Clock = std::chrono::steady_clock;

// Where the watcher reads the registry from (the seam the tests replace).
class AccessSource {
 public:
  virtual ~AccessSource() = default;
  // For log lines: "registry /var/lib/...".
  virtual std::string name() const = 0;
  // Why the registry last opened can no longer be trusted to show changes, or nullopt while it
  // can: nothing open yet, the file deleted or replaced, or its -wal or -shm file removed or
  // replaced (a backup script, an operator), after which an open connection reads a frozen copy.
  virtual std::optional<std::string> outdated() = 0;
  // Opens whatever is at the path now and reads it in full.
  virtual Result<std::shared_ptr<const registry::Snapshot>> reopen() = 0;
  // Opens the registry and checks its schema version, without reading it: the cheap check the
  // plugin's init makes, so that a wrong path or location stops the broker, while the full read
  // (seconds at a million devices) runs on the watcher thread. Keeps nothing open.
  virtual Status probe() { return ok_status(); }
  // What changed after `snapshot` (nullopt: nothing).
  virtual Result<std::optional<registry::Refresh>> refresh(const registry::Snapshot& snapshot) = 0;

  // A source that is told of changes (PostgreSQL's notifications, inotify on an SQLite file's
  // directory) says so here; the watcher then waits for the word and asks only every
  // idle_interval() while nothing comes. A source that cannot tell is polled every refresh
  // interval.
  virtual bool notifies() const noexcept { return false; }
  virtual std::chrono::milliseconds idle_interval() const noexcept {
    return std::chrono::seconds(5);
  }
  // Waits up to `max` for a change notice: true when one came. Never throws; a lost connection is
  // left for the next refresh to report (and reconnect).
  virtual bool wait_for_change(std::chrono::milliseconds max) noexcept {
    (void)max;
    return false;
  }
};

// The SQLite registry at `path`, opened read-only. Where the kernel offers inotify it watches the
// registry's directory and notifies of changes; it is then also read every `idle` (a safety read,
// for writes inotify cannot see), else every refresh interval.
inline constexpr std::chrono::milliseconds kSqliteSafetyInterval{1000};
// After a change notice the registry is read every refresh interval for this long, not only when
// the next notice comes. A SQLite commit becomes readable only once its last WAL write has been
// synced and the WAL index (shared memory, which inotify does not see) updated: the notice of its
// writes can wake a read that finds nothing new, and with no later write to announce it (a
// writer that stays open, like `onboardctl serve`) the change would wait for the safety read.
// Measured in the soak: a group rule removed was still granted more than 1 s after its commit.
inline constexpr std::chrono::milliseconds kReadAfterNotice{1000};
std::unique_ptr<AccessSource> sqlite_access_source(
    std::string path, std::chrono::milliseconds idle = kSqliteSafetyInterval);

// The registry at `location`, read-only: an SQLite file as above (its safety read at most every
// kSqliteSafetyInterval), or a PostgreSQL database whose change notifications wake the watcher.
// Against PostgreSQL every statement and connection attempt gives up after `timeout`, and after a
// failure the next attempt waits a backoff (1 s, doubling to 8 s) so that a database that is down
// is not hammered by every broker. `idle` is how often the watcher asks a PostgreSQL registry when
// no notice comes: at most a third of the staleness limit, so that a quiet but healthy registry
// never counts as stale.
std::unique_ptr<AccessSource> access_source(
    const registry::Location& location, std::chrono::milliseconds timeout,
    std::chrono::milliseconds idle = std::chrono::seconds(5));

// The snapshot kept at plugin_opt_cache_file, for a start while the registry cannot be read, and
// how old it is (its write time: it counts as read then).
struct CachedStart {
  std::shared_ptr<const registry::Snapshot> snapshot;
  Clock::duration age;
};
// `why`: why the registry could not be read, for the error and the warning line.
Result<CachedStart> read_cache_for_start(const std::string& path, const std::string& why);
// The warning line for a start from the cache file.
std::string cache_start_line(const std::string& path, const CachedStart& start,
                             const std::string& why);

class Watcher {
 public:
  // `snapshot` null: the registry has not been read yet; the first poll reads it in full (or,
  // when that fails and keep_cache() was called, the cache file) and hands it over, and until then
  // the broker thread has none and refuses every client. A failed first read is logged once and
  // retried at every poll.
  Watcher(std::unique_ptr<AccessSource> source, std::shared_ptr<const registry::Snapshot> snapshot,
          Handover& handover, std::atomic<Clock::rep>& last_ok,
          std::unique_ptr<CrlGuard> crl = nullptr);

  // Keeps a copy of the last good snapshot at `path` (plugin_opt_cache_file), rewritten after a
  // change at most every `spacing`, so that a broker restarted while the registry is unreachable
  // can start from it. Call before run().
  // `started_from_it`: the watcher's first snapshot was read from that file, which then is not
  // rewritten (its age is what the broker trusts it by) until the registry has been read again.
  void keep_cache(std::string path, bool started_from_it = false,
                  std::chrono::milliseconds spacing = std::chrono::seconds(2));

  // Polls every `interval` until `stop` (a source that notifies: when told, or every idle
  // interval). Never throws.
  void run(std::stop_token stop, std::chrono::milliseconds interval) noexcept;

  // One round: the registry, then the CRL. Never throws. Public for the tests.
  void poll() noexcept;
  // The CRL alone (the plugin's init reports on the CRL the broker is about to load). Never throws.
  void poll_crl() noexcept;

  // The next poll reads the registry in full (SIGHUP). Any thread.
  void request_full_reload() noexcept { full_reload_.store(true, std::memory_order_release); }
  // While set, the registry is read every refresh interval whether or not a change was announced
  // (the broker thread, while it holds a provisioning answer until the snapshot knows the new
  // device or certificate). A SQLite commit becomes readable only after its last write to the WAL
  // has been synced and the WAL index (shared memory, which inotify does not see) updated: the
  // notice of its writes can come, and the read it wakes find nothing new, before the change is
  // there to read, and the next read would then wait for the idle interval. Any thread; never
  // waits.
  void set_eager(bool eager) noexcept { eager_.store(eager, std::memory_order_release); }
  CrlGuard* crl() noexcept { return crl_.get(); }

 private:
  void poll_registry();
  void first_read();
  void reload(const std::string& why);
  void wait_for_notification(const std::stop_token& stop, std::chrono::milliseconds interval);
  void failed(const std::string& why) noexcept;
  void failed_with_current_exception(const char* prefix) noexcept;
  void succeeded();
  void write_cache() noexcept;

  std::unique_ptr<AccessSource> source_;
  std::shared_ptr<const registry::Snapshot> current_;
  Handover& handover_;
  std::atomic<Clock::rep>& last_ok_;
  std::unique_ptr<CrlGuard> crl_;
  std::atomic<bool> full_reload_{false};
  std::atomic<bool> eager_{false};
  // Until then the registry is read every refresh interval, notice or not: see kReadAfterNotice.
  Clock::time_point read_until_{};
  bool failing_ = false;
  bool crl_failing_ = false;
  std::optional<std::string> cache_path_;
  std::chrono::milliseconds cache_spacing_{0};
  std::int64_t cached_seq_ = -1;
  Clock::time_point cached_at_{};
  bool cache_failing_ = false;
};

}  // namespace onboard::plugin
