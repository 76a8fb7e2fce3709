// Patterns when the allocator's plain operator new aligns only to 8 bytes, which the standard
// allows for an object whose size does not need more (some allocators do so for small sizes). A
// pattern keeps its first-level tag in its node address's low four bits, so its node must come
// from an allocation that asks for 16 bytes explicitly. Its own test binary, because it replaces
// the global allocation functions, which every test of a binary would then run on.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "registry/acl.h"
#include "registry/pattern.h"

using namespace onboard;

namespace {

// Every plain allocation of this binary sits 8 bytes past a 16-byte boundary (glibc's malloc
// returns 16-aligned blocks; the 8 bytes before it are ours).
constexpr std::size_t kShift = 8;

void* shifted(std::size_t size) noexcept {
  auto* block = static_cast<unsigned char*>(std::malloc(size + kShift));
  return block == nullptr ? nullptr : block + kShift;
}
void unshifted_free(void* p) noexcept {
  if (p != nullptr) std::free(static_cast<unsigned char*>(p) - kShift);
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

// Every plain form is replaced, the nothrow and array ones too: a sanitizer's runtime supplies
// those it finds missing, and its new paired with this file's delete is an alloc-dealloc mismatch
// (aligned forms come in pairs from one side, so they stay the runtime's).
void* operator new(std::size_t size) {
  if (void* p = shifted(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return shifted(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return shifted(size); }
void operator delete(void* p) noexcept { unshifted_free(p); }
void operator delete(void* p, std::size_t) noexcept { unshifted_free(p); }
void operator delete[](void* p) noexcept { unshifted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { unshifted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { unshifted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { unshifted_free(p); }

TEST_CASE("patterns keep their text and first-level tag when plain allocations are 8-aligned") {
  // The control: this binary's plain allocations are indeed not 16-aligned.
  std::vector<char*> blocks;
  for (std::size_t size : {1u, 24u, 51u, 100u}) blocks.push_back(new char[size]);
  for (char* block : blocks) CHECK_FALSE(aligned16(block));
  for (char* block : blocks) delete[] block;

  for (const char* text : {"w1/#", "telemetry/%d/+", "a/b", "+/x", "fleet/broadcast/#", ""}) {
    INFO(text);
    const acl::Pattern pattern(text);
    CHECK(pattern.node_address() % 16 == 0);
    CHECK(pattern.text() == text);
    acl::Pattern copy = pattern;
    CHECK(copy.text() == text);
    CHECK(copy.first_level_tag() == pattern.first_level_tag());
  }
  CHECK(acl::Pattern("w1/#").first_level_tag() == acl::Pattern::level_tag("w1"));
  CHECK(acl::Pattern("+/x").first_level_tag() == 0);

  // Decisions read the tag and the node together: an allowed topic and a denied one.
  const std::vector<acl::Rule> rules{
      {1, acl::Pattern("w1/#"), acl::kPublish, acl::Effect::allow, 0},
      {2, acl::Pattern("w2/#"), acl::kPublish, acl::Effect::allow, 0},
  };
  const std::span<const acl::Rule> set(rules);
  const acl::Substitutions subs{"dev1", "dev1", "dev1"};
  const auto allowed = acl::evaluate(std::span(&set, 1), acl::kPublish, "w2/a", subs);
  CHECK(allowed.decision == acl::Decision::allow);
  CHECK((allowed.rule != nullptr && allowed.rule->id == 2));
  CHECK(acl::evaluate(std::span(&set, 1), acl::kPublish, "w3/a", subs).decision ==
        acl::Decision::no_match);
}
