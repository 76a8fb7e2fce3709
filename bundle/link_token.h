// One-time signed download links for bundles.
//
// A token is the unpadded base64url encoding (RFC 4648 §5, so it can sit in a URL path or query
// as is) of
//
//   version (1 byte, 1) | expires_at (8 bytes, big-endian seconds since the epoch)
//   | id length (1 byte) | bundle id | tag (32 bytes)
//
// where tag = HMAC-SHA256(link secret, "mosquitto-onboard link token v1" || 0x00 || everything
// before the tag). The token is not encrypted: anyone holding it can read the bundle id and the
// expiry, which are not secret. It only proves that this server issued it, for that bundle, until
// that time.
//
// What this module does NOT do: single use. A token stays valid until it expires; the registry
// records each download and the REST server refuses a second one (410), in the same transaction
// that marks the link used. Rotating the secret (deleting the file) invalidates every link.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "core/error.h"
#include "core/secret.h"
#include "core/time.h"

namespace onboard::bundle {

inline constexpr std::size_t kLinkSecretBytes = 32;
inline constexpr std::size_t kMaxBundleIdLength = 64;
inline constexpr const char* kLinkSecretFile = "link-secret.key";

// Why `id` cannot be a bundle id, or nullopt: 1 to 64 characters of [A-Za-z0-9._-].
std::optional<std::string> bundle_id_problem(std::string_view id);

// A token for `bundle_id` valid until `expires_at` (exclusive), signed with `secret_key`
// (at least 32 bytes). Errors: invalid_input (bad bundle id, expiry not positive, short key),
// crypto.
Result<std::string> make_link_token(std::string_view bundle_id, UnixTime expires_at,
                                    const Secret& secret_key);

enum class LinkFailure {
  malformed,      // not a token of a version we issue: bad characters, length or layout
  bad_signature,  // well formed, but not signed with this secret (altered, forged, other server)
  expired,        // authentic, but its time is up
  internal,       // the check could not run (a short key, OpenSSL failed): never a verdict
};
const char* link_failure_name(LinkFailure failure) noexcept;

struct LinkToken {
  std::string bundle_id;
  UnixTime expires_at = 0;
};

// The outcome of verify_link_token: an authentic, unexpired token or the reason it is not one.
class [[nodiscard]] LinkCheck {
 public:
  LinkCheck(LinkToken token) : state_(std::move(token)) {}  // NOLINT: implicit on purpose
  LinkCheck(LinkFailure failure) : state_(failure) {}       // NOLINT
  bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  const LinkToken& token() const { return std::get<0>(state_); }
  LinkFailure failure() const { return std::get<1>(state_); }

 private:
  std::variant<LinkToken, LinkFailure> state_;
};

// Checks `token` against `secret_key` at time `now`. The order is fixed: layout (malformed), then
// the tag, compared in constant time (bad_signature), then the expiry (expired) -- so "expired"
// is only ever said of a token this server really issued. The encoding must be canonical (no
// padding, no stray bits in the last character), so every token has exactly one spelling.
LinkCheck verify_link_token(std::string_view token, const Secret& secret_key, UnixTime now);

// The server's link secret: `data_dir`/link-secret.key, 32 random bytes. Created on first use
// (0600, atomically; a concurrent creator wins and its secret is used). An existing file must be
// a regular file owned by this user with no permission bits beyond 0600 (Errc::conflict
// otherwise, with the chmod to run) and exactly 32 bytes long (Errc::corrupt). The directory must
// exist (Errc::io otherwise).
Result<Secret> load_or_create_link_secret(const std::filesystem::path& data_dir);

}  // namespace onboard::bundle
