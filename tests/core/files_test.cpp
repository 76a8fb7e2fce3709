#include "core/files.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/support/temp_dir.h"

using namespace onboard;
using onboard::test::TempDir;

using onboard::test::files_in;
using onboard::test::mode_of;

namespace {}  // namespace

TEST_CASE("an atomic write creates the file with the requested mode and content") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / "key.pem", "secret", 0600, Overwrite::refuse).ok());
  CHECK(mode_of(dir / "key.pem") == 0600);
  CHECK(read_file(dir / "key.pem").value() == "secret");
  REQUIRE(write_file_atomic(dir / "cert.pem", "public", 0644, Overwrite::refuse).ok());
  CHECK(mode_of(dir / "cert.pem") == 0644);
  CHECK(files_in(dir.path()) == 2);  // no temporary file left
}

TEST_CASE("an atomic write refuses to overwrite unless told to, and leaves the old content") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / "f", "one", 0644, Overwrite::refuse).ok());
  auto again = write_file_atomic(dir / "f", "two", 0644, Overwrite::refuse);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == Errc::conflict);
  CHECK(read_file(dir / "f").value() == "one");
  REQUIRE(write_file_atomic(dir / "f", "two", 0644, Overwrite::replace).ok());
  CHECK(read_file(dir / "f").value() == "two");
  CHECK(files_in(dir.path()) == 1);
}

TEST_CASE("an atomic write into a directory that cannot be written fails with an I/O error") {
  if (::geteuid() == 0) {
    // root ignores directory permissions; a missing directory shows the same failure path.
    auto missing = write_file_atomic("/nonexistent-dir/f", "x", 0644, Overwrite::refuse);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::io);
    return;
  }
  TempDir dir;
  std::filesystem::create_directory(dir / "ro");
  std::filesystem::permissions(
      dir / "ro", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  auto result = write_file_atomic(dir / "ro" / "f", "x", 0644, Overwrite::refuse);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == Errc::io);
}

TEST_CASE("a secret file's trailing newline is dropped and an empty one is refused") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / "pass", "hunter2\r\n", 0600, Overwrite::refuse).ok());
  CHECK(read_secret_file(dir / "pass").value().view() == "hunter2");
  REQUIRE(write_file_atomic(dir / "empty", "\n", 0600, Overwrite::refuse).ok());
  auto empty = read_secret_file(dir / "empty");
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().message.find("is empty") != std::string::npos);
  auto missing = read_secret_file(dir / "missing");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::io);
}

TEST_CASE("a secret from an unset environment variable is refused") {
  ::unsetenv("ONBOARD_TEST_UNSET");
  CHECK_FALSE(read_secret_env("ONBOARD_TEST_UNSET").ok());
  ::setenv("ONBOARD_TEST_SET", "s3cret", 1);
  CHECK(read_secret_env("ONBOARD_TEST_SET").value().view() == "s3cret");
}

TEST_CASE("reading a file larger than the limit is refused") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / "big", std::string(100, 'x'), 0644, Overwrite::refuse).ok());
  CHECK_FALSE(read_file(dir / "big", 99).ok());
  CHECK(read_file(dir / "big", 100).ok());
}

TEST_CASE("a file read as a secret arrives whole however long and is refused over the limit") {
  TempDir dir;
  // Longer than the read buffer and than any short-string buffer, so the Secret grows several
  // times on the way.
  std::string content;
  for (int i = 0; content.size() < 20000; ++i) content += std::to_string(i) + ",";
  REQUIRE(write_file_atomic(dir / "key.pem", content, 0600, Overwrite::refuse).ok());
  auto whole = read_file_secret(dir / "key.pem");
  REQUIRE(whole.ok());
  CHECK(whole->view() == content);
  CHECK(read_file_secret(dir / "key.pem", content.size()).ok());
  auto over = read_file_secret(dir / "key.pem", content.size() - 1);
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().code == Errc::invalid_input);
  CHECK(over.error().message.find("larger than") != std::string::npos);
  auto missing = read_file_secret(dir / "missing");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::io);
}
