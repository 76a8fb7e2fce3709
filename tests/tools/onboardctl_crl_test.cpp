// The CRL's lifetime: `onboardctl crl --validity`, its refresh mode, and `onboardctl serve`
// re-issuing it before it expires. A broker that loads the CRL refuses every device once it is past
// its next update, so these are what keep brokers running.
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <map>
#include <thread>

#include "ca/certificate.h"
#include "ca/crl.h"
#include "core/files.h"
#include "ops/crl_refresh.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;
constexpr UnixTime kDay = 86400;

// The environment that runs a program `offset` ahead ("+8d") on the wall clock (libfaketime). An
// ASan-built onboardctl must be told not to insist on its runtime coming first.
std::map<std::string, std::string> clock_ahead(const std::string& offset) {
  const char* asan = std::getenv("ASAN_OPTIONS");
  return {{"LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"},
          {"ASAN_OPTIONS", std::string(asan != nullptr ? asan : "") + ":verify_asan_link_order=0"},
          {"FAKETIME", offset},
          {"FAKETIME_DONT_FAKE_MONOTONIC", "1"},
          {"DONT_FAKE_MONOTONIC", "1"}};
}

struct Site {
  TempDir dir;
  std::filesystem::path data() const { return dir / "data"; }
  std::filesystem::path crl() const { return data() / "crl.pem"; }
  Site() { REQUIRE(ctl({"init", "--no-group", "--key-alg", "p256"}).exit_code == 0); }
  RunResult ctl(Args args, const std::map<std::string, std::string>& env = {}) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data().string()});
    return onboard::test::run(args, {}, env);
  }
};

struct CrlFacts {
  long number = 0;
  UnixTime this_update = 0, next_update = 0;
};
CrlFacts facts(const std::filesystem::path& path) {
  auto pem = read_file(path);
  REQUIRE(pem.ok());
  auto crl = crl_from_pem(*pem);
  REQUIRE(crl.ok());
  CrlFacts f;
  auto* number = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl->get(), NID_crl_number, nullptr, nullptr));
  REQUIRE(number != nullptr);
  f.number = ASN1_INTEGER_get(number);
  ASN1_INTEGER_free(number);
  f.this_update = to_unix_time(X509_CRL_get0_lastUpdate(crl->get())).value_or(0);
  f.next_update = to_unix_time(X509_CRL_get0_nextUpdate(crl->get())).value_or(0);
  return f;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("durations are a whole number and one unit and anything else is refused by name") {
  CHECK(ops::parse_duration("7d", "--validity").value() == 7 * kDay);
  CHECK(ops::parse_duration("36h", "--validity").value() == 36 * 3600);
  CHECK(ops::parse_duration("90m", "--validity").value() == 90 * 60);
  CHECK(ops::parse_duration("3600s", "--validity").value() == 3600);
  CHECK(ops::parse_duration("3650d", "--validity").value() == 3650 * kDay);
  for (const char* bad :
       {"7", "d", "0d", "-1d", "7w", "7 d", "1.5d", "3651d", "", "99999999999d"}) {
    INFO(bad);
    auto r = ops::parse_duration(bad, "--if-expiring-within");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_input);
    CHECK(r.error().message.starts_with("--if-expiring-within must be a whole number and a unit"));
  }
}

TEST_CASE("a duration outside the range a flag allows is refused and the range is named") {
  CHECK(ops::parse_duration("1m", "--ttl", 60, 30 * kDay).value() == 60);
  CHECK(ops::parse_duration("30d", "--ttl", 60, 30 * kDay).value() == 30 * kDay);
  for (const char* bad : {"59s", "31d", "721h"}) {
    INFO(bad);
    auto r = ops::parse_duration(bad, "--ttl", 60, 30 * kDay);
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error().message, "--ttl must be a whole number and a unit"));
    CHECK(contains(r.error().message, "from 1m to 30d; not '" + std::string(bad) + "'"));
  }
  CHECK(ops::format_duration(7 * kDay) == "7d");
  CHECK(ops::format_duration(6 * kDay + 23 * 3600) == "6d 23h");
  CHECK(ops::format_duration(90) == "1m 30s");
  CHECK(ops::format_duration(-3600) == "-1h");
}

TEST_CASE("a CRL is due for re-issue when it expires within the margin or is gone or unreadable") {
  TempDir dir;
  const auto path = dir / "crl.pem";
  const UnixTime now = 1'800'000'000;
  auto missing = ops::crl_standing(path, now, 3 * kDay);
  CHECK(missing.due);
  CHECK(missing.why == "no CRL at " + path.string());

  REQUIRE(write_file_atomic(path, "not a CRL", 0644, Overwrite::replace).ok());
  auto garbage = ops::crl_standing(path, now, 3 * kDay);
  CHECK(garbage.due);
  CHECK(contains(garbage.why, "is not a readable CRL"));

  Site site;  // a real CRL from onboardctl, 7 days ahead of the real clock
  const UnixTime real_now = unix_now();
  auto fresh = ops::crl_standing(site.crl(), real_now, 3 * kDay);
  CHECK_FALSE(fresh.due);
  CHECK(contains(fresh.why, "the CRL is in force for "));  // 7d less the seconds since
  auto close = ops::crl_standing(site.crl(), real_now + 5 * kDay, 3 * kDay);
  CHECK(close.due);
  CHECK(contains(close.why, "the CRL expires in "));
  auto expired = ops::crl_standing(site.crl(), real_now + 8 * kDay, 3 * kDay);
  CHECK(expired.due);
  CHECK(contains(expired.why, "the CRL expired 1d ago"));
}

TEST_CASE("onboardctl crl --validity sets the next update and refuses what a broker cannot use") {
  Site site;
  CHECK(facts(site.crl()).next_update - facts(site.crl()).this_update == 7 * kDay);  // default

  auto r = site.ctl({"crl", "--validity", "30d"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const auto f = facts(site.crl());
  CHECK(f.next_update - f.this_update == 30 * kDay);
  CHECK(contains(r.out, "CRL 2 written to " + site.crl().string() + ", next update "));

  auto short_one = site.ctl({"crl", "--validity", "30m"});
  CHECK(short_one.exit_code == 3);
  CHECK(contains(short_one.err, "from 1h to 366d; not '30m'"));
  auto bogus = site.ctl({"crl", "--validity", "week"});
  CHECK(bogus.exit_code == 3);
  CHECK(contains(bogus.err, "--validity must be a whole number and a unit"));
  CHECK(facts(site.crl()).number == 2);  // nothing written by the refused runs
}

TEST_CASE("onboardctl crl --if-expiring-within rewrites only a CRL that is about to expire") {
  Site site;
  const auto before = read_file(site.crl()).value();

  SECTION("a fresh CRL is left alone, and the run says so and succeeds") {
    auto r = site.ctl({"crl", "--if-expiring-within", "3d"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "the CRL is in force for "));
    CHECK(contains(r.out, "not rewritten"));
    CHECK(read_file(site.crl()).value() == before);
  }
  SECTION("a CRL expiring within the margin is rewritten with a new number") {
    auto r = site.ctl({"crl", "--if-expiring-within", "8d", "--validity", "14d"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "CRL 2 written to"));
    CHECK(contains(r.out, "(the CRL expires in "));
    const auto f = facts(site.crl());
    CHECK(f.number == 2);
    CHECK(f.next_update - f.this_update == 14 * kDay);
  }
  SECTION("eight days on, as a daily timer would find it, it is rewritten") {
    auto r = site.ctl({"crl", "--if-expiring-within", "3d"}, clock_ahead("+8d"));
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "(the CRL expired 1d ago)"));
    CHECK(facts(site.crl()).next_update > unix_now() + 14 * kDay);
    // and the next day's run leaves the new one alone
    auto again = site.ctl({"crl", "--if-expiring-within", "3d"}, clock_ahead("+9d"));
    CHECK(again.exit_code == 0);
    CHECK(contains(again.out, "not rewritten"));
    CHECK(facts(site.crl()).number == 2);
  }
  SECTION("a missing CRL is written") {
    std::filesystem::remove(site.crl());
    auto r = site.ctl({"crl", "--if-expiring-within", "3d"});
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "(no CRL at"));
    CHECK(facts(site.crl()).number == 2);
  }
}

TEST_CASE("onboardctl serve re-issues a CRL with less than half its lifetime left") {
  Site site;
  const auto before = facts(site.crl());
  // Started five days on (under 3.5 of its 7 days left): the server re-issues it at once.
  test::ChildProcess server(
      {ONBOARDCTL_PATH, "--data-dir", site.data().string(), "serve", "--listen", "127.0.0.1:0"},
      site.dir / "serve.log", clock_ahead("+5d"));
  REQUIRE(server.read_line().starts_with("serving on http://127.0.0.1:"));
  bool rewritten = false;
  for (int i = 0; i < 100 && !rewritten; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    rewritten = facts(site.crl()).number > before.number;
  }
  CHECK(rewritten);
  CHECK(facts(site.crl()).next_update >= unix_now() + 11 * kDay);
  CHECK(server.stop(SIGTERM) == 0);
  auto log = read_file(site.dir / "serve.log");
  REQUIRE(log.ok());
  CHECK(contains(*log, "CRL 2 written to"));
}

TEST_CASE("onboardctl serve leaves a CRL with more than half its lifetime alone") {
  Site site;
  const auto before = read_file(site.crl()).value();
  test::ChildProcess server(
      {ONBOARDCTL_PATH, "--data-dir", site.data().string(), "serve", "--listen", "127.0.0.1:0"},
      site.dir / "serve.log", clock_ahead("+2d"));
  REQUIRE(server.read_line().starts_with("serving on http://127.0.0.1:"));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(read_file(site.crl()).value() == before);
  CHECK(server.stop(SIGTERM) == 0);
}
