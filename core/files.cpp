#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace onboard {
namespace {

Error io_error(std::string_view what, const std::filesystem::path& path, int err) {
  return make_error(Errc::io, std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

// Closes a file descriptor and unlinks its temporary path unless released.
class TempFile {
 public:
  TempFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  int close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }
  void keep() { path_.clear(); }

 private:
  int fd_;
  std::string path_;
};

Status write_all(int fd, std::string_view data, const std::filesystem::path& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return ok_status();
}

}  // namespace

// Renames `from` to `to` (refusing an existing `to` without a race when asked) and makes the
// rename durable: it is on disk only once the directory entry is.
Status rename_into_place(const std::filesystem::path& from, const std::filesystem::path& to,
                         Overwrite overwrite) {
  if (overwrite == Overwrite::refuse) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) {
        return make_error(Errc::conflict,
                          to.string() + " exists already; refusing to overwrite it");
      }
      return io_error("cannot create", to, errno);
    }
  } else if (::rename(from.c_str(), to.c_str()) != 0) {
    return io_error("cannot replace", to, errno);
  }
  std::filesystem::path dir = to.parent_path();
  if (dir.empty()) dir = ".";
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return ok_status();
}

Status write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode,
                         Overwrite overwrite) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  if (overwrite == Overwrite::refuse && ::access(path.c_str(), F_OK) == 0) {
    return make_error(Errc::conflict, path.string() + " exists already; refusing to overwrite it");
  }
  std::string temp_name = ".";  // appended, not "." + ...: GCC 12 warns falsely (-Wrestrict) there
  temp_name += path.filename().string();
  temp_name += ".XXXXXX";
  std::string pattern = (dir / temp_name).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  int fd = ::mkostemp(name.data(), O_CLOEXEC);  // created 0600 whatever the umask
  if (fd < 0) return io_error("cannot create a file in", dir, errno);
  TempFile temp(fd, name.data());

  if (::fchmod(fd, mode) != 0) return io_error("cannot set the mode of", path, errno);
  ONBOARD_CHECK(write_all(fd, data, path));
  if (::fsync(fd) != 0) return io_error("cannot flush", path, errno);
  if (temp.close() != 0) return io_error("cannot close", path, errno);

  ONBOARD_CHECK(rename_into_place(temp.path(), path, overwrite));
  temp.keep();
  return ok_status();
}

Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open", path, errno);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return io_error("cannot read", path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return make_error(Errc::invalid_input,
                        path.string() + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  ::close(fd);
  return out;
}

Result<Secret> read_fd_secret(int fd, const std::filesystem::path& path, std::size_t max_bytes) {
  Secret out;
  std::array<char, 4096> buf;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      OPENSSL_cleanse(buf.data(), buf.size());
      return io_error("cannot read", path, err);
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {
      OPENSSL_cleanse(buf.data(), buf.size());
      return make_error(Errc::invalid_input,
                        path.string() + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(std::string_view(buf.data(), static_cast<std::size_t>(n)));
  }
  OPENSSL_cleanse(buf.data(), buf.size());
  return out;
}

Result<Secret> read_file_secret(const std::filesystem::path& path, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open", path, errno);
  auto secret = read_fd_secret(fd, path, max_bytes);
  ::close(fd);
  return secret;
}

Result<Secret> read_secret_file(const std::filesystem::path& path) {
  ONBOARD_TRY(Secret secret, read_file_secret(path, 4096));
  secret.trim_line_end();
  if (secret.empty())
    return make_error(Errc::invalid_input, "passphrase file " + path.string() + " is empty");
  return secret;
}

Result<Secret> read_secret_env(const std::string& variable) {
  const char* value = std::getenv(variable.c_str());
  if (value == nullptr || *value == '\0') {
    return make_error(Errc::invalid_input,
                      "environment variable " + variable + " is not set or empty");
  }
  return Secret(value);
}

Status publish_file(const std::filesystem::path& written, const std::filesystem::path& target,
                    mode_t mode) {
  struct Remove {
    const std::filesystem::path& path;
    bool keep = false;
    ~Remove() {
      if (!keep) ::unlink(path.c_str());
    }
  } remove{written};
  int fd = ::open(written.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open", written, errno);
  const bool flushed = ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!flushed) return io_error("cannot flush", written, err);
  ONBOARD_CHECK(rename_into_place(written, target, Overwrite::refuse));
  remove.keep = true;
  return ok_status();
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace onboard
