// plugin/broker_config.h: at init the plugin re-reads the broker's own configuration files
// (find_identity_setting) and its command line (config_files_from_cmdline). The input is both:
// given to config_files_from_cmdline as a NUL-separated command line, and to find_identity_setting
// as a configuration file (an in-memory memfd named through /proc/self/fd). Inputs that name
// include_dir are skipped: that line makes the scanner read a directory of the machine, which would
// make the target depend on the machine's files. Invariants: the file is read (a regular file under
// 1 MiB), and a setting found is one of the two and names that file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "plugin/broker_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto files = plugin::config_files_from_cmdline(text);
  if (files.size() > text.size() / 2) std::abort();  // each needs a "-c" and a NUL at least
  if (size > 1024 * 1024 || text.find("include_dir") != std::string_view::npos) return 0;

  static const int fd = ::memfd_create("broker_config_fuzz", 0);
  if (fd < 0) std::abort();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    std::abort();
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto found = plugin::find_identity_setting({path});
  if (!found) std::abort();  // a regular file under 1 MiB can always be read
  if (*found) {
    if ((*found)->file != path) std::abort();
    if ((*found)->setting != "use_identity_as_username" &&
        (*found)->setting != "use_subject_as_username") {
      std::abort();
    }
  }
  return 0;
}
