#include "core/error.h"

namespace onboard {

const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_input:
      return "invalid_input";
    case Errc::not_found:
      return "not_found";
    case Errc::conflict:
      return "conflict";
    case Errc::io:
      return "io";
    case Errc::bad_passphrase:
      return "bad_passphrase";
    case Errc::crypto:
      return "crypto";
    case Errc::corrupt:
      return "corrupt";
    case Errc::internal:
      return "internal";
  }
  return "internal";
}

}  // namespace onboard
