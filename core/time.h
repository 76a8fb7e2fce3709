// Time as the registry, the CA and the logs speak it: whole seconds since the epoch, UTC, shown
// as RFC 3339 ("2026-12-06T07:00:00Z").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace onboard {

using UnixTime = std::int64_t;  // seconds since the epoch, UTC
UnixTime unix_now() noexcept;

// "YYYY-MM-DDTHH:MM:SSZ"; the number of seconds itself for a time the calendar cannot show.
std::string iso_time(UnixTime t);
// The canonical form iso_time writes, and nothing else.
std::optional<UnixTime> parse_iso_time(std::string_view text);

}  // namespace onboard
