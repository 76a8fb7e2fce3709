#include "bundle/link_token.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "core/encoding.h"
#include "core/files.h"
#include "core/ossl.h"

namespace onboard::bundle {
namespace {

constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kTagBytes = 32;
constexpr std::size_t kHeaderBytes = 1 + 8 + 1;  // version, expiry, id length
constexpr std::size_t kMaxTokenBytes = kHeaderBytes + kMaxBundleIdLength + kTagBytes;
// Domain separation: this key signs nothing else, but a label costs nothing and keeps it so.
constexpr std::string_view kLabel{"mosquitto-onboard link token v1\0", 32};

// Strict decoding: alphabet only, no padding, no impossible length, and the unused low bits of the
// last character must be zero, so that no two spellings decode to the same token.

bool key_usable(const Secret& key) { return key.size() >= kLinkSecretBytes; }

// HMAC-SHA256(key, label || message).
std::optional<std::array<unsigned char, kTagBytes>> tag_of(std::string_view message,
                                                           const Secret& key) {
  std::string input;
  input.reserve(kLabel.size() + message.size());
  input.append(kLabel).append(message);
  std::array<unsigned char, kTagBytes> tag{};
  std::size_t length = 0;
  const unsigned char* done =
      EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.view().data(), key.size(),
                reinterpret_cast<const unsigned char*>(input.data()), input.size(), tag.data(),
                tag.size(), &length);
  if (done == nullptr || length != kTagBytes) return std::nullopt;
  return tag;
}

std::uint64_t get_u64(std::string_view in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

Error io_error(std::string_view what, const std::filesystem::path& path, int err) {
  return make_error(Errc::io, std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

// Reads the secret from an open descriptor after checking what the descriptor is.
Result<Secret> read_secret_fd(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error("cannot inspect", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::conflict, path.string() + " is not a regular file");
  }
  if (st.st_uid != ::geteuid()) {
    return make_error(Errc::conflict,
                      path.string() + " belongs to another user; refusing to use it");
  }
  if ((st.st_mode & 07777 & ~static_cast<mode_t>(0600)) != 0) {
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(Errc::conflict, path.string() + " has mode " + octal +
                                          ", wider than 0600; others may have read it. Run "
                                          "'chmod 600 " +
                                          path.string() +
                                          "' if it is still secret, or delete it to rotate "
                                          "(every link issued so far stops working)");
  }
  if (st.st_size != static_cast<off_t>(kLinkSecretBytes)) {
    return make_error(Errc::corrupt, path.string() + " is not " + std::to_string(kLinkSecretBytes) +
                                         " bytes long");
  }
  ONBOARD_TRY(Secret secret, read_fd_secret(fd, path, kLinkSecretBytes));
  if (secret.size() != kLinkSecretBytes) return io_error("cannot read", path, EIO);  // shrank
  return secret;
}

}  // namespace

std::optional<std::string> bundle_id_problem(std::string_view id) {
  if (id.empty()) return "a bundle id is empty";
  if (id.size() > kMaxBundleIdLength) {
    return "a bundle id is longer than " + std::to_string(kMaxBundleIdLength) + " characters";
  }
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return "bundle id '" + std::string(id) + "' may only use A-Z a-z 0-9 . _ -";
  }
  return std::nullopt;
}

const char* link_failure_name(LinkFailure failure) noexcept {
  switch (failure) {
    case LinkFailure::malformed:
      return "malformed";
    case LinkFailure::bad_signature:
      return "bad_signature";
    case LinkFailure::expired:
      return "expired";
    case LinkFailure::internal:
      return "internal";
  }
  return "internal";
}

Result<std::string> make_link_token(std::string_view bundle_id, UnixTime expires_at,
                                    const Secret& secret_key) {
  if (auto problem = bundle_id_problem(bundle_id)) return make_error(Errc::invalid_input, *problem);
  if (expires_at <= 0) return make_error(Errc::invalid_input, "a link's expiry must be after 1970");
  if (!key_usable(secret_key)) {
    return make_error(Errc::invalid_input, "the link secret must be at least " +
                                               std::to_string(kLinkSecretBytes) + " bytes");
  }
  std::string token;
  token.push_back(static_cast<char>(kVersion));
  append_u64_be(token, static_cast<std::uint64_t>(expires_at));
  token.push_back(static_cast<char>(bundle_id.size()));
  token.append(bundle_id);
  auto tag = tag_of(token, secret_key);
  if (!tag) return ossl::error("cannot compute a link token's HMAC");
  token.append(reinterpret_cast<const char*>(tag->data()), tag->size());
  return base64url_encode(token);
}

LinkCheck verify_link_token(std::string_view token, const Secret& secret_key, UnixTime now) {
  // Layout first, on nothing but public data.
  if (token.size() > (kMaxTokenBytes * 4 + 2) / 3) return LinkFailure::malformed;
  auto bytes = base64url_decode(token);
  if (!bytes || bytes->size() < kHeaderBytes + 1 + kTagBytes) return LinkFailure::malformed;
  if (static_cast<std::uint8_t>((*bytes)[0]) != kVersion) return LinkFailure::malformed;
  const std::size_t id_length = static_cast<unsigned char>((*bytes)[9]);
  if (bytes->size() != kHeaderBytes + id_length + kTagBytes) return LinkFailure::malformed;

  // Then the tag, in constant time.
  if (!key_usable(secret_key)) return LinkFailure::internal;
  const std::string_view signed_part = std::string_view(*bytes).substr(0, kHeaderBytes + id_length);
  auto expected = tag_of(signed_part, secret_key);
  if (!expected) {
    ossl::clear_errors();
    return LinkFailure::internal;
  }
  if (CRYPTO_memcmp(expected->data(), bytes->data() + signed_part.size(), kTagBytes) != 0) {
    return LinkFailure::bad_signature;
  }

  // Only an authentic token gets its contents believed. A signed token with contents we would
  // never issue means a bug or a leaked key: refuse it as malformed.
  LinkToken result;
  result.bundle_id = std::string(signed_part.substr(kHeaderBytes));
  const std::uint64_t expiry = get_u64(signed_part.substr(1, 8));
  if (bundle_id_problem(result.bundle_id) || expiry == 0 || expiry > INT64_MAX) {
    return LinkFailure::malformed;
  }
  result.expires_at = static_cast<UnixTime>(expiry);
  if (now >= result.expires_at) return LinkFailure::expired;
  return result;
}

Result<Secret> load_or_create_link_secret(const std::filesystem::path& data_dir) {
  struct stat dir_st {};
  if (::stat(data_dir.c_str(), &dir_st) != 0) return io_error("cannot reach", data_dir, errno);
  if (!S_ISDIR(dir_st.st_mode)) {
    return make_error(Errc::io, data_dir.string() + " is not a directory");
  }
  const std::filesystem::path path = data_dir / kLinkSecretFile;
  // Two rounds at most: if another process creates the file between our open and our create, the
  // rename refuses and we read what it wrote.
  for (int round = 0; round < 2; ++round) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
    if (fd.get() >= 0) return read_secret_fd(fd.get(), path);
    if (errno == ELOOP) {
      return make_error(Errc::conflict, path.string() + " is a symbolic link; refusing to use it");
    }
    if (errno != ENOENT) return io_error("cannot open", path, errno);

    std::array<unsigned char, kLinkSecretBytes> fresh{};
    if (RAND_bytes(fresh.data(), static_cast<int>(fresh.size())) != 1) {
      return ossl::error("cannot draw a link secret from the random generator");
    }
    Secret secret(std::string_view(reinterpret_cast<const char*>(fresh.data()), fresh.size()));
    OPENSSL_cleanse(fresh.data(), fresh.size());
    auto written = write_file_atomic(path, secret.view(), 0600, Overwrite::refuse);
    if (written.ok()) return secret;
    if (written.error().code != Errc::conflict) return std::move(written).error();
  }
  return make_error(Errc::io, "cannot create or read " + path.string());
}

}  // namespace onboard::bundle
