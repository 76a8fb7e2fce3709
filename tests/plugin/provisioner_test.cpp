// The enrolment requests' hand-off (plugin/provisioner.h) with a fake signer: answers come back
// for the broker thread to take, a signer that throws or a full queue is a retryable rejection
// and a log line, and the workers survive both.
#include "plugin/provisioner.h"

#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>
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
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 2, 10,
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
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 1, 2,
                          [](LogLevel, std::string) {});
  provisioner.submit({"c", "dev-0", "{}"});
  // dev-0 may still be queued or already taken by the worker: fill until one is refused.
  std::vector<std::string> refused;
  for (int i = 1; i <= 4; ++i) {
    provisioner.submit({"c", "dev-" + std::to_string(i), "{}"});
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
  Provisioner provisioner([&] { return std::make_unique<FakeSigner>(gate); }, 1, 10,
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
