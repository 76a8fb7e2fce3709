// registry/snapshot_cache.h: the broker trusts a cache file only after decode_snapshot_cache has
// checked every byte of it. Nothing here touches the file system. The input is decoded twice:
//   - as a whole file (magic, version, body, checksum), which is almost always refused at the
//     checksum;
//   - as a body, wrapped in the current magic and a checksum that matches, so that the body parser
//     (counts, lengths, enums, masks, duplicates) is what gets fuzzed.
// Nothing may crash, and these must hold:
//   - a refusal is Errc::corrupt, never anything else;
//   - an accepted body encodes back to a file of exactly the same size (no byte of it was
//     ignored), which decodes again to the same change seq and device count.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/digest.h"
#include "registry/snapshot_cache.h"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

void check(std::string_view file) {
  using namespace onboard;
  auto decoded = registry::decode_snapshot_cache(file, "fuzz");
  if (!decoded) {
    require(decoded.error().code == Errc::corrupt);
    return;
  }
  const auto& snapshot = *decoded.value();
  auto encoded = registry::encode_snapshot_cache(snapshot);
  require(encoded.ok() && encoded.value().size() == file.size());
  auto again = registry::decode_snapshot_cache(encoded.value(), "fuzz");
  require(again.ok() && again.value()->change_seq() == snapshot.change_seq() &&
          again.value()->device_count() == snapshot.device_count());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check(input);
  std::string file(onboard::registry::kSnapshotCacheMagic);
  file.append(input);
  auto digest = onboard::sha256_hex(file);
  require(digest.ok());
  file += digest.value();
  check(file);
  return 0;
}
