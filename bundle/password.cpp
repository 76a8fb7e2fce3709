#include "bundle/password.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string_view>

#include "core/ossl.h"

namespace onboard::bundle {
namespace {

constexpr std::string_view kBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr std::size_t kGroups = 7;
constexpr std::size_t kGroupLength = 4;
static_assert(kGroups * kGroupLength * 5 == kGeneratedPasswordBits);
static_assert(kGroups * kGroupLength + kGroups - 1 == kGeneratedPasswordLength);
static_assert(kGeneratedPasswordBits >= 128, "a bundle password carries at least 128 bits");

enum Class : unsigned { kLower = 1, kUpper = 2, kDigit = 4, kOther = 8 };

unsigned class_of(char c) {
  if (c >= 'a' && c <= 'z') return kLower;
  if (c >= 'A' && c <= 'Z') return kUpper;
  if (c >= '0' && c <= '9') return kDigit;
  return kOther;
}

unsigned classes_in(std::string_view s) {
  unsigned classes = 0;
  for (char c : s) classes |= class_of(c);
  return classes;
}

int pool_size(unsigned classes) {
  int pool = 0;
  if ((classes & kLower) != 0) pool += 26;
  if ((classes & kUpper) != 0) pool += 26;
  if ((classes & kDigit) != 0) pool += 10;
  if ((classes & kOther) != 0) pool += 33;  // the printable ASCII that is not a letter or digit
  return pool;
}

// The longest earlier occurrence (it may overlap position i) of the text starting at i.
std::size_t longest_repeat_at(std::string_view s, std::size_t i) {
  std::size_t best = 0;
  for (std::size_t j = 0; j < i; ++j) {
    std::size_t k = 0;
    while (i + k < s.size() && s[j + k] == s[i + k]) ++k;
    if (k > best) best = k;
  }
  return best;
}

// L of rule 4: the characters that could not be predicted from those before them.
std::size_t unpredictable_length(std::string_view s) {
  std::size_t count = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t repeat = longest_repeat_at(s, i);
    if (repeat >= 3) {
      count += 1;
      i += repeat;
      continue;
    }
    const int step = i >= 1 ? s[i] - s[i - 1] : 99;
    const int prior = i >= 2 ? s[i - 1] - s[i - 2] : 99;
    const bool same = step == 0;
    const bool run = (step == 1 || step == -1) && step == prior;
    if (!same && !run) count += 1;
    ++i;
  }
  return count;
}

}  // namespace

Result<Secret> generate_password() {
  std::array<unsigned char, kGroups * kGroupLength> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
    return ossl::error("cannot draw a password from the random generator");
  }
  std::array<char, kGeneratedPasswordLength> text{};
  std::size_t out = 0;
  for (std::size_t i = 0; i < random.size(); ++i) {
    if (i > 0 && i % kGroupLength == 0) text[out++] = '-';
    // 256 is a multiple of 32: the low five bits of a uniform byte are uniform.
    text[out++] = kBase32[random[i] & 0x1f];
  }
  Secret password(std::string_view(text.data(), text.size()));
  OPENSSL_cleanse(random.data(), random.size());
  OPENSSL_cleanse(text.data(), text.size());
  return password;
}

double estimate_password_bits(const Secret& password) {
  const std::string_view s = password.view();
  const int pool = pool_size(classes_in(s));
  if (pool == 0) return 0.0;
  return static_cast<double>(unpredictable_length(s)) * std::log2(static_cast<double>(pool));
}

std::optional<std::string> password_problem(const Secret& password) {
  const std::string_view s = password.view();
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c > 0x7e) {
      return "the password may only hold printable ASCII characters (space to '~'); character " +
             std::to_string(i + 1) + " is not one";
    }
  }
  if (s.size() < kMinPasswordLength) {
    return "the password has " + std::to_string(s.size()) + " characters; at least " +
           std::to_string(kMinPasswordLength) + " are needed";
  }
  const unsigned classes = classes_in(s);
  if (classes == kLower || classes == kUpper || classes == kDigit || classes == kOther) {
    return "the password uses a single kind of character; mix at least two of lower-case, "
           "upper-case, digits and symbols";
  }
  const double bits = estimate_password_bits(password);
  if (bits < kMinPasswordBits) {
    char estimate[16];
    std::snprintf(estimate, sizeof estimate, "%.0f", bits);
    return std::string(
               "the password is too predictable (repeats, runs like 'abcd' or '1234'); "
               "its strength is estimated at ") +
           estimate + " bits, at least " + std::to_string(static_cast<int>(kMinPasswordBits)) +
           " are needed. Prefer a generated password";
  }
  return std::nullopt;
}

}  // namespace onboard::bundle
