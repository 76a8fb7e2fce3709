#include "bundle/zip.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "core/files.h"
#include "tests/bundle/bundle_fixtures.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::bundle;
using namespace onboard::ca;
using onboard::test::must;
using onboard::test::run;
using onboard::test::TempDir;

namespace {

const char* const kPassword = "K7QM-2XRA-TT4B-9ZQP-LMNB-VC3D-QWER";
const char* const kSevenZip = "/usr/bin/7z";

std::size_t entries_in(const std::filesystem::path& dir) {
  return static_cast<std::size_t>(std::distance(std::filesystem::recursive_directory_iterator(dir),
                                                std::filesystem::recursive_directory_iterator()));
}

BundleFile file(std::string name, std::string content, mode_t mode = 0644) {
  BundleFile f;
  f.name = std::move(name);
  f.content = Secret(content);
  f.mode = mode;
  f.mtime = test::kBundleTime;
  return f;
}

std::vector<BundleFile> one_file() {
  std::vector<BundleFile> files;
  files.push_back(file("a.txt", "hello"));
  return files;
}

// Writes the standard device bundle to dir/bundle.zip.
std::filesystem::path write_bundle(const TempDir& dir, const test::DeviceBundle& b) {
  const auto path = dir / "bundle.zip";
  test::must(write_encrypted_zip(path, b.files, Secret(kPassword), Overwrite::refuse));
  return path;
}

}  // namespace

TEST_CASE("a bundle reads back with the same names, bytes, modes and times") {
  TempDir dir;
  const auto b = test::make_device_bundle();
  const auto path = write_bundle(dir, b);
  auto files = must(read_encrypted_zip(path, Secret(kPassword)));
  REQUIRE(files.size() == b.files.size());
  for (std::size_t i = 0; i < files.size(); ++i) {
    INFO(b.files[i].name);
    CHECK(files[i].name == b.files[i].name);
    CHECK(files[i].content.view() == b.files[i].content.view());
    CHECK(files[i].mode == b.files[i].mode);
    CHECK(files[i].mtime == test::kBundleTime);
  }
}

TEST_CASE("the archive file is created 0600 with nothing else left in its directory") {
  TempDir dir;
  const auto path = write_bundle(dir, test::make_device_bundle());
  CHECK(test::mode_of(path) == 0600);
  CHECK(entries_in(dir.path()) == 1);
}

TEST_CASE("the archive holds no plaintext: neither the key header nor the key's bytes") {
  TempDir dir;
  const auto b = test::make_device_bundle();
  const std::string raw = must(read_file(write_bundle(dir, b)));
  CHECK(raw.find("PRIVATE KEY") == std::string::npos);
  CHECK(raw.find("CERTIFICATE") == std::string::npos);
  CHECK(raw.find(b.fingerprint) == std::string::npos);  // the manifest is encrypted too
  // The names are not secret and are visible, as in every zip.
  CHECK(raw.find("sensor-1/key.pem") != std::string::npos);
}

TEST_CASE("7-Zip extracts a bundle with the right password: same bytes, modes 0600 and 0644") {
  TempDir dir;
  const auto b = test::make_device_bundle();
  const auto path = write_bundle(dir, b);
  const auto out = dir / "out";
  auto result = run(
      {kSevenZip, "x", std::string("-p") + kPassword, "-o" + out.string(), "-y", path.string()});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.out.find("Everything is Ok") != std::string::npos);
  for (const auto& f : b.files) {
    INFO(f.name);
    CHECK(must(read_file(out / f.name)) == f.content.view());
    CHECK(test::mode_of(out / f.name) == f.mode);
  }
  CHECK(test::mode_of(out / "sensor-1/key.pem") == 0600);
  CHECK(test::mode_of(out / "sensor-1/cert.pem") == 0644);
  struct stat st {};
  REQUIRE(::stat((out / "sensor-1/cert.pem").c_str(), &st) == 0);
  CHECK(st.st_mtime == test::kBundleTime);

  // The key extracted is the key of the certificate extracted.
  auto key = must(private_key_from_pem(must(read_file(out / "sensor-1/key.pem"))));
  auto cert = must(certificate_from_pem(must(read_file(out / "sensor-1/cert.pem"))));
  CHECK(X509_check_private_key(cert.get(), key.get()) == 1);
}

TEST_CASE("7-Zip refuses a wrong password with exit code 2 and extracts no content") {
  TempDir dir;
  const auto path = write_bundle(dir, test::make_device_bundle());
  const auto out = dir / "out";
  auto result = run({kSevenZip, "x", "-pK7QM-2XRA-TT4B-9ZQP-LMNB-VC3D-QWEX", "-o" + out.string(),
                     "-y", path.string()});
  INFO(result.out << result.err);
  CHECK(result.exit_code == 2);
  CHECK(result.err.find("Wrong password") != std::string::npos);
  // 7-Zip may leave empty placeholders behind; no byte of any file may reach the disk.
  std::uintmax_t bytes = 0;
  if (std::filesystem::exists(out)) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(out)) {
      if (entry.is_regular_file()) bytes += entry.file_size();
    }
  }
  CHECK(bytes == 0);
}

TEST_CASE("7-Zip lists every entry as AES-256 from a Unix host") {
  TempDir dir;
  const auto b = test::make_device_bundle();
  const auto path = write_bundle(dir, b);
  auto result = run({kSevenZip, "l", "-slt", std::string("-p") + kPassword, path.string()});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  std::size_t aes = 0, methods = 0;
  for (std::size_t pos = 0; (pos = result.out.find("\nMethod = ", pos)) != std::string::npos;
       ++pos) {
    ++methods;
    if (result.out.compare(pos + 10, 7, "AES-256") == 0) ++aes;
  }
  CHECK(methods == b.files.size());
  CHECK(aes == b.files.size());
  CHECK(result.out.find("ZipCrypto") == std::string::npos);
  CHECK(result.out.find("Host OS = Unix") != std::string::npos);
}

TEST_CASE("unzip -l lists the bundle's entries without a password") {
  TempDir dir;
  const auto b = test::make_device_bundle();
  const auto path = write_bundle(dir, b);
  auto result = run({"/usr/bin/unzip", "-l", path.string()});
  INFO(result.out << result.err);
  CHECK(result.exit_code == 0);
  for (const auto& f : b.files) CHECK(result.out.find(f.name) != std::string::npos);
}

TEST_CASE("our reader refuses a wrong password as a bad passphrase") {
  TempDir dir;
  const auto path = write_bundle(dir, test::make_device_bundle());
  // AES's check value is 16 bits: a wrong password passes it once in 65536 tries, and then the
  // HMAC fails, which is reported the same way.
  auto read = read_encrypted_zip(path, Secret("not-the-password-at-all"));
  REQUIRE_FALSE(read.ok());
  CHECK(read.error().code == Errc::bad_passphrase);
  CHECK(read.error().message.find("wrong password") != std::string::npos);
}

TEST_CASE("an archive with altered ciphertext is never read back as valid") {
  TempDir dir;
  std::vector<BundleFile> files;
  // Incompressible content, so the encrypted data is long enough to hit.
  std::string noise(4000, '\0');
  std::uint32_t state = 12345;
  for (char& c : noise) {
    state = state * 1103515245u + 12345u;
    c = static_cast<char>(state >> 24);
  }
  files.push_back(file("noise.bin", noise, 0600));
  const auto path = dir / "b.zip";
  test::must(write_encrypted_zip(path, files, Secret(kPassword), Overwrite::refuse));
  std::string raw = must(read_file(path));
  // The local header (30 bytes + name + AES extra field 11 + salt 16 + check 2) comes first; a
  // byte at offset 100 is inside the encrypted data.
  REQUIRE(raw.size() > 200);
  raw[100] = static_cast<char>(raw[100] ^ 0x01);
  test::must(write_file_atomic(path, raw, 0600, Overwrite::replace));
  auto read = read_encrypted_zip(path, Secret(kPassword));
  REQUIRE_FALSE(read.ok());
  CHECK((read.error().code == Errc::bad_passphrase || read.error().code == Errc::corrupt));
}

TEST_CASE("no single altered byte anywhere in an archive yields altered content without an error") {
  // Compressed, stored and empty entries. WinZip AES authenticates each entry's data (HMAC), not
  // the zip metadata: a name, mode or time may change without an error, which is why the
  // manifest lists names and hashes. Content, though, must come back intact or not at all.
  TempDir dir;
  std::vector<BundleFile> files;
  files.push_back(file("key.pem", "-----BEGIN PRIVATE KEY-----\n" + std::string(300, 'k'), 0600));
  files.push_back(file("empty", ""));
  files.push_back(file("n", "xyz"));
  const auto path = dir / "b.zip";
  test::must(write_encrypted_zip(path, files, Secret(kPassword), Overwrite::refuse));
  const std::string original = must(read_file(path));
  int refused = 0, accepted = 0;
  for (std::size_t offset = 0; offset < original.size(); ++offset) {
    std::string altered = original;
    altered[offset] = static_cast<char>(altered[offset] ^ 0x01);
    test::must(write_file_atomic(path, altered, 0600, Overwrite::replace));
    auto read = read_encrypted_zip(path, Secret(kPassword));
    if (!read.ok()) {
      ++refused;
      continue;
    }
    ++accepted;
    INFO("offset " << offset);
    REQUIRE(read->size() == files.size());
    for (std::size_t i = 0; i < files.size(); ++i) {
      CHECK(read.value()[i].content.view() == files[i].content.view());
    }
  }
  CHECK(refused > 0);
  CHECK(accepted + refused == static_cast<int>(original.size()));
}

namespace {

std::uint32_t le(const std::string& s, std::size_t at, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

}  // namespace

TEST_CASE("every byte of every entry's encrypted data, salt and HMAC is authenticated") {
  // libzip 1.7.3 skips the HMAC of a deflated entry unless the reader drains the raw data first
  // (nih-at/libzip#478): a flipped HMAC byte then read back "fine". Walk the local headers and
  // flip each byte of each entry's AES payload (salt, check value, ciphertext, HMAC).
  TempDir dir;
  std::vector<BundleFile> files;
  files.push_back(
      file("deflated.pem", "-----BEGIN PRIVATE KEY-----\n" + std::string(300, 'k'), 0600));
  files.push_back(file("empty", ""));
  files.push_back(file("stored", "xyz"));
  const auto path = dir / "b.zip";
  test::must(write_encrypted_zip(path, files, Secret(kPassword), Overwrite::refuse));
  const std::string original = must(read_file(path));
  std::size_t header = 0, entries = 0, flips = 0;
  while (header + 30 <= original.size() && original.compare(header, 4, "PK\x03\x04") == 0) {
    const std::size_t data =
        header + 30 + le(original, header + 26, 2) + le(original, header + 28, 2);
    const std::size_t size = le(original, header + 18, 4);
    REQUIRE(size >= 16 + 2 + 10);  // AES-256 salt, check value, HMAC
    for (std::size_t offset = data; offset < data + size; ++offset) {
      std::string altered = original;
      altered[offset] = static_cast<char>(altered[offset] ^ 0x80);
      test::must(write_file_atomic(path, altered, 0600, Overwrite::replace));
      auto read = read_encrypted_zip(path, Secret(kPassword));
      INFO("entry " << entries << ", offset " << offset - data << " of " << size);
      CHECK_FALSE(read.ok());
      if (!read.ok()) CHECK(read.error().code == Errc::bad_passphrase);
      ++flips;
    }
    header = data + size;
    ++entries;
  }
  CHECK(entries == files.size());
  CHECK(flips > 3 * 28);
}

TEST_CASE("our reader refuses unencrypted and ZipCrypto archives made by 7-Zip") {
  TempDir dir;
  REQUIRE(write_file_atomic(dir / "a.txt", "hello", 0644, Overwrite::refuse).ok());
  auto plain =
      run({kSevenZip, "a", "-tzip", (dir / "plain.zip").string(), (dir / "a.txt").string()});
  REQUIRE(plain.exit_code == 0);
  auto zipcrypto = run({kSevenZip, "a", "-tzip", std::string("-p") + kPassword, "-mem=ZipCrypto",
                        (dir / "zc.zip").string(), (dir / "a.txt").string()});
  REQUIRE(zipcrypto.exit_code == 0);
  for (const char* name : {"plain.zip", "zc.zip"}) {
    INFO(name);
    auto read = read_encrypted_zip(dir / name, Secret(kPassword));
    REQUIRE_FALSE(read.ok());
    CHECK(read.error().code == Errc::corrupt);
    CHECK(read.error().message.find("not encrypted with AES-256") != std::string::npos);
  }
}

TEST_CASE("our reader reports a missing file as I/O and a file that is not a zip as corrupt") {
  TempDir dir;
  auto missing = read_encrypted_zip(dir / "missing.zip", Secret(kPassword));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::io);
  REQUIRE(write_file_atomic(dir / "junk.zip", std::string(100, 'j'), 0600, Overwrite::refuse).ok());
  auto junk = read_encrypted_zip(dir / "junk.zip", Secret(kPassword));
  REQUIRE_FALSE(junk.ok());
  CHECK(junk.error().code == Errc::corrupt);
}

TEST_CASE("our reader stops at its size and entry limits") {
  TempDir dir;
  const auto path = write_bundle(dir, test::make_device_bundle());
  ReadLimits small_bytes;
  small_bytes.max_total_bytes = 100;
  auto too_big = read_encrypted_zip(path, Secret(kPassword), small_bytes);
  REQUIRE_FALSE(too_big.ok());
  CHECK(too_big.error().code == Errc::corrupt);
  ReadLimits few_entries;
  few_entries.max_entries = 2;
  auto too_many = read_encrypted_zip(path, Secret(kPassword), few_entries);
  REQUIRE_FALSE(too_many.ok());
  CHECK(too_many.error().code == Errc::corrupt);
}

TEST_CASE("an existing output is refused and left untouched unless overwriting is asked for") {
  TempDir dir;
  const auto path = dir / "bundle.zip";
  REQUIRE(write_file_atomic(path, "old", 0644, Overwrite::refuse).ok());
  auto refused = write_encrypted_zip(path, one_file(), Secret(kPassword), Overwrite::refuse);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == Errc::conflict);
  CHECK(must(read_file(path)) == "old");
  CHECK(entries_in(dir.path()) == 1);

  test::must(write_encrypted_zip(path, one_file(), Secret(kPassword), Overwrite::replace));
  CHECK(test::mode_of(path) == 0600);
  auto files = must(read_encrypted_zip(path, Secret(kPassword)));
  REQUIRE(files.size() == 1);
  CHECK(files[0].content.view() == "hello");
  CHECK(entries_in(dir.path()) == 1);
}

TEST_CASE("a dangling symbolic link at the output path is refused, not followed") {
  TempDir dir;
  std::filesystem::create_symlink(dir / "target.zip", dir / "bundle.zip");
  auto refused =
      write_encrypted_zip(dir / "bundle.zip", one_file(), Secret(kPassword), Overwrite::refuse);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == Errc::conflict);
  CHECK_FALSE(std::filesystem::exists(dir / "target.zip"));
}

TEST_CASE("an unwritable output directory is an I/O error and leaves no temporary file") {
  TempDir dir;
  if (::geteuid() == 0) {
    // root ignores directory permissions; a missing directory takes the same failure path.
    auto missing = write_encrypted_zip(dir / "missing" / "b.zip", one_file(), Secret(kPassword),
                                       Overwrite::refuse);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::io);
    CHECK(entries_in(dir.path()) == 0);
    return;
  }
  std::filesystem::create_directory(dir / "ro");
  std::filesystem::permissions(
      dir / "ro", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  auto result =
      write_encrypted_zip(dir / "ro" / "b.zip", one_file(), Secret(kPassword), Overwrite::refuse);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == Errc::io);
  CHECK(entries_in(dir / "ro") == 0);
}

TEST_CASE("when the final rename fails, the temporary archive is removed") {
  // A directory at the output path: the temporary file is written, then rename() refuses.
  TempDir dir;
  std::filesystem::create_directories(dir / "bundle.zip" / "inside");
  auto result =
      write_encrypted_zip(dir / "bundle.zip", one_file(), Secret(kPassword), Overwrite::replace);
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().code == Errc::io);
  CHECK(entries_in(dir.path()) == 2);  // bundle.zip/ and bundle.zip/inside/, nothing else
}

TEST_CASE("entry names that could escape or confuse an extractor are refused") {
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "dir/", ".", "a b",
                          "a\\b", "caf\xc3\xa9", "x:y", "a\nb"}) {
    INFO(bad);
    CHECK(entry_name_problem(bad).has_value());
  }
  CHECK(entry_name_problem(std::string(256, 'a')).has_value());
  // The message never carries control characters from a hostile name into a log line.
  CHECK(entry_name_problem("a\nINFO forged\x1b[0m").value().find_first_of("\n\x1b") ==
        std::string::npos);
  for (const char* good : {"a", "ca.pem", "sensor-1/key.pem", "a/b/c_d.e-f", ".hidden"}) {
    INFO(good);
    CHECK_FALSE(entry_name_problem(good).has_value());
  }
  CHECK_FALSE(entry_name_problem(std::string(255, 'a')).has_value());
}

TEST_CASE("bad input is refused before anything is written") {
  TempDir dir;
  const auto path = dir / "b.zip";
  auto expect_invalid = [&](const std::vector<BundleFile>& files, const Secret& password) {
    auto result = write_encrypted_zip(path, files, password, Overwrite::refuse);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Errc::invalid_input);
    CHECK(entries_in(dir.path()) == 0);
  };
  SECTION("no files") { expect_invalid({}, Secret(kPassword)); }
  SECTION("an empty password") { expect_invalid(one_file(), Secret()); }
  SECTION("a password with a NUL") {
    expect_invalid(one_file(), Secret(std::string_view("abc\0def", 7)));
  }
  SECTION("a name that escapes") {
    std::vector<BundleFile> files;
    files.push_back(file("../evil", "x"));
    expect_invalid(files, Secret(kPassword));
  }
  SECTION("a duplicate name") {
    std::vector<BundleFile> files;
    files.push_back(file("a", "1"));
    files.push_back(file("a", "2"));
    expect_invalid(files, Secret(kPassword));
  }
  SECTION("a setuid mode") {
    std::vector<BundleFile> files;
    files.push_back(file("a", "1", 04755));
    expect_invalid(files, Secret(kPassword));
  }
  SECTION("an mtime before 1970") {
    std::vector<BundleFile> files;
    files.push_back(file("a", "1"));
    files[0].mtime = -1;
    expect_invalid(files, Secret(kPassword));
  }
}

TEST_CASE("an empty file survives the round trip") {
  TempDir dir;
  std::vector<BundleFile> files;
  files.push_back(file("empty", ""));
  files.push_back(file("x", "y"));
  test::must(write_encrypted_zip(dir / "b.zip", files, Secret(kPassword), Overwrite::refuse));
  auto back = must(read_encrypted_zip(dir / "b.zip", Secret(kPassword)));
  REQUIRE(back.size() == 2);
  CHECK(back[0].content.empty());
  CHECK(back[1].content.view() == "y");
}
