// A move-only byte buffer for passphrases, passwords and key material, wiped when it dies.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace onboard {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string_view bytes) : data_(bytes) {}
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  std::string_view view() const noexcept { return data_; }
  const char* c_str() const noexcept { return data_.c_str(); }
  std::size_t size() const noexcept { return data_.size(); }
  bool empty() const noexcept { return data_.empty(); }
  // Grows without leaving a copy behind: a full buffer is cleansed before it is given back.
  void append(std::string_view bytes);
  // Removes trailing CR/LF, as left by `echo pass > file`.
  void trim_line_end() noexcept;
  void wipe() noexcept;

 private:
  std::string data_;
};

}  // namespace onboard
