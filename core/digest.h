// SHA-256, written as lower-case hex: certificate fingerprints, audit hashes, token hashes and
// bundle file digests all use this one form.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace onboard {

Result<std::string> sha256_hex(std::string_view data);

}  // namespace onboard
