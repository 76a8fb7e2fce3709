#include "ops/enrol_group.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace onboard::ops {

Result<registry::EnrollOutcome> EnrolmentGroup::record(registry::ClaimStore& store,
                                                       std::mutex& write_turn,
                                                       const registry::EnrollItem& item) noexcept {
  try {
    Waiting me{&item};
    std::unique_lock lock(mutex_);
    queue_.push_back(&me);
    while (!me.result) {
      if (leading_) {
        done_.wait(lock);
      } else {
        lead(store, write_turn, lock);
      }
    }
    return std::move(*me.result);
  } catch (...) {
    // Only std::system_error from a lock or std::bad_alloc from the queue: before this caller
    // was in a batch (lead() hands every batch member its result whatever happens).
    return make_error(Errc::internal, "enroll device: the group commit failed");
  }
}

// Called with `lock` held and no batch being written; returns with it held, every member of the
// batch it wrote given its result.
void EnrolmentGroup::lead(registry::ClaimStore& store, std::mutex& write_turn,
                          std::unique_lock<std::mutex>& lock) {
  leading_ = true;
  lock.unlock();
  std::vector<Waiting*> batch;
  std::vector<Result<registry::EnrollOutcome>> results;
  try {
    // The turn first: the enrolments that arrive while this waits for it join the batch.
    std::lock_guard turn(write_turn);
    std::vector<registry::EnrollItem> items;
    {
      std::lock_guard take(mutex_);
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    items.reserve(batch.size());
    for (const Waiting* w : batch) items.push_back(*w->item);
    results = store.enroll_devices(items);
  } catch (...) {
    results.clear();
  }
  lock.lock();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    batch[i]->result = i < results.size()
                           ? std::move(results[i])
                           : Result<registry::EnrollOutcome>(make_error(
                                 Errc::internal, "enroll device: the group commit failed"));
  }
  if (!batch.empty()) {
    ++stats_.batches;
    stats_.enrolments += batch.size();
    if (batch.size() > stats_.largest) stats_.largest = batch.size();
  }
  leading_ = false;
  done_.notify_all();
}

std::size_t EnrolmentGroup::waiting() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

EnrolmentGroup::Stats EnrolmentGroup::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace onboard::ops
