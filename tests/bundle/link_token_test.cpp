#include "bundle/link_token.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/files.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::bundle;
using onboard::test::TempDir;

using onboard::test::mode_of;

namespace {

constexpr UnixTime kNow = 1'800'000'000;

Secret key_a() { return Secret(std::string(32, 'a')); }
Secret key_b() { return Secret(std::string(32, 'b')); }

std::string token_for(std::string_view id, UnixTime expires_at, const Secret& key) {
  auto token = make_link_token(id, expires_at, key);
  REQUIRE(token.ok());
  return token.value();
}

}  // namespace

TEST_CASE("a link token round-trips its bundle id and expiry under the same secret") {
  const Secret key = key_a();
  const std::string token = token_for("bundle-0042", kNow + 3600, key);
  auto check = verify_link_token(token, key, kNow);
  REQUIRE(check.ok());
  CHECK(check.token().bundle_id == "bundle-0042");
  CHECK(check.token().expires_at == kNow + 3600);
}

TEST_CASE("a link token uses only URL-safe characters and carries no padding") {
  const std::string token = token_for("b.1_x-Y", kNow + 60, key_a());
  for (char c : token) {
    const bool url_safe = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_';
    CHECK(url_safe);
  }
}

TEST_CASE("two tokens for different bundles or expiries differ, one token per input is stable") {
  const Secret key = key_a();
  CHECK(token_for("a", kNow + 60, key) == token_for("a", kNow + 60, key));
  CHECK(token_for("a", kNow + 60, key) != token_for("b", kNow + 60, key));
  CHECK(token_for("a", kNow + 60, key) != token_for("a", kNow + 61, key));
}

TEST_CASE("a flipped bit anywhere in a token makes it malformed or badly signed, never valid") {
  const Secret key = key_a();
  const std::string token = token_for("bundle-7", kNow + 3600, key);
  int malformed = 0, bad_signature = 0;
  for (std::size_t i = 0; i < token.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string altered = token;
      altered[i] = static_cast<char>(altered[i] ^ (1 << bit));
      auto check = verify_link_token(altered, key, kNow);
      REQUIRE_FALSE(check.ok());
      CHECK((check.failure() == LinkFailure::malformed ||
             check.failure() == LinkFailure::bad_signature));
      (check.failure() == LinkFailure::malformed ? malformed : bad_signature) += 1;
    }
  }
  CHECK(malformed > 0);
  CHECK(bad_signature > 0);
}

TEST_CASE("a token changed into another well-formed token fails the signature check") {
  // The bit-flip test above mostly hits the alphabet check; this one changes the signed bytes
  // themselves (expiry, id, tag) while keeping the text valid.
  const Secret key = key_a();
  const std::string token = token_for("bundle-7", kNow + 3600, key);
  // Change one base64url digit to the next valid digit: the text stays well formed and canonical
  // (except possibly in the last digit), and the decoded bytes change.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (std::size_t i = 0; i < token.size(); ++i) {
    std::string altered = token;
    const auto pos = alphabet.find(token[i]);
    REQUIRE(pos != std::string::npos);
    altered[i] = alphabet[(pos + 1) % 64];
    auto check = verify_link_token(altered, key, kNow);
    REQUIRE_FALSE(check.ok());
    // Digits 0-1 overlap the version byte and digits 12-13 the id length, so a change there may
    // make the layout wrong instead; so may the last digit's spare bits. Everywhere else the
    // layout stays valid and only the tag can catch the change.
    const bool layout_digit = i <= 1 || i == 12 || i == 13 || i + 1 == token.size();
    INFO("digit " << i);
    if (layout_digit) {
      CHECK((check.failure() == LinkFailure::malformed ||
             check.failure() == LinkFailure::bad_signature));
    } else {
      CHECK(check.failure() == LinkFailure::bad_signature);
    }
  }
}

TEST_CASE("an expired token is refused as expired, at and after its expiry second") {
  const Secret key = key_a();
  const std::string token = token_for("bundle-1", kNow, key);
  CHECK(verify_link_token(token, key, kNow - 1).ok());
  auto at = verify_link_token(token, key, kNow);
  REQUIRE_FALSE(at.ok());
  CHECK(at.failure() == LinkFailure::expired);
  auto later = verify_link_token(token, key, kNow + 86400);
  REQUIRE_FALSE(later.ok());
  CHECK(later.failure() == LinkFailure::expired);
}

TEST_CASE("a token signed with another secret is a bad signature, even when it has expired") {
  const std::string token = token_for("bundle-1", kNow + 60, key_a());
  auto check = verify_link_token(token, key_b(), kNow);
  REQUIRE_FALSE(check.ok());
  CHECK(check.failure() == LinkFailure::bad_signature);
  auto expired = verify_link_token(token, key_b(), kNow + 120);
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.failure() == LinkFailure::bad_signature);
}

TEST_CASE("truncated, extended, empty and foreign strings are malformed tokens") {
  const Secret key = key_a();
  const std::string token = token_for("bundle-1", kNow + 60, key);
  for (const std::string& bad :
       {std::string(), token.substr(0, token.size() - 1), token.substr(0, 10), token + "A",
        token + "AA", token + "=", std::string(200, 'A'), std::string("not a token"),
        token.substr(0, token.size() - 4) + "%2F+", std::string("AQ")}) {
    auto check = verify_link_token(bad, key, kNow);
    REQUIRE_FALSE(check.ok());
    INFO("token: " << bad);
    CHECK(check.failure() == LinkFailure::malformed);
  }
}

TEST_CASE("making a token refuses a bad bundle id, a non-positive expiry and a short secret") {
  const Secret key = key_a();
  CHECK(make_link_token("", kNow, key).error().code == Errc::invalid_input);
  CHECK(make_link_token("a/b", kNow, key).error().code == Errc::invalid_input);
  CHECK(make_link_token(std::string(65, 'x'), kNow, key).error().code == Errc::invalid_input);
  CHECK(make_link_token(std::string(64, 'x'), kNow, key).ok());
  CHECK(make_link_token("b", 0, key).error().code == Errc::invalid_input);
  CHECK(make_link_token("b", -5, key).error().code == Errc::invalid_input);
  CHECK(make_link_token("b", kNow, Secret(std::string(31, 'k'))).error().code ==
        Errc::invalid_input);
}

TEST_CASE("verifying with a secret shorter than 32 bytes gives no verdict on the token") {
  const std::string token = token_for("bundle-1", kNow + 60, key_a());
  auto check = verify_link_token(token, Secret("short"), kNow);
  REQUIRE_FALSE(check.ok());
  CHECK(check.failure() == LinkFailure::internal);
  CHECK(std::string(link_failure_name(check.failure())) == "internal");
}

TEST_CASE("the link secret file is created with mode 0600 and the same secret is reused") {
  TempDir dir;
  auto first = load_or_create_link_secret(dir.path());
  REQUIRE(first.ok());
  CHECK(first->size() == kLinkSecretBytes);
  CHECK(mode_of(dir / kLinkSecretFile) == 0600);
  auto second = load_or_create_link_secret(dir.path());
  REQUIRE(second.ok());
  CHECK(second->view() == first->view());
  // A token made with the first load verifies with the second.
  const std::string token = token_for("bundle-1", kNow + 60, first.value());
  CHECK(verify_link_token(token, second.value(), kNow).ok());
  // Only the secret is in the directory: no temporary file left behind.
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
}

TEST_CASE("two data directories get independent link secrets") {
  TempDir one, two;
  auto a = load_or_create_link_secret(one.path());
  auto b = load_or_create_link_secret(two.path());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->view() != b->view());
}

TEST_CASE("a link secret file readable by others is refused, with the fix in the message") {
  TempDir dir;
  REQUIRE(load_or_create_link_secret(dir.path()).ok());
  for (mode_t mode : {0640, 0604, 0644, 0700, 0660}) {
    REQUIRE(::chmod((dir / kLinkSecretFile).c_str(), mode) == 0);
    auto loaded = load_or_create_link_secret(dir.path());
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == Errc::conflict);
    CHECK(loaded.error().message.find("chmod 600") != std::string::npos);
  }
  REQUIRE(::chmod((dir / kLinkSecretFile).c_str(), 0400) == 0);
  CHECK(load_or_create_link_secret(dir.path()).ok());
}

TEST_CASE("a link secret file of the wrong length is refused as corrupt, not replaced") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / kLinkSecretFile, "too short", 0600, Overwrite::refuse).ok());
  auto loaded = load_or_create_link_secret(dir.path());
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.error().code == Errc::corrupt);
  CHECK(read_file(dir / kLinkSecretFile).value() == "too short");
}

TEST_CASE("a link secret that is a symbolic link is refused") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / "elsewhere", std::string(32, 'x'), 0600, Overwrite::refuse).ok());
  std::filesystem::create_symlink(dir / "elsewhere", dir / kLinkSecretFile);
  auto loaded = load_or_create_link_secret(dir.path());
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.error().code == Errc::conflict);
}

TEST_CASE("a missing data directory is an I/O error and nothing is created") {
  TempDir dir;
  auto loaded = load_or_create_link_secret(dir / "missing");
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.error().code == Errc::io);
  CHECK_FALSE(std::filesystem::exists(dir / "missing"));
}

TEST_CASE("a link secret file owned by another user is refused") {
  if (::geteuid() != 0) return;  // only root can hand a file to another user
  TempDir dir;
  REQUIRE(load_or_create_link_secret(dir.path()).ok());
  REQUIRE(::chown((dir / kLinkSecretFile).c_str(), 65534, 65534) == 0);
  auto loaded = load_or_create_link_secret(dir.path());
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.error().code == Errc::conflict);
  CHECK(loaded.error().message.find("another user") != std::string::npos);
}

TEST_CASE("processes racing to create the link secret all end up with the same one") {
  TempDir dir;
  constexpr int kThreads = 8;
  std::vector<std::string> secrets(kThreads);
  std::vector<int> ok(kThreads, 0);  // not vector<bool>: threads write neighbouring elements
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        auto loaded = load_or_create_link_secret(dir.path());
        if (loaded.ok()) {
          ok[static_cast<std::size_t>(i)] = 1;
          secrets[static_cast<std::size_t>(i)] = std::string(loaded->view());
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  for (int i = 0; i < kThreads; ++i) {
    CHECK(ok[static_cast<std::size_t>(i)] == 1);
    CHECK(secrets[static_cast<std::size_t>(i)] == secrets[0]);
  }
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
}
