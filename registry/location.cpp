#include "registry/location.h"

namespace onboard::registry {

// Placeholder until the parser lands: plain absolute paths only.
std::string Location::display() const { return target; }

Result<Location> parse_location(std::string_view text) {
  if (text.empty() || text.front() != '/') {
    return make_error(Errc::invalid_input, "the registry must be an absolute path");
  }
  return Location{Backend::sqlite, std::string(text)};
}

}  // namespace onboard::registry
