#include "bundle/password.h"

#include <array>
#include <catch2/catch.hpp>
#include <set>
#include <string>

using namespace onboard;
using namespace onboard::bundle;

namespace {

bool is_base32(char c) { return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'); }

Secret generated() {
  auto password = generate_password();
  REQUIRE(password.ok());
  return std::move(password).value();
}

}  // namespace

TEST_CASE("a generated password is seven dash-separated groups of four base32 characters") {
  const Secret password = generated();
  const std::string_view s = password.view();
  REQUIRE(s.size() == kGeneratedPasswordLength);
  for (std::size_t i = 0; i < s.size(); ++i) {
    INFO("position " << i);
    if (i % 5 == 4) {
      CHECK(s[i] == '-');
    } else {
      CHECK(is_base32(s[i]));
    }
  }
}

TEST_CASE("a generated password carries at least 128 bits by construction") {
  // 28 symbols of a 32-symbol alphabet, each drawn uniformly.
  CHECK(kGeneratedPasswordBits >= 128);
  CHECK(kGeneratedPasswordBits == 28 * 5);
}

TEST_CASE("generated passwords do not repeat and use the whole alphabet evenly") {
  std::set<std::string> seen;
  std::array<int, 32> counts{};
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  constexpr int kRuns = 2000;
  for (int i = 0; i < kRuns; ++i) {
    const Secret p = generated();
    seen.insert(std::string(p.view()));
    for (char c : p.view()) {
      if (c != '-') counts[alphabet.find(c)] += 1;
    }
  }
  CHECK(seen.size() == kRuns);
  // 56000 symbols, 1750 expected per symbol; a fair generator stays far inside +-20%.
  for (std::size_t i = 0; i < counts.size(); ++i) {
    INFO("symbol " << alphabet[i]);
    CHECK(counts[i] > 1400);
    CHECK(counts[i] < 2100);
  }
}

TEST_CASE("a generated password passes the rule an operator's password must pass") {
  for (int i = 0; i < 50; ++i) {
    const Secret p = generated();
    CHECK_FALSE(password_problem(p).has_value());
    CHECK(estimate_password_bits(p) >= kMinPasswordBits);
  }
}

TEST_CASE("a password shorter than 16 characters is refused, whatever its mix") {
  auto problem = password_problem(Secret("Xk9#mQ2$vL7!pR4"));  // 15
  REQUIRE(problem.has_value());
  CHECK(problem->find("at least 16") != std::string::npos);
  CHECK(password_problem(Secret("")).has_value());
}

TEST_CASE("a password of a single character class is refused however long") {
  for (const char* weak : {"correcthorsebatterystaple", "ABCQWERTYUIOPASDFGHJ",
                           "31415926535897932384626", "!@#$%^&*()_+-=[]{}|;"}) {
    INFO(weak);
    auto problem = password_problem(Secret(weak));
    REQUIRE(problem.has_value());
    CHECK(problem->find("single kind") != std::string::npos);
  }
}

TEST_CASE("repeated characters, repeated chunks and runs are refused as predictable") {
  for (const char* weak : {"aaaaaaaaaaaaaaaaAAAAAAAAAAAAAAAA", "Tr0ub4dor&3Tr0ub4dor&3",
                           "abcdefghijklmnopqrstuvwxyz0123456789", "Ab1!Ab1!Ab1!Ab1!Ab1!Ab1!",
                           "Password1Password1Password1", "qwertyqwerty12341234"}) {
    INFO(weak);
    auto problem = password_problem(Secret(weak));
    REQUIRE(problem.has_value());
    CHECK(problem->find("predictable") != std::string::npos);
  }
}

TEST_CASE("the weakness message never echoes the password") {
  const char* weak = "Tr0ub4dor&3Tr0ub4dor&3";
  auto problem = password_problem(Secret(weak));
  REQUIRE(problem.has_value());
  CHECK(problem->find("Tr0ub4dor") == std::string::npos);
}

TEST_CASE("control characters and non-ASCII bytes are refused") {
  for (const std::string& bad :
       {std::string("GoodPassw0rd-1234\n5678"), std::string("GoodPassw0rd-1234\t5678"),
        std::string("GoodPassw0rd-1234\x7f"
                    "5678"),
        std::string("GoodPassw0rd-1234\xc3\xa9"
                    "5678"),
        std::string("GoodPassw0rd-1234\0"
                    "5678",
                    22)}) {
    auto problem = password_problem(Secret(bad));
    REQUIRE(problem.has_value());
    CHECK(problem->find("printable ASCII") != std::string::npos);
  }
}

TEST_CASE("strong operator passwords are accepted") {
  for (const char* strong : {"vX9#qL2m!Rt7@wZp4&Kc", "J4nuary-Snow-Falls-Quietly-87",
                             "8fK2-pQ9x-Lm3V-tR6w", "Violet Harbor Quartz 71 Ember"}) {
    INFO(strong);
    auto problem = password_problem(Secret(strong));
    CHECK_FALSE(problem.has_value());
  }
}

TEST_CASE("the strength estimate counts repeats once and runs not at all") {
  // 16 distinct lower-case letters with no runs: 16 x log2(26).
  const double distinct = estimate_password_bits(Secret("qzmxnwbvhgtkrpsl"));
  CHECK(distinct == Approx(16 * 4.7004).epsilon(0.001));
  // The same chunk four times counts as the chunk plus three repeats.
  const double chunked = estimate_password_bits(Secret("qzmxqzmxqzmxqzmx"));
  CHECK(chunked == Approx((4 + 1) * 4.7004).epsilon(0.001));
  // A run of 8 letters counts its first two characters.
  CHECK(estimate_password_bits(Secret("abcdefgh")) == Approx(2 * 4.7004).epsilon(0.001));
  CHECK(estimate_password_bits(Secret("aaaaaaaa")) == Approx(2 * 4.7004).epsilon(0.001));
}
