// The CRL guard: which CRL files the broker may be asked to load, and what it says about the one
// it holds. Files are written like onboardctl writes them (a new file renamed over the old one).
#include "plugin/crl_guard.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "ca/certificate.h"
#include "tests/ca/fixtures.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using namespace onboard::plugin;
using onboard::test::kDay;
using onboard::test::kNow;
using onboard::test::make_root;
using onboard::test::must;
using onboard::test::TempDir;

namespace {

std::string crl_pem(const test::TestCa& ca, UnixTime this_update, UnixTime next_update,
                    std::uint64_t number = 1) {
  auto crl =
      must(build_crl(ca.cert.get(), *ca.signer, {}, CrlParams{number, this_update, next_update}));
  return crl_to_pem(crl.get());
}

std::string cert_pem(const test::TestCa& ca) { return certificate_to_pem(ca.cert.get()); }

// Replaces the file the way onboardctl does: a new inode, renamed into place.
void replace(const std::filesystem::path& path, const std::string& text) {
  const auto temp = path.string() + ".new";
  std::ofstream(temp, std::ios::binary | std::ios::trunc) << text;
  std::filesystem::rename(temp, path);
}

// The CRL file a guard watches, written first by `ca` for this_update..next_update (number 1), and
// the handover the guard posts to.
struct CrlFile {
  CrlFile(UnixTime this_update, UnixTime next_update) {
    replace(path, crl_pem(ca, this_update, next_update));
  }
  TempDir dir;
  std::string path = (dir / "crl.pem").string();
  test::TestCa ca = make_root();
  Handover handover;
};

bool logged(const Handover::Taken& taken, LogLevel level, const std::string& text) {
  for (const auto& [l, line] : taken.logs)
    if (l == level && line.find(text) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("a CRL file is usable only when the broker can load it and it is in force") {
  TempDir dir;
  const auto path = (dir / "crl.pem").string();
  auto ca = make_root();
  auto other = make_root("Another Root");

  SECTION("a current CRL") {
    replace(path, crl_pem(ca, kNow - 60, kNow + 7 * kDay));
    auto check = check_crl_file(path, kNow, cert_pem(ca));
    CHECK(check.ok());
    CHECK(check.crls == 1);
    CHECK(check.next_update == kNow + 7 * kDay);
  }
  SECTION("two CRLs in one file (a root's and an issuing CA's): the earlier expiry counts") {
    replace(path, crl_pem(ca, kNow - 60, kNow + 7 * kDay) + crl_pem(other, kNow - 60, kNow + kDay));
    auto check = check_crl_file(path, kNow, cert_pem(ca) + cert_pem(other));
    CHECK(check.ok());
    CHECK(check.crls == 2);
    CHECK(check.next_update == kNow + kDay);
  }
  SECTION("an expired CRL") {
    replace(path, crl_pem(ca, kNow - 8 * kDay, kNow - kDay));
    auto check = check_crl_file(path, kNow);
    CHECK(check.problem.find("a CRL that expired at") == 0);
    CHECK(check.problem.find("refuse every device certificate") != std::string::npos);
  }
  SECTION("a CRL not in force yet") {
    replace(path, crl_pem(ca, kNow + kDay, kNow + 8 * kDay));
    CHECK(check_crl_file(path, kNow).problem.find("a CRL not valid until") == 0);
  }
  SECTION("a CRL signed by another CA") {
    replace(path, crl_pem(other, kNow - 60, kNow + 7 * kDay));
    CHECK(check_crl_file(path, kNow, cert_pem(ca)).problem.find("not signed by the CA") !=
          std::string::npos);
    CHECK(check_crl_file(path, kNow).ok());  // without the CA file, not checked
  }
  SECTION("garbage, a truncated CRL, a certificate instead, nothing") {
    const std::string good = crl_pem(ca, kNow - 60, kNow + 7 * kDay);
    replace(path, std::string(4096, 'x'));
    CHECK_FALSE(check_crl_file(path, kNow).ok());
    replace(path, good.substr(0, good.size() / 2));
    CHECK(check_crl_file(path, kNow).problem == "not a PEM CRL (the broker would fail to load it)");
    replace(path, cert_pem(ca));
    CHECK(check_crl_file(path, kNow).problem ==
          "no CRL in the file (the broker would fail to load it)");
    std::filesystem::remove(path);
    CHECK(check_crl_file(path, kNow).problem == "missing");
  }
}

TEST_CASE("the guard hands over a changed CRL only when it is usable and says why not") {
  CrlFile file(kNow - 60, kNow + 7 * kDay);
  auto& [dir, path, ca, handover] = file;
  CrlGuard guard(path, cert_pem(ca));

  guard.poll(handover, kNow);  // the broker loaded this one at start: nothing to do
  CHECK_FALSE(handover.pending());
  guard.poll(handover, kNow + 1);
  CHECK_FALSE(handover.pending());

  replace(path, crl_pem(ca, kNow, kNow + 7 * kDay, 2));
  guard.poll(handover, kNow + 2);
  auto taken = handover.take();
  REQUIRE(taken.crl_reload);
  CHECK(*taken.crl_reload == *file_stamp(path));
  guard.poll(handover, kNow + 3);  // handed over once, not every poll
  CHECK_FALSE(handover.pending());

  SECTION("a corrupt file is not handed over") {
    replace(path, "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n");
    guard.poll(handover, kNow + 4);
    guard.poll(handover, kNow + 5);
    taken = handover.take();
    CHECK_FALSE(taken.crl_reload);
    REQUIRE(taken.logs.size() == 1);
    CHECK(logged(taken, LogLevel::error, "changed but is not a PEM CRL"));
    CHECK(logged(taken, LogLevel::error, "not handed to the broker"));

    // An operator's SIGHUP makes the broker load it anyway: say what that means.
    guard.broker_reloaded();
    guard.poll(handover, kNow + 6);
    CHECK(logged(handover.take(), LogLevel::error, "the broker has loaded CRL"));
  }
  SECTION("an expired file is not handed over") {
    replace(path, crl_pem(ca, kNow - 8 * kDay, kNow - kDay, 3));
    guard.poll(handover, kNow + 4);
    taken = handover.take();
    CHECK_FALSE(taken.crl_reload);
    CHECK(logged(taken, LogLevel::error, "changed but is a CRL that expired"));
  }
  SECTION("a CRL from another CA is not handed over") {
    replace(path, crl_pem(make_root("Another Root"), kNow, kNow + 7 * kDay));
    guard.poll(handover, kNow + 4);
    taken = handover.take();
    CHECK_FALSE(taken.crl_reload);
    CHECK(logged(taken, LogLevel::error, "not signed by the CA"));
  }
  SECTION("a deleted file is reported once and its return handed over") {
    std::filesystem::remove(path);
    guard.poll(handover, kNow + 4);
    guard.poll(handover, kNow + 5);
    taken = handover.take();
    REQUIRE(taken.logs.size() == 1);
    CHECK(logged(taken, LogLevel::warning, "is missing"));
    replace(path, crl_pem(ca, kNow, kNow + 7 * kDay, 4));
    guard.poll(handover, kNow + 6);
    CHECK(handover.take().crl_reload);
  }
}

TEST_CASE("a CRL replaced after the plugin started and before its first look is a change") {
  // Mosquitto starts the plugin, then loads the CRL into its listeners; the watcher's first look
  // comes later. A file replaced in between is not what the broker loaded at start.
  CrlFile file(kNow - 60, kNow + 7 * kDay);
  auto& [dir, path, ca, handover] = file;
  SECTION("unchanged: taken as the broker's, nothing to do (the control)") {
    CrlGuard guard(path, cert_pem(ca));
    guard.poll(handover, kNow);
    CHECK_FALSE(handover.pending());
  }
  SECTION("a usable replacement is handed over") {
    CrlGuard guard(path, cert_pem(ca));
    replace(path, crl_pem(ca, kNow, kNow + 7 * kDay, 2));
    guard.poll(handover, kNow);
    auto taken = handover.take();
    REQUIRE(taken.crl_reload);
    CHECK(*taken.crl_reload == *file_stamp(path));
  }
  SECTION("a corrupt replacement is not handed over and is not called the broker's") {
    CrlGuard guard(path, cert_pem(ca));
    replace(path, "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n");
    guard.poll(handover, kNow);
    auto taken = handover.take();
    CHECK_FALSE(taken.crl_reload);
    CHECK(logged(taken, LogLevel::error, "not handed to the broker"));
    CHECK_FALSE(logged(taken, LogLevel::error, "the broker has loaded CRL"));
  }
}

TEST_CASE("the guard warns before the CRL the broker holds expires and reports its expiry once") {
  CrlFile file(kNow, kNow + 8 * kDay);
  auto& [dir, path, ca, handover] = file;
  CrlGuard guard(path);
  guard.poll(handover, kNow);
  guard.poll(handover, kNow + 5 * kDay);  // 3 days of 8 left: fine
  CHECK_FALSE(handover.pending());

  guard.poll(handover, kNow + 6 * kDay + 1);  // under a quarter of its lifetime left
  guard.poll(handover, kNow + 7 * kDay);
  auto taken = handover.take();
  REQUIRE(taken.logs.size() == 1);
  CHECK(logged(taken, LogLevel::warning, "the CRL the broker holds (" + path + ") expires at"));

  guard.poll(handover, kNow + 8 * kDay);
  guard.poll(handover, kNow + 9 * kDay);
  taken = handover.take();
  REQUIRE(taken.logs.size() == 1);
  CHECK(logged(taken, LogLevel::error, "expired at"));
  CHECK(logged(taken, LogLevel::error, "TLS refuses every device"));

  // A fresh CRL is handed over and the warnings start again from it.
  replace(path, crl_pem(ca, kNow + 9 * kDay, kNow + 16 * kDay, 2));
  guard.poll(handover, kNow + 9 * kDay + 1);
  taken = handover.take();
  CHECK(taken.crl_reload);
  CHECK(taken.logs.empty());
}

TEST_CASE("a CRL written by a clock slightly ahead is handed over once it is in force") {
  CrlFile file(kNow - 60, kNow + 7 * kDay);
  auto& [dir, path, ca, handover] = file;
  CrlGuard guard(path);
  guard.poll(handover, kNow);

  replace(path, crl_pem(ca, kNow + 2, kNow + 7 * kDay, 2));
  guard.poll(handover, kNow);
  guard.poll(handover, kNow + 1);
  auto taken = handover.take();
  CHECK_FALSE(taken.crl_reload);
  REQUIRE(taken.logs.size() == 1);
  CHECK(logged(taken, LogLevel::error, "a CRL not valid until"));

  guard.poll(handover, kNow + 2);
  CHECK(handover.take().crl_reload);
}
