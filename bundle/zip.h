// AES-256 encrypted zip archives: what a manufacturer receives.
//
// Every entry is encrypted with WinZip AES-256 (AE-2, which 7-Zip and WinZip open). Traditional
// PKWARE "ZipCrypto" is never written and never accepted on read: it is broken, and libzip 1.7.3
// also writes it wrongly when an entry has an mtime (see the project's library notes). Info-ZIP
// `unzip` 6.00 lists these archives but cannot extract AES entries; tell users to use 7-Zip.
//
// WinZip AES derives its key with PBKDF2-HMAC-SHA1 and only 1000 iterations, and stores a 16-bit
// password check value, so an archive can be attacked offline cheaply per guess: the password
// must carry its own strength (see bundle/password.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "core/secret.h"
#include "core/time.h"

namespace onboard::bundle {

// One file inside a bundle. The content is a Secret whatever it is: a private key must be wiped,
// and wiping a certificate costs nothing.
struct BundleFile {
  std::string name;  // relative path inside the archive, '/' separated (see entry_name_problem)
  Secret content;
  mode_t mode = 0644;  // permission bits only: 0600 for keys, 0644 otherwise
  UnixTime mtime = 0;  // stored as DOS local time: 2-second resolution, the writer's time zone
};

// Why `name` cannot be an entry name, or nullopt. Allowed: 1 to 255 characters of
// [A-Za-z0-9._-] in '/'-separated components; no empty, "." or ".." component, no leading '/',
// no trailing '/'. Extractors write these names to disk, so nothing that could escape the
// extraction directory or need an encoding guess is accepted.
std::optional<std::string> entry_name_problem(std::string_view name);

// Writes `files` to `path` as an AES-256 zip under `password`, atomically: the archive is built
// in memory, written to a temporary file in the target directory (mode 0600), fsync'd and renamed.
// The archive keeps each entry's unix mode and mtime. With Overwrite::refuse an existing `path`
// is an Errc::conflict; on any failure nothing is left behind and `path` is as it was.
// Errors: invalid_input (no files, a bad or duplicate name, a mode outside 0777, an empty or
// unusable password), conflict, io, internal (libzip failed).
// The contents are handed to libzip by reference (zip_source_buffer, no copy is made here);
// libzip's own working buffers for compression and encryption are outside this code's control.
// libzip keeps a copy of the password per entry and clears it when the entry is freed.
Status write_encrypted_zip(const std::filesystem::path& path, const std::vector<BundleFile>& files,
                           const Secret& password, Overwrite overwrite);

// Limits for read_encrypted_zip, so that a hostile archive cannot exhaust memory.
struct ReadLimits {
  std::size_t max_entries = 10000;
  std::uint64_t max_total_bytes = 256ull * 1024 * 1024;
};

// Reads an archive written by write_encrypted_zip, for tests and verification. Every entry must be
// AES-256 encrypted (anything else, including ZipCrypto and unencrypted entries, is
// Errc::corrupt). A wrong password is Errc::bad_passphrase. AES's stored check value is only 16
// bits, so about one wrong password in 65536 passes it; the entry's HMAC then fails and that is
// also reported as Errc::bad_passphrase ("wrong password, or the archive was altered"), since the
// two cannot be told apart. Other damage is Errc::corrupt; an unreadable file is Errc::io.
Result<std::vector<BundleFile>> read_encrypted_zip(const std::filesystem::path& path,
                                                   const Secret& password,
                                                   const ReadLimits& limits = {});

}  // namespace onboard::bundle
