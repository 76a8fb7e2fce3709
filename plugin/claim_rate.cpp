#include "plugin/claim_rate.h"

#include <algorithm>

namespace onboard::plugin {

bool ClaimRateLimiter::allow(std::string_view claim, Clock::time_point now) {
  auto it = buckets_.find(std::string(claim));
  if (it == buckets_.end()) {
    // A full map is emptied rather than grown: every claim then starts with a full bucket again,
    // which only ever allows a burst more, never refuses a claim that is within its rate.
    if (buckets_.size() >= kMaxBuckets) buckets_.clear();
    it = buckets_.emplace(std::string(claim), Bucket{burst_, now}).first;
  } else {
    const std::chrono::duration<double> elapsed = now - it->second.at;
    it->second.tokens =
        std::min(burst_, it->second.tokens + std::max(0.0, elapsed.count()) * rate_);
    it->second.at = now;
  }
  if (it->second.tokens < 1.0) return false;
  it->second.tokens -= 1.0;
  return true;
}

}  // namespace onboard::plugin
