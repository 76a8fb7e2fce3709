#include "core/secret.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <utility>

namespace onboard {

Secret::Secret(Secret&& other) noexcept : data_(std::move(other.data_)) { other.wipe(); }

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    wipe();
    data_ = std::move(other.data_);
    other.wipe();
  }
  return *this;
}

Secret::~Secret() { wipe(); }

void Secret::append(std::string_view bytes) {
  if (data_.size() + bytes.size() > data_.capacity()) {
    std::string grown;
    grown.reserve(std::max(2 * data_.capacity(), data_.size() + bytes.size()));
    grown.append(data_);
    wipe();
    data_.swap(grown);
  }
  data_.append(bytes);
}

void Secret::trim_line_end() noexcept {
  std::size_t n = data_.size();
  while (n > 0 && (data_[n - 1] == '\n' || data_[n - 1] == '\r')) --n;
  if (n != data_.size()) {
    OPENSSL_cleanse(data_.data() + n, data_.size() - n);
    data_.resize(n);
  }
}

void Secret::wipe() noexcept {
  // Short strings live inside the object, long ones on the heap: cleanse the whole capacity.
  if (data_.capacity() > 0) OPENSSL_cleanse(data_.data(), data_.capacity());
  data_.clear();
}

}  // namespace onboard
