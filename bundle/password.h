// Bundle passwords: generated ones, and the rule an operator-supplied one must pass.
//
// The archive format makes offline guessing cheap (WinZip AES: PBKDF2-HMAC-SHA1, 1000 iterations,
// and a 16-bit check value), so the password alone has to resist a well-equipped attacker.
#pragma once

#include <optional>
#include <string>

#include "core/error.h"
#include "core/secret.h"

namespace onboard::bundle {

// A generated password carries 28 characters of the RFC 4648 base32 alphabet (A-Z, 2-7; no
// 0/1/8/9, so no O/0 or I/1 confusion), each drawn uniformly from the OS CSPRNG through RAND_bytes:
// 28 x 5 = 140 bits. They are shown as seven groups of four joined by '-', e.g.
// "K7QM-2XRA-...". The dashes are part of the password (7-Zip must be given it as shown).
inline constexpr int kGeneratedPasswordBits = 140;
inline constexpr std::size_t kGeneratedPasswordLength = 7 * 4 + 6;

// Errors: crypto (the random generator failed).
Result<Secret> generate_password();

// The smallest operator-supplied password and the smallest strength estimate accepted.
inline constexpr std::size_t kMinPasswordLength = 16;
inline constexpr double kMinPasswordBits = 80.0;

// Why `password` is too weak to protect a bundle, in words for the operator, or nullopt.
// The rule, in order:
//  1. Only printable ASCII (space to '~'). Zip tools disagree about how to encode other
//     characters, and a password the recipient cannot type back is a lost bundle.
//  2. At least 16 characters.
//  3. At least two character classes of: lower-case, upper-case, digits, other. One class is the
//     shape of a word, a phrase in one case, or a PIN.
//  4. An estimate of at least 80 bits: E = L x log2(P), where P is the number of characters in
//     the classes used (26, 26, 10, 33) and L counts only the characters an attacker could not
//     predict from what came before:
//       - a repeat of an earlier chunk of 3 or more characters counts as 1 ("abcdabcd" is 5),
//       - a character equal to the previous one counts 0 ("aaaa" is 1),
//       - a character continuing a run of +1 or -1 steps counts 0 ("abcd", "4321" are 2).
// This is a floor, not a guarantee: without a dictionary, a phrase of common words is estimated
// far above its real strength. The message never echoes the password.
std::optional<std::string> password_problem(const Secret& password);

// The estimate of rule 4 alone, for tests and for telling the operator how far off they are.
double estimate_password_bits(const Secret& password);

}  // namespace onboard::bundle
