// A fresh directory for one test, removed with everything in it when the test ends.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>

namespace onboard::test {

class TempDir {
 public:
  TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::filesystem::path& child) const {
    return path_ / child;
  }

 private:
  std::filesystem::path path_;
};

// The permission bits of a file (0 when it cannot be read), and how many entries a directory has.
mode_t mode_of(const std::filesystem::path& path);
std::size_t files_in(const std::filesystem::path& dir);

}  // namespace onboard::test
