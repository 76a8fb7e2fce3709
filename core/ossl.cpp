#include "core/ossl.h"

#include <openssl/err.h>

#include <climits>

namespace onboard::ossl {

Error error(Errc code, std::string_view what) {
  std::string message(what);
  std::string reasons;
  // The earliest error is usually the root cause; keep every reason, oldest first.
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    const char* reason = ERR_reason_error_string(e);
    if (!reasons.empty()) reasons += "; ";
    reasons += reason != nullptr ? reason : buf;
  }
  if (!reasons.empty()) message += ": " + reasons;
  return Error{code, std::move(message)};
}

void clear_errors() noexcept { ERR_clear_error(); }

Ptr<BIO> mem_reader(std::string_view data) {
  if (data.size() > static_cast<std::size_t>(INT_MAX)) return nullptr;
  return Ptr<BIO>(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string mem_contents(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  if (size <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(size));
}

}  // namespace onboard::ossl
