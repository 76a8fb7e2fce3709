// The enrolment requests' hand-off (plugin/provisioner.h) with a fake signer: answers come back
// for the broker thread to take, a signer that throws or a full queue is a retryable rejection
// and a log line, and the workers survive both; each claim's share of the queue (RequestQueue).
#include "plugin/provisioner.h"

#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <thread>

using namespace onboard;
using namespace onboard::plugin;
using namespace std::chrono_literals;

namespace {

// Answers "accepted" with the payload echoed; throws for the client id "down"; blocks while
// `hold` is set.
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool hold = false;
};
class FakeSigner final : public SignerClient {
 public:
  explicit FakeSigner(Gate& gate) : gate_(gate) {}
  ProvisionAnswer send(const ProvisionRequest& request) override {
    {
      std::unique_lock lock(gate_.mutex);
      gate_.cv.wait(lock, [&] { return !gate_.hold; });
    }
    if (request.client_id == "down") throw std::runtime_error("connection refused");
    return ProvisionAnswer{request.client_id, "accepted", request.claim + ":" + request.payload,
                           ""};
  }

 private:
  Gate& gate_;
};

std::vector<ProvisionAnswer> wait_for(Provisioner& p, std::size_t count) {
  std::vector<ProvisionAnswer> all;
  for (int i = 0; i < 200 && all.size() < count; ++i) {
    if (p.pending()) {
      auto taken = p.take();
      all.insert(all.end(), taken.begin(), taken.end());
    } else {
      std::this_thread::sleep_for(10ms);
    }
  }
  return all;
}

}  // namespace

TEST_CASE("requests reach the signer off the caller's thread and their answers come back") {
  Gate gate;
  std::vector<std::string> logs;
  std::mutex log_mutex;
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 2, 10, 10,
                          [&](LogLevel, std::string line) {
                            std::lock_guard lock(log_mutex);
                            logs.push_back(std::move(line));
                          });
  CHECK_FALSE(provisioner.pending());
  provisioner.submit({"claim-a", "dev-1", "{}"});
  provisioner.submit({"claim-a", "down", "{}"});
  provisioner.submit({"claim-a", "dev-2", "{}"});
  auto answers = wait_for(provisioner, 3);
  REQUIRE(answers.size() == 3);
  int accepted = 0;
  for (const auto& a : answers) {
    if (a.client_id == "down") {
      CHECK(a.result == "rejected");
      CHECK(a.code == "signer_unavailable");
      CHECK(a.payload.find("\"retryable\":true") != std::string::npos);
    } else {
      CHECK(a.result == "accepted");
      CHECK(a.payload == "claim-a:{}");
      ++accepted;
    }
  }
  CHECK(accepted == 2);  // the worker that met the throw went on serving
  std::lock_guard lock(log_mutex);
  REQUIRE(logs.size() == 1);
  CHECK(logs[0].find("connection refused") != std::string::npos);
}

TEST_CASE("a full queue answers at once and the queued requests are still served") {
  Gate gate;
  gate.hold = true;  // the one worker blocks in its first request
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 1, 2, 2,
                          [](LogLevel, std::string) {});
  provisioner.submit({"c", "dev-0", "{}"});
  // dev-0 may still be queued or already taken by the worker: fill until one is refused. Each of
  // another claim: no claim's share is what refuses them.
  std::vector<std::string> refused;
  for (int i = 1; i <= 4; ++i) {
    provisioner.submit({"c" + std::to_string(i), "dev-" + std::to_string(i), "{}"});
    if (provisioner.pending()) {
      for (auto& a : provisioner.take()) {
        CHECK(a.code == "signer_unavailable");
        refused.push_back(a.client_id);
      }
    }
  }
  CHECK_FALSE(refused.empty());
  {
    std::lock_guard lock(gate.mutex);
    gate.hold = false;
  }
  gate.cv.notify_all();
  auto answers = wait_for(provisioner, 5 - refused.size());
  CHECK(answers.size() == 5 - refused.size());
  for (const auto& a : answers) CHECK(a.result == "accepted");
}

TEST_CASE(
    "a connected notice the signer fails is a failure to log and never an answer to publish") {
  Gate gate;
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 1, 10, 10,
                          [](LogLevel, std::string) {});
  const std::string fingerprint(64, 'a');
  ProvisionRequest notice{"", "down", "", RequestKind::connected, fingerprint};
  provisioner.submit(notice);
  ProvisionRequest renewal{"", "down", "{}", RequestKind::renew, fingerprint};
  provisioner.submit(renewal);
  auto answers = wait_for(provisioner, 2);
  REQUIRE(answers.size() == 2);
  for (const auto& a : answers) {
    if (a.kind == RequestKind::connected) {
      CHECK(a.result == "failed");  // the broker thread only logs it
      CHECK(a.certificate_sha256 == fingerprint);
      CHECK(a.code == "signer_unavailable");
    } else {
      // A device's renewal is answered as an enrolment is: a retryable rejection.
      CHECK(a.kind == RequestKind::renew);
      CHECK(a.result == "rejected");
      CHECK(a.code == "signer_unavailable");
    }
  }
}

namespace {

ProvisionRequest enrolment(const std::string& claim, const std::string& id) {
  return ProvisionRequest{claim, id, "{}"};
}
ProvisionRequest renewal(const std::string& id) {
  return ProvisionRequest{"", id, "{}", RequestKind::renew, std::string(64, 'a')};
}

}  // namespace

TEST_CASE("a claim's enrolments fill its share of the queue and leave room for other claims") {
  RequestQueue queue(6, 2);
  auto x1 = enrolment("x", "x-1"), x2 = enrolment("x", "x-2"), x3 = enrolment("x", "x-3");
  CHECK(queue.push(x1) == RequestQueue::Admission::queued);
  CHECK(queue.push(x2) == RequestQueue::Admission::queued);
  CHECK(queue.waiting("x") == 2);
  // The third of claim x: its share is taken, though the queue has room; the request is left as
  // it was, for its rejection.
  CHECK(queue.push(x3) == RequestQueue::Admission::claim_share_full);
  CHECK(x3.client_id == "x-3");
  CHECK(x3.claim == "x");
  CHECK(queue.size() == 2);
  // Another claim's devices still find room (the positive control), up to their own share.
  auto y1 = enrolment("y", "y-1"), y2 = enrolment("y", "y-2"), y3 = enrolment("y", "y-3");
  CHECK(queue.push(y1) == RequestQueue::Admission::queued);
  CHECK(queue.push(y2) == RequestQueue::Admission::queued);
  CHECK(queue.push(y3) == RequestQueue::Admission::claim_share_full);
  CHECK(queue.waiting("y") == 2);
  CHECK(queue.waiting("z") == 0);
  // A flood is told once: the first refusal of a claim, not the next ones.
  CHECK(queue.first_refusal("x"));
  CHECK_FALSE(queue.first_refusal("x"));
  CHECK(queue.first_refusal("y"));

  // Requests leave in the order they came, and a claim's share is free again as its own leave.
  auto first = queue.pop();
  REQUIRE(first.has_value());
  CHECK(first->client_id == "x-1");
  CHECK(queue.waiting("x") == 1);
  CHECK(queue.push(x3) == RequestQueue::Admission::queued);
  CHECK(queue.waiting("x") == 2);
  std::vector<std::string> order;
  while (auto next = queue.pop()) order.push_back(next->client_id);
  CHECK(order == std::vector<std::string>{"x-2", "y-1", "y-2", "x-3"});
  CHECK(queue.empty());
  CHECK(queue.waiting("x") == 0);
  CHECK(queue.waiting("y") == 0);
  CHECK_FALSE(queue.pop().has_value());
  // Drained, a claim's next flood is told again.
  for (const char* id : {"x-4", "x-5"}) {
    auto again = enrolment("x", id);
    CHECK(queue.push(again) == RequestQueue::Admission::queued);
  }
  auto x6 = enrolment("x", "x-6");
  CHECK(queue.push(x6) == RequestQueue::Admission::claim_share_full);
  CHECK(queue.first_refusal("x"));
  CHECK_FALSE(queue.first_refusal("x"));
}

TEST_CASE("renewals count against no claim's share and the whole queue still bounds everything") {
  RequestQueue queue(4, 1);
  auto x1 = enrolment("x", "x-1");
  CHECK(queue.push(x1) == RequestQueue::Admission::queued);
  // A claim's share taken does not hold back devices' renewals nor connected notices.
  auto r1 = renewal("dev-1"), r2 = renewal("dev-2");
  ProvisionRequest notice{"", "dev-3", "", RequestKind::connected, std::string(64, 'b')};
  CHECK(queue.push(r1) == RequestQueue::Admission::queued);
  CHECK(queue.push(r2) == RequestQueue::Admission::queued);
  CHECK(queue.push(notice) == RequestQueue::Admission::queued);
  CHECK(queue.waiting("x") == 1);
  CHECK(queue.waiting("") == 0);
  // The queue is full: a renewal and another claim's enrolment are refused as full; the claim
  // whose share is taken is told that first.
  auto r4 = renewal("dev-4"), y1 = enrolment("y", "y-1"), x2 = enrolment("x", "x-2");
  CHECK(queue.push(r4) == RequestQueue::Admission::full);
  CHECK(queue.push(y1) == RequestQueue::Admission::full);
  CHECK(queue.push(x2) == RequestQueue::Admission::claim_share_full);
  CHECK(r4.client_id == "dev-4");
  CHECK(queue.size() == 4);
  // A renewal leaving frees room in the queue, not in a claim's share.
  REQUIRE(queue.pop()->client_id == "x-1");
  CHECK(queue.push(y1) == RequestQueue::Admission::queued);
  CHECK(queue.push(r4) == RequestQueue::Admission::full);
  REQUIRE(queue.pop()->kind == RequestKind::renew);
  CHECK(queue.push(x2) == RequestQueue::Admission::queued);
  CHECK(queue.waiting("x") == 1);
  CHECK(queue.waiting("y") == 1);
}

TEST_CASE("a claim beyond its share is answered claim_queue_full at once and other claims served") {
  Gate gate;
  gate.hold = true;  // the one worker blocks in its first request
  std::vector<std::string> logs;
  std::mutex log_mutex;
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 1, 10, 2,
                          [&](LogLevel, std::string line) {
                            std::lock_guard lock(log_mutex);
                            logs.push_back(std::move(line));
                          });
  // Claim x floods: at most 2 wait (and 1 more at the worker) whatever the timing.
  for (int i = 0; i < 6; ++i) provisioner.submit(enrolment("x", "x-" + std::to_string(i)));
  std::vector<ProvisionAnswer> refused;
  for (int i = 0; i < 100 && refused.size() < 3; ++i) {
    auto taken = provisioner.take();
    refused.insert(refused.end(), taken.begin(), taken.end());
    if (refused.size() < 3) std::this_thread::sleep_for(10ms);
  }
  REQUIRE(refused.size() >= 3);
  CHECK(refused.size() <= 4);
  for (const auto& a : refused) {
    INFO(a.client_id);
    CHECK(a.result == "rejected");
    CHECK(a.code == "claim_queue_full");
    CHECK(a.payload.find("\"retryable\":true") != std::string::npos);
  }
  // Claim y's devices and a renewal still get in, while x's share is taken.
  provisioner.submit(enrolment("y", "y-1"));
  provisioner.submit(enrolment("y", "y-2"));
  provisioner.submit(renewal("dev-1"));
  CHECK_FALSE(provisioner.pending());
  {
    std::lock_guard lock(gate.mutex);
    gate.hold = false;
  }
  gate.cv.notify_all();
  auto answers = wait_for(provisioner, 6 - refused.size() + 3);
  CHECK(answers.size() == 6 - refused.size() + 3);
  int from_y = 0;
  for (const auto& a : answers) {
    CHECK(a.result == "accepted");
    if (a.client_id.starts_with("y-")) ++from_y;
  }
  CHECK(from_y == 2);
  // The operator is told which claim floods, once.
  std::lock_guard lock(log_mutex);
  REQUIRE(logs.size() == 1);
  CHECK(logs[0].find("claim 'x' has its share of the provisioning queue waiting") !=
        std::string::npos);
}
