// File writes that other programs read: whole or not at all, with the mode chosen up front.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/secret.h"

namespace onboard {

enum class Overwrite { refuse, replace };

// Writes `data` to `path` atomically: a temporary file in the same directory (created 0600, then
// set to `mode`), fsync, rename, fsync of the directory. With Overwrite::refuse an existing file is
// an Errc::conflict and is left untouched (no race: the rename itself refuses). On any failure the
// temporary file is removed and `path` is as it was.
Status write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode,
                         Overwrite overwrite);

// Reads a whole file, refusing anything larger than `max_bytes`.
Result<std::string> read_file(const std::filesystem::path& path,
                              std::size_t max_bytes = 16 * 1024 * 1024);

// The one way to read secret bytes (a key, a passphrase, an archive that holds keys): straight
// into a Secret, through a read buffer that is wiped, so no copy is left in freed memory.
// Refuses more than `max_bytes` (Errc::invalid_input). `path` names the descriptor in errors.
Result<Secret> read_fd_secret(int fd, const std::filesystem::path& path, std::size_t max_bytes);
Result<Secret> read_file_secret(const std::filesystem::path& path,
                                std::size_t max_bytes = 16 * 1024 * 1024);

// Reads a secret (a passphrase) from a file: one line, trailing newline removed, never empty.
Result<Secret> read_secret_file(const std::filesystem::path& path);

// Reads a secret from an environment variable, which must be set and non-empty.
Result<Secret> read_secret_env(const std::string& variable);

// Puts a file someone else wrote (`written`, in the same directory as `target`) in place as
// write_file_atomic does: mode set, fsync, rename refusing an existing `target` (Errc::conflict),
// fsync of the directory. `written` is removed on failure.
Status publish_file(const std::filesystem::path& written, const std::filesystem::path& target,
                    mode_t mode);

// Owns a file descriptor and closes it on every path; -1 owns nothing.
class UniqueFd {
 public:
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

}  // namespace onboard
