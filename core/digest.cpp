#include "core/digest.h"

#include <openssl/evp.h>

#include "core/encoding.h"
#include "core/ossl.h"

namespace onboard {

Result<std::string> sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1 ||
      length != 32) {
    return ossl::error("cannot compute a SHA-256 digest");
  }
  return hex_encode({digest, length});
}

}  // namespace onboard
