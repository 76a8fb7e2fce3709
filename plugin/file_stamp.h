// Identifies a file's content cheaply: device, inode, modification time and size. A file replaced
// by rename (how onboardctl writes the registry and the CRL) gets a new inode; one rewritten in
// place a new mtime or size.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>

namespace onboard::plugin {

struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  std::int64_t mtime_ns = 0;
  off_t size = 0;
  bool operator==(const FileStamp&) const = default;
  bool same_file(const FileStamp& other) const noexcept {
    return dev == other.dev && ino == other.ino;
  }
};

inline std::optional<FileStamp> file_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileStamp{
      st.st_dev, st.st_ino,
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
      st.st_size};
}

}  // namespace onboard::plugin
