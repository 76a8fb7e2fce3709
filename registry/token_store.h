// API tokens for the REST server: only the SHA-256 (lower-case hex) of a token is stored.
//
// Writes follow the Store contract (store.h): each mutating method is one transaction with its
// audit row, and no exception escapes.
#pragma once

#include <string_view>
#include <vector>

#include "core/error.h"
#include "registry/model.h"

namespace onboard::registry {

class TokenStore {
 public:
  virtual ~TokenStore() = default;

  // A duplicate name or hash is Errc::conflict.
  virtual Result<ApiToken> create_api_token(std::string_view name, ApiRole role,
                                            std::string_view token_sha256, const Actor& actor) = 0;
  virtual Result<std::vector<ApiToken>> list_api_tokens() = 0;
  // false when it was revoked already (nothing written).
  virtual Result<bool> revoke_api_token(std::string_view name, const Actor& actor) = 0;
  // not_found for unknown AND revoked tokens.
  virtual Result<ApiToken> find_api_token(std::string_view token_sha256) = 0;
};

}  // namespace onboard::registry
