// bundle/link_token.h: verify_link_token checks the token in a download URL, before any
// authentication. Invariants: an accepted token names a valid bundle id and an expiry after now,
// and make_link_token for the same id and expiry spells exactly the token accepted (one spelling).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "bundle/link_token.h"
#include "fuzz/fuzz_secrets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard;
  static const Secret secret{std::string_view(fuzz::kLinkSecret)};
  const std::string_view token(reinterpret_cast<const char*>(data), size);
  const auto check = bundle::verify_link_token(token, secret, fuzz::kNow);
  if (!check) {
    if (check.failure() == bundle::LinkFailure::internal) std::abort();
    return 0;
  }
  const auto& accepted = check.token();
  if (bundle::bundle_id_problem(accepted.bundle_id)) std::abort();
  if (accepted.expires_at <= fuzz::kNow) std::abort();
  auto remade = bundle::make_link_token(accepted.bundle_id, accepted.expires_at, secret);
  if (!remade || *remade != token) std::abort();
  return 0;
}
