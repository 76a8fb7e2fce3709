// Fixed keys and passwords of the fuzz targets, shared with make_seeds.cpp so that its seeds are
// valid inputs for them. Not secrets: only the fuzzers use them.
#pragma once

namespace onboard::fuzz {

// 32 bytes, the link secret's length.
inline constexpr const char* kLinkSecret = "fuzz-link-secret-0123456789abcde";
// verify_link_token's "now"; the seeds hold tokens on both sides of it.
inline constexpr long long kNow = 1800000000;
inline constexpr const char* kZipPassword = "fuzz-bundle-password";

}  // namespace onboard::fuzz
