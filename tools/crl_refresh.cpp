#include "tools/crl_refresh.h"

#include <charconv>
#include <fstream>
#include <sstream>

#include "ca/crl.h"
#include "ca/ossl.h"

namespace onboard::ops {

Result<UnixTime> parse_duration(std::string_view text, std::string_view option) {
  auto bad = [&] {
    return make_error(Errc::invalid_input,
                      std::string(option) + " must be a whole number and a unit (s, m, h or d), " +
                          "e.g. 7d or 36h, from 1s to 3650d; not '" + std::string(text) + "'");
  };
  if (text.size() < 2) return bad();
  UnixTime unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return bad();
  }
  const std::string_view digits = text.substr(0, text.size() - 1);
  UnixTime number = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  if (ec != std::errc() || end != digits.data() + digits.size() || number < 1 ||
      number > 3650 * 86400 / unit)
    return bad();
  return number * unit;
}

std::string format_duration(UnixTime seconds) {
  if (seconds < 0) return "-" + format_duration(-seconds);
  const UnixTime d = seconds / 86400, h = seconds % 86400 / 3600, m = seconds % 3600 / 60;
  if (d > 0) return std::to_string(d) + "d " + std::to_string(h) + "h";
  if (h > 0) return std::to_string(h) + "h " + std::to_string(m) + "m";
  if (m > 0) return std::to_string(m) + "m";
  return std::to_string(seconds) + "s";
}

CrlStanding crl_standing(const std::filesystem::path& path, UnixTime now, UnixTime within) {
  CrlStanding standing;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    standing.due = true;
    standing.why = "no CRL at " + path.string();
    return standing;
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  auto crl = crl_from_pem(text.str());
  if (!in || !crl.ok()) {
    standing.due = true;
    standing.why = path.string() + " is not a readable CRL";
    return standing;
  }
  const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl->get());
  const auto next_update = next != nullptr ? to_unix_time(next) : std::nullopt;
  if (!next_update) {
    standing.why = "the CRL at " + path.string() + " has no next update";
    return standing;
  }
  standing.next_update = *next_update;
  const UnixTime left = *next_update - now;
  if (left <= 0) {
    standing.due = true;
    standing.why = "the CRL expired " + format_duration(-left) + " ago";
  } else if (left <= within) {
    standing.due = true;
    standing.why = "the CRL expires in " + format_duration(left);
  } else {
    standing.why = "the CRL is in force for " + format_duration(left) + " more";
  }
  return standing;
}

}  // namespace onboard::ops
