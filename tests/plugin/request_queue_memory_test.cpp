// The provisioning queue (plugin/provisioner.h, RequestQueue) when memory runs out: a request it
// cannot take leaves its claim's share as it was. Its own test binary, because it replaces the
// global allocation functions, which every test of a binary would then run on (and a thread
// sanitizer cannot follow them through uninstrumented libraries' threads).
#include <catch2/catch.hpp>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>

#include "plugin/provisioner.h"

using namespace onboard;
using namespace onboard::plugin;

namespace {

// While set, every allocation of this thread fails: what a broker out of memory meets. Set by
// FailingAllocations around one call only.
thread_local bool allocations_fail = false;

struct FailingAllocations {
  FailingAllocations() { allocations_fail = true; }
  ~FailingAllocations() { allocations_fail = false; }
  FailingAllocations(const FailingAllocations&) = delete;
  FailingAllocations& operator=(const FailingAllocations&) = delete;
};

ProvisionRequest enrolment(const std::string& claim, const std::string& id) {
  return ProvisionRequest{claim, id, "{}"};
}

}  // namespace

// The test binary's allocation functions: malloc's, unless allocations_fail. Every plain form is
// replaced, the nothrow and array ones too: a sanitizer's runtime supplies those it finds missing,
// and its new paired with this file's delete is an alloc-dealloc mismatch (aligned forms come in
// pairs from one side, so they may stay the runtime's).
void* operator new(std::size_t size) {
  if (!allocations_fail) {
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return allocations_fail ? nullptr : std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept {
  return ::operator new(size, tag);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

TEST_CASE("a request the queue cannot take for want of memory costs its claim no share") {
  RequestQueue queue(100, 5);
  auto x0 = enrolment("x", "x-0");
  REQUIRE(queue.push(x0) == RequestQueue::Admission::queued);
  // With every allocation failing, a push that needs none (room in the queue's current block)
  // still queues, and one that needs one throws: either way the claim's count is what waits.
  std::size_t queued = 1, thrown = 0;
  for (int i = 1; i <= 8; ++i) {
    const std::string id = "x-" + std::to_string(i);
    auto request = enrolment("x", id);
    std::optional<RequestQueue::Admission> admission;
    {
      FailingAllocations failing;
      try {
        admission = queue.push(request);
      } catch (const std::bad_alloc&) {
      }
    }
    INFO(id);
    if (!admission) {
      ++thrown;
      CHECK(request.client_id == id);  // left as it was, for its rejection
    } else {
      REQUIRE(*admission == RequestQueue::Admission::queued);
      ++queued;
    }
    CHECK(queue.size() == queued);
    CHECK(queue.waiting("x") == queued);
  }
  CHECK(thrown > 0);  // the failures were met
  // A claim with nothing waiting: its entry cannot be made, and none is left behind.
  auto y1 = enrolment("y", "y-1");
  {
    FailingAllocations failing;
    CHECK_THROWS_AS(queue.push(y1), std::bad_alloc);
  }
  CHECK(queue.waiting("y") == 0);
  CHECK(queue.size() == queued);

  // Drained, the claim has its whole share again, and claim y its own.
  std::size_t popped = 0;
  while (queue.pop()) ++popped;
  CHECK(popped == queued);
  CHECK(queue.waiting("x") == 0);
  for (int i = 0; i < 5; ++i) {
    auto again = enrolment("x", "x-again-" + std::to_string(i));
    CHECK(queue.push(again) == RequestQueue::Admission::queued);
  }
  auto over = enrolment("x", "x-over");
  CHECK(queue.push(over) == RequestQueue::Admission::claim_share_full);
  CHECK(queue.push(y1) == RequestQueue::Admission::queued);
  CHECK(queue.waiting("y") == 1);
}
