// A group commit of enrolments (docs/provisioning.md, "The signer under a burst"): the enrolments
// that wait for the writers' turn at the same time are recorded together, in one transaction and
// one sync to disk (ClaimStore::enroll_devices), each in its own savepoint, so that the refusal or
// the failure of one never changes the outcome of another.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "registry/claim_store.h"

namespace onboard::ops {

class EnrolmentGroup {
 public:
  explicit EnrolmentGroup(std::size_t max_batch = registry::kMaxEnrollBatch)
      : max_batch_(max_batch == 0 ? 1 : max_batch) {}
  EnrolmentGroup(const EnrolmentGroup&) = delete;
  EnrolmentGroup& operator=(const EnrolmentGroup&) = delete;

  // Records `item` and returns its own outcome, as store.enroll_device would. The first caller to
  // find no batch being written leads: it takes `write_turn`, then every enrolment waiting by then
  // (its own first in line among them, at most max_batch), and records them on its `store` (its
  // own connection); the others wait for their outcome, and the next batch is led by one of those
  // that arrived meanwhile. Never throws.
  Result<registry::EnrollOutcome> record(registry::ClaimStore& store, std::mutex& write_turn,
                                         const registry::EnrollItem& item) noexcept;

  struct Stats {
    std::uint64_t batches = 0;
    std::uint64_t enrolments = 0;
    std::size_t largest = 0;
  };
  Stats stats() const;
  // Enrolments waiting for a batch to take them.
  std::size_t waiting() const;

 private:
  struct Waiting {
    const registry::EnrollItem* item;
    std::optional<Result<registry::EnrollOutcome>> result{};
  };
  void lead(registry::ClaimStore& store, std::mutex& write_turn,
            std::unique_lock<std::mutex>& lock);

  std::size_t max_batch_;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::deque<Waiting*> queue_;  // not yet taken into a batch, in arrival order
  bool leading_ = false;        // a batch is being written
  Stats stats_{};
};

}  // namespace onboard::ops
