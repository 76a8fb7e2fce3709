// What the fuzz targets that work on a registry and a CA on disk share: a loud failure (a broken
// invariant aborts, which libFuzzer and the corpus replay report) and a scratch directory made
// once and removed when the process exits normally.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace onboard::fuzz {

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz target: %s\n", what.c_str());
  std::abort();
}

// The value of a result the fixture cannot do without.
template <class T>
T need(Result<T> result, const char* what) {
  if (!result.ok()) fail(std::string(what) + ": " + result.error().message);
  return std::move(result).value();
}

// A directory under the system's temporary one (TMPDIR), made at the first call and removed at
// exit. Its name is kept on the heap, out of reach of static destructors, which may run before
// the exit handler that removes it.
inline const std::filesystem::path& scratch_directory() {
  static const std::filesystem::path* made = [] {
    std::string text = (std::filesystem::temp_directory_path() / "onboard-fuzz-XXXXXX").string();
    if (::mkdtemp(text.data()) == nullptr) fail("cannot make a temporary directory");
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*made, ec);
    });
    return new std::filesystem::path(text);
  }();
  return *made;
}

}  // namespace onboard::fuzz
