// bundle/zip.h: read_encrypted_zip opens an archive that may have been tampered with on its way.
// The input is handed to it as a file (an in-memory memfd named through /proc/self/fd), read under
// the fixed password the seeds were written with. Invariants: what it returns has at least one
// entry, every name passes entry_name_problem, and names are unique.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "bundle/zip.h"
#include "fuzz/fuzz_secrets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard;
  static const Secret password{std::string_view(fuzz::kZipPassword)};
  static const int fd = ::memfd_create("zip_fuzz", 0);
  if (fd < 0) std::abort();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    std::abort();
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  // Small limits, so a hostile archive is stopped where the real reader would stop it, and the
  // fuzzer spends its time on parsing rather than on inflating.
  bundle::ReadLimits limits;
  limits.max_entries = 64;
  limits.max_total_bytes = 1 << 20;
  auto files = bundle::read_encrypted_zip(path, password, limits);
  if (!files) return 0;
  if (files->empty() || files->size() > limits.max_entries) std::abort();
  std::set<std::string> names;
  std::uint64_t total = 0;
  for (const auto& file : *files) {
    if (bundle::entry_name_problem(file.name)) std::abort();
    if (!names.insert(file.name).second) std::abort();
    total += file.content.size();
  }
  if (total > limits.max_total_bytes) std::abort();
  return 0;
}
