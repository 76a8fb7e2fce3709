// The group commit of enrolments (ClaimStore::enroll_devices, ops::EnrolmentGroup) against a real
// SQLite registry and a real CA: each enrolment of a batch is recorded as it would be alone, the
// refusal or failure of one leaves the others as they are, a failure of the whole records nothing,
// and the quota and exactly-once hold when many enrolments share one transaction.
#include "ops/enrol_group.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/time.h"
#include "ops/claims.h"
#include "ops/credentials.h"
#include "ops/operations.h"
#include "ops/provisioning.h"
#include "registry/sqlite_store.h"
#include "tests/ops/claim_site.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace onboard;
using nlohmann::json;
using onboard::test::must;
using onboard::test::TempDir;
using ops::ProvisionCode;

struct Site : test::ClaimSite {
  Site() : ClaimSite("Group Commit Test Root") {}
  void add_claim(const std::string& name, std::int64_t quota) {
    ClaimSite::add_claim(name, quota, "", "sensor");
  }
  // An enrolment as ops::enroll hands it to the store: a new key, its certificate signed.
  registry::EnrollItem item(const std::string& claim, const std::string& id) {
    const auto key = must(ca::generate_key(ca::KeyAlg::p256));
    auto issued = must(ops::issue_device_certificate(*ca, id, key.get(), 30));
    registry::NewDevice device;
    device.id = id;
    return {claim, device, ops::new_certificate(issued.info, issued.pem), actor};
  }
  bool enrolled(const std::string& id) { return store->get_device(id).ok(); }
  std::size_t enroll_audit_rows() {
    const auto audit = must(store->audit_list(0, 0));
    return static_cast<std::size_t>(std::count_if(
        audit.begin(), audit.end(), [](const auto& e) { return e.action == "device.enroll"; }));
  }
  void sql(const std::string& statement) {
    SQLite::Database raw((dir / "registry.db").string(), SQLite::OPEN_READWRITE);
    raw.exec(statement);
  }
};

registry::EnrollRefusal refusal_of(const Result<registry::EnrollOutcome>& r) {
  REQUIRE(r.ok());
  return r->refusal;
}

std::string request_for(const EVP_PKEY* key, const std::string& cn) {
  return json{{"csr", ca::csr_to_pem(must(ca::make_csr(key, cn)).get())}}.dump();
}

}  // namespace

TEST_CASE(
    "a group commit records each enrolment as alone and one refused or failed leaves the rest") {
  Site site;
  site.add_claim("line", 3);
  // The registry refuses the device row of id "dev-broken" (a statement error, as a constraint
  // would be): after its quota unit was spent, which its savepoint must give back.
  site.sql(
      "CREATE TRIGGER no_broken BEFORE INSERT ON devices WHEN NEW.id = 'dev-broken' "
      "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
  std::vector<registry::EnrollItem> items;
  items.push_back(site.item("line", "dev-1"));
  items.push_back(site.item("line", "dev-1"));       // the same id again: taken by the first
  items.push_back(site.item("line", "dev-broken"));  // fails in the middle of its writes
  items.push_back(site.item("nowhere", "dev-2"));    // no such claim
  items.push_back(site.item("line", "dev-2"));
  items.push_back(site.item("line", "dev-x"));
  items.back().device.id = "dev 3";  // not a device id: refused before the transaction
  items.push_back(site.item("line", "dev-3"));
  items.push_back(site.item("line", "dev-4"));  // the quota (3) is spent by now

  const auto results = site.store->enroll_devices(items);
  REQUIRE(results.size() == items.size());
  CHECK(refusal_of(results[0]) == registry::EnrollRefusal::none);
  CHECK(results[0]->device.id == "dev-1");
  CHECK(results[0]->device.type == "sensor");
  CHECK(refusal_of(results[1]) == registry::EnrollRefusal::id_taken);
  REQUIRE_FALSE(results[2].ok());
  CHECK_THAT(results[2].error().message, Catch::Contains("constraint"));
  CHECK(refusal_of(results[3]) == registry::EnrollRefusal::claim_unknown);
  CHECK(refusal_of(results[4]) == registry::EnrollRefusal::none);
  REQUIRE_FALSE(results[5].ok());
  CHECK(results[5].error().code == Errc::invalid_input);
  CHECK(refusal_of(results[6]) == registry::EnrollRefusal::none);
  CHECK(refusal_of(results[7]) == registry::EnrollRefusal::claim_used_up);

  // What was recorded is exactly the three enrolments, each with its unit and its audit row.
  CHECK(site.quota_used("line") == 3);
  CHECK(site.devices() == 3);
  CHECK(site.enrolled("dev-1"));
  CHECK(site.enrolled("dev-2"));
  CHECK(site.enrolled("dev-3"));
  CHECK_FALSE(site.enrolled("dev-broken"));
  CHECK_FALSE(site.enrolled("dev-4"));
  CHECK(must(site.store->certificates_of("dev-1")).size() == 1);
  CHECK(must(site.store->certificates_of("dev-1")).front().sha256_fingerprint ==
        items[0].certificate.sha256_fingerprint);
  CHECK(site.enroll_audit_rows() == 3);
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE("a group commit that cannot be kept records none of its enrolments and says so to each") {
  Site site;
  site.add_claim("line", 10);
  // RAISE(ROLLBACK) rolls the whole transaction back, savepoints and all, as SQLite does on some
  // I/O errors: no enrolment of the batch may be reported as recorded.
  site.sql(
      "CREATE TRIGGER lose_all BEFORE INSERT ON devices WHEN NEW.id = 'dev-last' "
      "BEGIN SELECT RAISE(ROLLBACK, 'the transaction is gone'); END");
  std::vector<registry::EnrollItem> items;
  items.push_back(site.item("line", "dev-a"));
  items.push_back(site.item("line", "dev-b"));
  items.push_back(site.item("line", "dev-last"));
  const auto lost = site.store->enroll_devices(items);
  REQUIRE(lost.size() == 3);
  for (const auto& r : lost) CHECK_FALSE(r.ok());
  CHECK(site.devices() == 0);
  CHECK(site.quota_used("line") == 0);
  CHECK(site.enroll_audit_rows() == 0);

  // The positive control: the same batch, once the registry takes it, is recorded whole.
  site.sql("DROP TRIGGER lose_all");
  const auto kept = site.store->enroll_devices(items);
  REQUIRE(kept.size() == 3);
  for (const auto& r : kept) CHECK(refusal_of(r) == registry::EnrollRefusal::none);
  CHECK(site.devices() == 3);
  CHECK(site.quota_used("line") == 3);
  CHECK(site.enroll_audit_rows() == 3);
  CHECK(must(site.store->verify_audit()).ok());
}

TEST_CASE(
    "enrolments waiting together share one transaction and the quota and retries still hold") {
  Site site;
  site.add_claim("burst", 10);
  constexpr int kDevices = 24;  // 23 ids; the last is a retry of dev-0 with the same key
  std::vector<ossl::Ptr<EVP_PKEY>> keys;
  for (int i = 0; i < kDevices - 1; ++i) keys.push_back(must(ca::generate_key(ca::KeyAlg::p256)));
  auto id_of = [](int i) { return "dev-" + std::to_string(i == kDevices - 1 ? 0 : i); };
  auto key_of = [&](int i) { return keys[i == kDevices - 1 ? 0 : i].get(); };

  ops::EnrolmentGroup group;
  std::mutex write_turn;
  std::vector<ops::ProvisionAnswer> answers(kDevices);
  std::vector<std::thread> threads;
  {
    // Held, as by another writer, until every request waits in the group: they are then one batch.
    std::unique_lock turn(write_turn);
    for (int i = 0; i < kDevices; ++i) {
      threads.emplace_back([&, i] {
        // One connection per thread, as the server's workers have.
        auto store =
            registry::open_sqlite_store(site.dir / "registry.db", registry::OpenMode::read_write);
        if (!store.ok()) return;
        const ops::RecordEnrolment record = [&](const registry::EnrollItem& item) {
          return group.record(**store, write_turn, item);
        };
        answers[i] =
            ops::enroll(**store, *site.ca, {"burst", id_of(i), request_for(key_of(i), id_of(i))},
                        site.actor, record);
      });
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (group.waiting() < kDevices && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(group.waiting() == kDevices);
  }
  for (auto& t : threads) t.join();

  int accepted = 0, repeated = 0, used_up = 0, other = 0;
  for (const auto& a : answers) {
    if (!a.refused) {
      ++accepted;
      if (a.repeated) ++repeated;
    } else if (*a.refused == ProvisionCode::claim_used_up) {
      ++used_up;
    } else {
      ++other;
    }
  }
  const auto stats = group.stats();
  CHECK(stats.batches == 1);
  CHECK(stats.largest == kDevices);
  CHECK(other == 0);
  // dev-0 and its retry are in the batch together: either it got in (and the retry is answered
  // with its certificate) or the quota ran out before it (and both are refused).
  const bool first_in = !answers[0].refused;
  CHECK(first_in == !answers[kDevices - 1].refused);
  if (first_in) {
    CHECK(answers[0].certificate_pem == answers[kDevices - 1].certificate_pem);
    CHECK(repeated == 1);
    CHECK(accepted == 11);
  } else {
    CHECK(accepted == 10);
  }
  CHECK(accepted - repeated == 10);
  CHECK(used_up == kDevices - accepted);
  CHECK(site.quota_used("burst") == 10);
  CHECK(site.devices() == 10);
  CHECK(site.enroll_audit_rows() == 10);
  CHECK(must(site.store->verify_audit()).ok());

  // Alone, an enrolment is a batch of one.
  site.add_claim("later", 1);
  const auto key = must(ca::generate_key(ca::KeyAlg::p256));
  const auto alone =
      ops::enroll(*site.store, *site.ca, {"later", "solo", request_for(key.get(), "solo")},
                  site.actor, [&](const registry::EnrollItem& item) {
                    return group.record(*site.store, write_turn, item);
                  });
  INFO(alone.message);
  CHECK_FALSE(alone.refused.has_value());
  CHECK(group.stats().batches == 2);
  CHECK(site.enrolled("solo"));
}
