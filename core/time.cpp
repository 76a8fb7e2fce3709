#include "core/time.h"

#include <chrono>
#include <ctime>

namespace onboard {

UnixTime unix_now() noexcept {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string iso_time(UnixTime t) {
  const auto tt = static_cast<std::time_t>(t);
  std::tm tm{};
  char buf[32];
  if (::gmtime_r(&tt, &tm) == nullptr ||
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    return std::to_string(t);
  return buf;
}

std::optional<UnixTime> parse_iso_time(std::string_view text) {
  const std::string copy(text);  // strptime needs a terminated string
  std::tm tm{};
  const char* end = ::strptime(copy.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const UnixTime t = ::timegm(&tm);
  if (iso_time(t) != copy) return std::nullopt;  // canonical form only
  return t;
}

}  // namespace onboard
