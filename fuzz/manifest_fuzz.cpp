// bundle/manifest.h: parse_manifest reads manifest.json from an archive a recipient was sent.
// Invariant: a manifest that parses is written back by manifest_to_json and parses to the same.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "bundle/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = onboard::bundle::parse_manifest(text);
  if (!parsed) return 0;
  const std::string again = onboard::bundle::manifest_to_json(*parsed);
  auto reparsed = onboard::bundle::parse_manifest(again);
  if (!reparsed) std::abort();  // the writer wrote what the reader refuses
  const auto& a = *parsed;
  const auto& b = *reparsed;
  if (a.created_at != b.created_at || a.devices.size() != b.devices.size() ||
      a.files.size() != b.files.size()) {
    std::abort();
  }
  for (std::size_t i = 0; i < a.devices.size(); ++i) {
    if (a.devices[i].id != b.devices[i].id ||
        a.devices[i].certificate_sha256 != b.devices[i].certificate_sha256) {
      std::abort();
    }
  }
  for (std::size_t i = 0; i < a.files.size(); ++i) {
    if (a.files[i].name != b.files[i].name || a.files[i].size != b.files[i].size ||
        a.files[i].sha256 != b.files[i].sha256) {
      std::abort();
    }
  }
  return 0;
}
