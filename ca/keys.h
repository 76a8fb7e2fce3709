// Key algorithms, generation, and PKCS#8 PEM encoding of private keys.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/ossl.h"
#include "core/secret.h"

namespace onboard::ca {

enum class KeyAlg { rsa2048, rsa3072, rsa4096, p256, p384, ed25519 };

// "rsa2048|rsa3072|rsa4096|p256|p384|ed25519", the names every --key-alg option takes.
inline constexpr std::string_view kKeyAlgNames = "rsa2048|rsa3072|rsa4096|p256|p384|ed25519";
std::optional<KeyAlg> parse_key_alg(std::string_view name) noexcept;
std::string_view key_alg_name(KeyAlg alg) noexcept;

Result<ossl::Ptr<EVP_PKEY>> generate_key(KeyAlg alg);

// The public key's kind, e.g. "RSA-2048", "EC P-256", "Ed25519".
std::string describe_key(const EVP_PKEY* key);

// Accepts the keys the project will certify: RSA of 2048 to 16384 bits, EC on P-256 or P-384,
// Ed25519. Anything else is Errc::invalid_input with the reason.
Status check_acceptable_key(const EVP_PKEY* key);

bool is_rsa(const EVP_PKEY* key) noexcept;

// The digest to sign with for `key`: nullptr for Ed25519 (it hashes internally), SHA-384 for P-384,
// SHA-256 otherwise.
const EVP_MD* signing_digest(const EVP_PKEY* key) noexcept;

// PKCS#8 PEM; encrypted with AES-256-CBC (PBKDF2) when a passphrase is given.
Result<Secret> private_key_to_pem(const EVP_PKEY* key, const Secret* passphrase = nullptr);
std::string public_key_to_pem(const EVP_PKEY* key);

// Reads a PEM private key. Never prompts: an encrypted key without a passphrase, or with a wrong
// one, is Errc::bad_passphrase.
Result<ossl::Ptr<EVP_PKEY>> private_key_from_pem(std::string_view pem,
                                                 const Secret* passphrase = nullptr);

// True when `a` and `b` hold the same public key.
bool same_public_key(const EVP_PKEY* a, const EVP_PKEY* b) noexcept;

}  // namespace onboard::ca
