// When the CRL must be re-issued. A broker that loads the CRL (`crlfile`) refuses every device
// once the CRL it holds is past its next update, so someone holding the CA key re-issues it in
// time: `onboardctl crl --if-expiring-within` (a systemd timer) or `onboardctl serve`.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "ca/certificate.h"
#include "core/error.h"
#include "ops/duration.h"

namespace onboard::ops {

// How long a CRL written by onboardctl is in force unless --validity says otherwise.
inline constexpr UnixTime kDefaultCrlValidity = 7 * kDay;
inline constexpr UnixTime kMinCrlValidity = 3600;
inline constexpr UnixTime kMaxCrlValidity = 366 * kDay;

struct CrlStanding {
  bool due = false;          // rewrite it now
  std::string why;           // what was found, for the message
  UnixTime next_update = 0;  // of the CRL found; 0 when none was read
};

// Whether the CRL at `path` must be rewritten at `now` because it expires within `within`: also
// when it is missing or unreadable (a broker could not load it either).
CrlStanding crl_standing(const std::filesystem::path& path, UnixTime now, UnixTime within);

}  // namespace onboard::ops
