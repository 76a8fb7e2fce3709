// The per-claim connect rate limit: many devices share one claim, so one leaked claim could
// otherwise open connections (and, with the next stage, CSRs) as fast as a network allows. A token
// bucket per claim name: `burst` connects at once, then `rate` per second.
//
// Broker thread only: no lock. Bounded: a bucket per claim the snapshot knows, dropped once full.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

namespace onboard::plugin {

class ClaimRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  ClaimRateLimiter(long rate_per_second, long burst) noexcept
      : rate_(static_cast<double>(rate_per_second)), burst_(static_cast<double>(burst)) {}

  // True: this connect may go ahead (a token was taken).
  bool allow(std::string_view claim, Clock::time_point now);

  std::size_t size() const noexcept { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point at{};
  };
  // Claims are few; this only guards against a snapshot with very many of them.
  static constexpr std::size_t kMaxBuckets = 65536;
  double rate_;
  double burst_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace onboard::plugin
