#include "plugin/watcher.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "core/files.h"
#include "plugin/file_stamp.h"
#include "registry/pg_access.h"
#include "registry/snapshot_cache.h"
#include "registry/sqlite_access.h"

namespace onboard::plugin {
namespace {

// Wakes the watcher when the registry's files change, so that an idle broker does not read the
// registry every refresh interval: a read that finds nothing new cost ~20,000 instructions, 0.4 M
// per second at the default 50 ms (callgrind; docs/benchmarks.md). Watches the directory, not the
// files, so that a file removed, replaced by rename or created later (the -wal after a checkpoint
// removed it) is seen too. Every commit writes the -wal file (or the database itself, in rollback
// mode) with write(2), which inotify reports. What it cannot see (a writer on another host over a
// network file system, a watch the kernel refused) the safety read every idle interval still
// finds.
class DirectoryWatch {
 public:
  // Nullopt when inotify cannot be used here: the watcher then reads every refresh interval.
  static std::unique_ptr<DirectoryWatch> start(const std::string& path) {
    std::error_code ec;
    auto real = std::filesystem::canonical(path, ec);  // the -wal lives beside the real file
    if (ec) return nullptr;
    auto fd = std::make_unique<UniqueFd>(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (fd->get() < 0) return nullptr;
    const std::string dir = real.parent_path().string();
    if (::inotify_add_watch(fd->get(), dir.c_str(),
                            IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE |
                                IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF) < 0)
      return nullptr;
    return std::unique_ptr<DirectoryWatch>(
        new DirectoryWatch(std::move(fd), real.filename().string()));
  }

  // Up to `max` for a change to the registry's files: true when one came (or the watch itself
  // went away, which the next read sorts out). Drains what is queued, so that a burst of writes
  // costs one read.
  bool wait(std::chrono::milliseconds max) noexcept {
    pollfd p{fd_->get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(max.count()));
    if (ready <= 0) return false;
    bool relevant = false;
    alignas(inotify_event) char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(fd_->get(), buffer, sizeof buffer);
      if (n <= 0) break;
      for (ssize_t at = 0; at < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        if ((event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_Q_OVERFLOW)) != 0 ||
            (event->len > 0 && concerns_registry(event->name))) {
          relevant = true;
        }
      }
    }
    return relevant;
  }

 private:
  DirectoryWatch(std::unique_ptr<UniqueFd> fd, std::string base)
      : fd_(std::move(fd)), base_(std::move(base)) {}

  // The database, its -wal, -shm or -journal: a name the database's starts, with no more than
  // such a suffix.
  bool concerns_registry(std::string_view name) const noexcept {
    if (!name.starts_with(base_)) return false;
    const std::string_view rest = name.substr(base_.size());
    return rest.empty() || rest == "-wal" || rest == "-shm" || rest == "-journal";
  }

  std::unique_ptr<UniqueFd> fd_;
  std::string base_;
};

class SqliteAccess final : public AccessSource {
 public:
  SqliteAccess(std::string path, std::chrono::milliseconds idle)
      : path_(std::move(path)), idle_(idle) {}

  std::string name() const override { return "registry " + path_; }

  std::optional<std::string> outdated() override {
    if (!store_) return "not open";
    const auto stamp = file_stamp(path_);
    if (!stamp || !stamp->same_file(opened_)) return "the file was removed or replaced";
    // In WAL mode the connection's view lives in these two files: once either is unlinked or
    // swapped, writers use new ones this connection never sees, and it would read the registry as
    // it was, without an error, for as long as it stays open.
    for (const auto& side : sides_) {
      const auto now = file_stamp(path_ + side.suffix);
      const bool same = now ? side.opened && now->same_file(*side.opened) : !side.opened;
      if (!same) return "its " + std::string(side.suffix) + " file was removed or replaced";
    }
    return std::nullopt;
  }

  Result<std::shared_ptr<const registry::Snapshot>> reopen() override {
    store_.reset();
    // Watching before the read: a change committed while it runs wakes the next poll.
    watch_ = DirectoryWatch::start(path_);
    const auto stamp = file_stamp(path_);
    if (!stamp) return make_error(Errc::not_found, name() + " does not exist or cannot be read");
    ONBOARD_TRY(auto store, registry::open_sqlite_access(path_));  // read-only
    ONBOARD_TRY(auto snapshot, registry::load_snapshot(*store));
    store_ = std::move(store);
    opened_ = *stamp;
    for (auto& side : sides_) side.opened = file_stamp(path_ + side.suffix);
    return snapshot;
  }

  Status probe() override {
    if (!file_stamp(path_))
      return make_error(Errc::not_found, name() + " does not exist or cannot be read");
    ONBOARD_TRY(auto store, registry::open_sqlite_access(path_));  // and its schema version
    return ok_status();
  }

  Result<std::optional<registry::Refresh>> refresh(const registry::Snapshot& snapshot) override {
    return registry::refresh_snapshot(*store_, snapshot);
  }

  // While the directory is watched; until the first successful open, and wherever inotify is
  // refused, the watcher reads every refresh interval.
  bool notifies() const noexcept override { return watch_ != nullptr; }
  std::chrono::milliseconds idle_interval() const noexcept override { return idle_; }
  bool wait_for_change(std::chrono::milliseconds max) noexcept override {
    if (!watch_) {
      std::this_thread::sleep_for(max);
      return false;
    }
    return watch_->wait(max);
  }

 private:
  std::string path_;
  std::chrono::milliseconds idle_;
  std::unique_ptr<DirectoryWatch> watch_;
  std::unique_ptr<registry::AccessStore> store_;
  FileStamp opened_;
  struct Side {
    const char* suffix;
    std::optional<FileStamp> opened;  // as it was after the last open and full read
  };
  std::array<Side, 2> sides_{{{"-wal", std::nullopt}, {"-shm", std::nullopt}}};
};

// A PostgreSQL registry: one connection, read-only, LISTENing for the notification every commit
// that changes what brokers decide from sends. The notification is only a wake-up: each refresh
// reads the change feed after the snapshot's seq, so a notice lost across a reconnect loses
// nothing.
class PgAccess final : public AccessSource {
 public:
  PgAccess(registry::Location location, std::chrono::milliseconds timeout,
           std::chrono::milliseconds idle)
      : location_(std::move(location)), timeout_(timeout), idle_(idle) {}

  std::string name() const override { return "registry " + location_.display(); }

  std::optional<std::string> outdated() override {
    if (!store_) return "not connected";
    return std::nullopt;
  }

  Result<std::shared_ptr<const registry::Snapshot>> reopen() override {
    if (auto wait = backing_off()) return *wait;
    store_.reset();
    auto store = registry::open_pg_access(location_, timeout_);
    if (!store.ok()) return failed(store.error());
    auto snapshot = registry::load_snapshot(*store.value());
    if (!snapshot.ok()) return failed(snapshot.error());
    store_ = std::move(store).value();
    backoff_ = {};
    return snapshot;
  }

  // Connects (which checks the schema version) and disconnects; no backoff: init asks once.
  Status probe() override {
    ONBOARD_TRY(auto store, registry::open_pg_access(location_, timeout_));
    return ok_status();
  }

  Result<std::optional<registry::Refresh>> refresh(const registry::Snapshot& snapshot) override {
    if (auto wait = backing_off()) return *wait;
    // The store reconnects by itself on the next read after a lost connection, and LISTENs again.
    auto refreshed = registry::refresh_snapshot(*store_, snapshot);
    if (!refreshed.ok()) return failed(refreshed.error());
    backoff_ = {};
    return refreshed;
  }

  bool notifies() const noexcept override { return true; }
  std::chrono::milliseconds idle_interval() const noexcept override { return idle_; }

  bool wait_for_change(std::chrono::milliseconds max) noexcept override {
    if (store_ && !backing_off()) {
      auto changed = store_->wait_for_change(max);
      if (changed.ok()) return changed.value();
    }
    std::this_thread::sleep_for(max);  // disconnected: the next refresh tries again
    return false;
  }

 private:
  // While backing off after a failure: the failure again, without touching the network.
  std::optional<Error> backing_off() const {
    if (backoff_.count() == 0 || Clock::now() >= retry_at_) return std::nullopt;
    return last_error_;
  }

  Error failed(Error error) {
    backoff_ = backoff_.count() == 0 ? std::chrono::seconds(1)
                                     : std::min<std::chrono::seconds>(2 * backoff_, kMaxBackoff);
    retry_at_ = Clock::now() + backoff_;
    last_error_ = error;
    return error;
  }

  static constexpr std::chrono::seconds kMaxBackoff{8};
  registry::Location location_;
  std::chrono::milliseconds timeout_;
  std::chrono::milliseconds idle_;
  std::unique_ptr<registry::PgAccessStore> store_;
  std::chrono::seconds backoff_{0};
  Clock::time_point retry_at_;
  Error last_error_{Errc::io, ""};
};

// May itself throw (std::bad_alloc for the string): callers catch that too.
std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

Result<CachedStart> read_cache_for_start(const std::string& path, const std::string& why) {
  auto cached = registry::read_snapshot_cache(path);
  if (!cached.ok())
    return make_error(cached.error().code, why + "; and the cache file: " + cached.error().message);
  std::error_code ec;
  const auto written = std::filesystem::last_write_time(path, ec);
  const auto age = ec ? std::chrono::hours(24 * 365)
                      : std::chrono::duration_cast<Clock::duration>(
                            std::filesystem::file_time_type::clock::now() - written);
  return CachedStart{std::move(cached).value(), std::max(age, Clock::duration{})};
}

std::string cache_start_line(const std::string& path, const CachedStart& start,
                             const std::string& why) {
  return why + "; starting from the cache file " + path + " (change " +
         std::to_string(start.snapshot->change_seq()) + ", written " +
         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(start.age).count()) +
         " s ago) until the registry answers";
}

std::unique_ptr<AccessSource> sqlite_access_source(std::string path,
                                                   std::chrono::milliseconds idle) {
  return std::make_unique<SqliteAccess>(std::move(path), idle);
}

std::unique_ptr<AccessSource> access_source(const registry::Location& location,
                                            std::chrono::milliseconds timeout,
                                            std::chrono::milliseconds idle) {
  if (location.backend == registry::Backend::sqlite)
    return sqlite_access_source(location.target, std::min(idle, kSqliteSafetyInterval));
  return std::make_unique<PgAccess>(location, timeout, idle);
}

Watcher::Watcher(std::unique_ptr<AccessSource> source,
                 std::shared_ptr<const registry::Snapshot> snapshot, Handover& handover,
                 std::atomic<Clock::rep>& last_ok, std::unique_ptr<CrlGuard> crl)
    : source_(std::move(source)),
      current_(std::move(snapshot)),
      handover_(handover),
      last_ok_(last_ok),
      crl_(std::move(crl)) {}

void Watcher::run(std::stop_token stop, std::chrono::milliseconds interval) noexcept {
  try {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    if (!current_) poll();  // the first read, at once
    write_cache();          // the snapshot the broker starts with, before any change
    while (!stop.stop_requested()) {
      const bool every_interval =
          eager_.load(std::memory_order_acquire) || Clock::now() < read_until_;
      if (!source_->notifies()) {
        cv.wait_for(lock, stop, interval, [] { return false; });
      } else if (every_interval) {
        // A read every interval, and at once on a further notice (which starts the period again).
        if (source_->wait_for_change(interval)) read_until_ = Clock::now() + kReadAfterNotice;
      } else {
        wait_for_notification(stop, interval);
      }
      if (stop.stop_requested()) break;
      poll();
    }
  } catch (...) {
    // Only the wait itself could get here (a system error); the broker keeps the last snapshot
    // and the staleness limit then refuses new connections.
    failed_with_current_exception("the registry watcher stopped: ");
  }
}

// Until a change notice, the idle interval, or `stop`; in short slices so that a stop is seen
// within a fraction of a second. A CRL file, which nothing announces, is still looked at every
// refresh interval.
void Watcher::wait_for_notification(const std::stop_token& stop,
                                    std::chrono::milliseconds interval) {
  // Slices of at most the interval: a stop, and set_eager, are seen within one.
  const std::chrono::milliseconds slice =
      crl_ ? interval : std::min(interval, std::chrono::milliseconds(200));
  const auto until = Clock::now() + source_->idle_interval();
  while (!stop.stop_requested()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) return;
    // Asked to read every interval meanwhile (set_eager): this slice is the interval.
    if (eager_.load(std::memory_order_acquire)) {
      if (source_->wait_for_change(std::min(left, interval)))
        read_until_ = Clock::now() + kReadAfterNotice;
      return;
    }
    if (source_->wait_for_change(std::min(left, slice))) {
      read_until_ = Clock::now() + kReadAfterNotice;
      return;
    }
    poll_crl();
  }
}

void Watcher::keep_cache(std::string path, bool started_from_it,
                         std::chrono::milliseconds spacing) {
  cache_path_ = std::move(path);
  cache_spacing_ = spacing;
  if (started_from_it && current_) cached_seq_ = current_->change_seq();
}

// After a change, once the spacing has passed since the last write: a burst of changes costs one
// write, and the last of them is written at the next poll after the burst.
void Watcher::write_cache() noexcept {
  if (!cache_path_ || !current_ || failing_ || current_->change_seq() == cached_seq_) return;
  if (Clock::now() - cached_at_ < cache_spacing_) return;
  try {
    cached_at_ = Clock::now();
    const auto written = registry::write_snapshot_cache(*current_, *cache_path_);
    if (!written.ok()) {
      if (!cache_failing_) {
        handover_.post_log(LogLevel::warning,
                           "cannot keep the cache file: " + written.error().message);
      }
      cache_failing_ = true;
      return;
    }
    if (cache_failing_) handover_.post_log(LogLevel::notice, "cache file written again");
    cache_failing_ = false;
    cached_seq_ = current_->change_seq();
  } catch (...) {
    cache_failing_ = true;  // out of memory: the next change tries again
  }
}

void Watcher::poll() noexcept {
  try {
    handover_.release_retired();
    poll_registry();
  } catch (...) {
    // e.g. std::bad_alloc while building a snapshot: keep the last one, try again next poll.
    failed_with_current_exception("");
  }
  write_cache();
  poll_crl();
}

void Watcher::poll_crl() noexcept {
  if (!crl_) return;
  try {
    crl_->poll(handover_, static_cast<UnixTime>(std::time(nullptr)));
    crl_failing_ = false;
  } catch (...) {
    if (!crl_failing_) {
      try {
        handover_.post_log(LogLevel::error,
                           "cannot check the CRL: " + what_of(std::current_exception()));
      } catch (...) {
      }
    }
    crl_failing_ = true;
  }
}

void Watcher::poll_registry() {
  if (!current_) {
    full_reload_.store(false, std::memory_order_release);  // the first read is a full one
    return first_read();
  }
  if (full_reload_.exchange(false, std::memory_order_acq_rel)) return reload("reload requested");
  if (auto why = source_->outdated()) return reload(*why);
  auto refresh = source_->refresh(*current_);
  if (!refresh.ok()) return failed(refresh.error().message);
  succeeded();
  if (!refresh.value()) return;
  auto& r = *refresh.value();
  if (r.read_in_full_because) return reload(*r.read_in_full_because);
  current_ = r.snapshot;
  handover_.post(current_, std::move(r.kicks));
}

// The first snapshot: the registry read in full or, when that fails and there is a cache file, the
// cache, which counts as read when it was written (one older than the staleness limit lets no new
// client in until the registry answers). Neither: logged once, the broker keeps refusing everyone,
// and the next poll tries again.
void Watcher::first_read() {
  auto read = source_->reopen();
  if (read.ok()) {
    current_ = std::move(read).value();
    cached_seq_ = -1;
    handover_.post_log(LogLevel::notice,
                       source_->name() + ": " + std::to_string(current_->device_count()) +
                           " devices, change " + std::to_string(current_->change_seq()));
    succeeded();
    handover_.post(current_, {});
    return;
  }
  const std::string why = read.error().message;
  if (!cache_path_) return failed(why + " (no client is let in until it is read)");
  auto cached = read_cache_for_start(*cache_path_, why);
  if (!cached.ok())
    return failed(cached.error().message + " (no client is let in until one is read)");
  handover_.post_log(LogLevel::warning, cache_start_line(*cache_path_, cached.value(), why));
  current_ = cached.value().snapshot;
  cached_seq_ = current_->change_seq();  // not rewritten until the registry itself is read
  last_ok_.store((Clock::now() - cached.value().age).time_since_epoch().count());
  handover_.post(current_, {});
}

// Reads the registry in full (the file or its WAL was replaced, or SIGHUP asked for it) and
// disconnects whoever the new picture no longer lets in.
void Watcher::reload(const std::string& why) {
  auto snapshot = source_->reopen();
  if (!snapshot.ok()) return failed(why + "; reopening: " + snapshot.error().message);
  std::vector<std::string> kicks;
  const registry::Snapshot& next = *snapshot.value();
  current_->for_each_device([&](const registry::SnapshotDevice& before) {
    if (registry::must_disconnect(before, next.find_device(before.id())))
      kicks.emplace_back(before.id());
  });
  for (auto& claim : registry::claim_kicks(*current_, next)) kicks.push_back(std::move(claim));
  current_ = std::move(snapshot).value();
  cached_seq_ = -1;  // read from the registry itself: the cache is rewritten, even if unchanged
  handover_.post_log(LogLevel::notice, source_->name() + " read in full (" + why + "): " +
                                           std::to_string(current_->device_count()) + " devices");
  succeeded();
  handover_.post(current_, std::move(kicks));
}

void Watcher::failed_with_current_exception(const char* prefix) noexcept {
  try {
    failed(prefix + what_of(std::current_exception()));
  } catch (...) {
    failing_ = true;  // no memory even for the message; the staleness limit still reports it
  }
}

void Watcher::failed(const std::string& why) noexcept {
  if (!failing_) {
    try {
      handover_.post_log(LogLevel::error, current_ ? "cannot read the registry (keeping the last "
                                                     "good snapshot): " +
                                                         why
                                                   : "cannot read the registry: " + why);
    } catch (...) {
      // Out of memory for the line itself: the staleness limit still reports it.
    }
  }
  failing_ = true;
}

void Watcher::succeeded() {
  if (failing_) handover_.post_log(LogLevel::notice, "registry readable again");
  failing_ = false;
  last_ok_.store(Clock::now().time_since_epoch().count());
}

}  // namespace onboard::plugin
