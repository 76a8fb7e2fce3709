#include "ops/crl_refresh.h"

#include <fstream>
#include <sstream>

#include "ca/crl.h"
#include "core/ossl.h"

namespace onboard::ops {

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
  auto crl = ca::crl_from_pem(text.str());
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
