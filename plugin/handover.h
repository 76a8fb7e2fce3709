// What the watcher thread hands to the broker thread: the next snapshot, the devices to
// disconnect, the lines to log and a CRL the broker should load. The broker thread takes it all on
// its tick, because broker functions must not be called from another thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "plugin/file_stamp.h"
#include "registry/snapshot.h"

namespace onboard::plugin {

// Mapped to Mosquitto's MOSQ_LOG_* in plugin.cpp, so that this and the watcher build without the
// broker's headers (and are tested without a broker).
enum class LogLevel { info, notice, warning, error };

class Handover {
 public:
  struct Taken {
    std::shared_ptr<const registry::Snapshot> snapshot;  // null: none newer
    std::vector<std::string> kicks;
    std::vector<std::pair<LogLevel, std::string>> logs;
    std::optional<FileStamp> crl_reload;  // a checked CRL, as it was on disk when checked
  };

  void post(std::shared_ptr<const registry::Snapshot> next, std::vector<std::string> new_kicks) {
    // An older snapshot the broker thread never took is freed after the unlock: its last reference
    // may be this one, and freeing a large snapshot must not hold up the broker's take().
    std::shared_ptr<const registry::Snapshot> superseded;
    std::lock_guard lock(mutex_);
    if (next) superseded = std::exchange(next_.snapshot, std::move(next));
    next_.kicks.insert(next_.kicks.end(), new_kicks.begin(), new_kicks.end());
    pending_.store(true, std::memory_order_release);
  }
  void post_log(LogLevel level, std::string line) {
    std::lock_guard lock(mutex_);
    next_.logs.emplace_back(level, std::move(line));
    pending_.store(true, std::memory_order_release);
  }
  void post_crl_reload(const FileStamp& stamp) {
    std::lock_guard lock(mutex_);
    next_.crl_reload = stamp;
    pending_.store(true, std::memory_order_release);
  }

  // The broker thread gives back the snapshot it stopped deciding with, so that the watcher thread
  // frees it: dropping the last reference to a million-device snapshot is about 0.1 ms of shard
  // reference counts (docs/benchmarks.md), which the broker thread would otherwise spend.
  void retire(std::shared_ptr<const registry::Snapshot> old) {
    std::lock_guard lock(mutex_);
    retired_.push_back(std::move(old));
  }
  // Watcher thread: frees what was retired, outside the lock.
  void release_retired() {
    std::vector<std::shared_ptr<const registry::Snapshot>> drop;  // destroyed after the unlock
    std::lock_guard lock(mutex_);
    drop.swap(retired_);
  }

  // Lets the tick skip the lock when there is nothing.
  bool pending() const noexcept { return pending_.load(std::memory_order_acquire); }

  // Only the snapshot, when one was posted (the plugin's init waiting for the first); the rest
  // stays for take().
  std::shared_ptr<const registry::Snapshot> take_snapshot() {
    std::lock_guard lock(mutex_);
    return std::move(next_.snapshot);
  }

  Taken take() {
    Taken out;
    std::lock_guard lock(mutex_);
    std::swap(out, next_);
    pending_.store(false, std::memory_order_release);
    return out;
  }

 private:
  std::mutex mutex_;
  std::atomic<bool> pending_{false};
  Taken next_;
  std::vector<std::shared_ptr<const registry::Snapshot>> retired_;
};

}  // namespace onboard::plugin
