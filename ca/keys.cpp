#include "ca/keys.h"

#include <openssl/core_names.h>
#include <openssl/pem.h>

#include <array>
#include <cstring>

namespace onboard::ca {
namespace {

struct AlgInfo {
  KeyAlg alg;
  std::string_view name;
};
constexpr std::array<AlgInfo, 6> kAlgs{{{KeyAlg::rsa2048, "rsa2048"},
                                        {KeyAlg::rsa3072, "rsa3072"},
                                        {KeyAlg::rsa4096, "rsa4096"},
                                        {KeyAlg::p256, "p256"},
                                        {KeyAlg::p384, "p384"},
                                        {KeyAlg::ed25519, "ed25519"}}};

std::string ec_group_name(const EVP_PKEY* key) {
  char name[64] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name, &len) !=
      1) {
    ossl::clear_errors();
    return {};
  }
  return std::string(name, len);
}

// The passphrase callback: hands over the passphrase, or fails instead of prompting on a terminal.
int passphrase_cb(char* buf, int size, int /*rwflag*/, void* userdata) {
  const auto* secret = static_cast<const Secret*>(userdata);
  if (secret == nullptr || secret->empty() || secret->size() > static_cast<std::size_t>(size))
    return -1;
  std::memcpy(buf, secret->view().data(), secret->size());
  return static_cast<int>(secret->size());
}

}  // namespace

std::optional<KeyAlg> parse_key_alg(std::string_view name) noexcept {
  for (const auto& a : kAlgs) {
    if (a.name == name) return a.alg;
  }
  return std::nullopt;
}

std::string_view key_alg_name(KeyAlg alg) noexcept {
  for (const auto& a : kAlgs) {
    if (a.alg == alg) return a.name;
  }
  return "unknown";
}

Result<ossl::Ptr<EVP_PKEY>> generate_key(KeyAlg alg) {
  EVP_PKEY* key = nullptr;
  switch (alg) {
    case KeyAlg::rsa2048:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048});
      break;
    case KeyAlg::rsa3072:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{3072});
      break;
    case KeyAlg::rsa4096:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{4096});
      break;
    case KeyAlg::p256:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case KeyAlg::p384:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
      break;
    case KeyAlg::ed25519:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
  }
  if (key == nullptr)
    return ossl::error("cannot generate a " + std::string(key_alg_name(alg)) + " key");
  return ossl::Ptr<EVP_PKEY>(key);
}

bool is_rsa(const EVP_PKEY* key) noexcept { return EVP_PKEY_is_a(key, "RSA") == 1; }

std::string describe_key(const EVP_PKEY* key) {
  if (is_rsa(key)) return "RSA-" + std::to_string(EVP_PKEY_get_bits(key));
  if (EVP_PKEY_is_a(key, "EC") == 1) {
    std::string group = ec_group_name(key);
    // OpenSSL names the NIST curves by their SECG/X9.62 names; operators know them as P-256/P-384.
    if (group == "prime256v1") group = "P-256";
    if (group == "secp384r1") group = "P-384";
    return "EC " + (group.empty() ? std::string("(unknown curve)") : group);
  }
  if (EVP_PKEY_is_a(key, "ED25519") == 1) return "Ed25519";
  const char* type = EVP_PKEY_get0_type_name(key);
  return type != nullptr ? type : "unknown key type";
}

Status check_acceptable_key(const EVP_PKEY* key) {
  if (key == nullptr) return make_error(Errc::invalid_input, "no public key");
  if (is_rsa(key)) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits < 2048) {
      return make_error(Errc::invalid_input,
                        "RSA key of " + std::to_string(bits) +
                            " bits is too weak; at least 2048 bits are required");
    }
    if (bits > 16384) return make_error(Errc::invalid_input, "RSA key larger than 16384 bits");
    return ok_status();
  }
  if (EVP_PKEY_is_a(key, "EC") == 1) {
    std::string group = ec_group_name(key);
    // OpenSSL reports NIST names for these curves ("P-256") or the SECG ones ("prime256v1").
    if (group == "P-256" || group == "prime256v1" || group == "P-384" || group == "secp384r1") {
      return ok_status();
    }
    return make_error(Errc::invalid_input,
                      "EC curve " + (group.empty() ? std::string("(explicit parameters)") : group) +
                          " is not accepted; use P-256 or P-384");
  }
  if (EVP_PKEY_is_a(key, "ED25519") == 1) return ok_status();
  return make_error(
      Errc::invalid_input,
      "key type " + describe_key(key) + " is not accepted; use RSA, EC P-256/P-384 or Ed25519");
}

const EVP_MD* signing_digest(const EVP_PKEY* key) noexcept {
  if (EVP_PKEY_is_a(key, "ED25519") == 1) return nullptr;
  if (EVP_PKEY_is_a(key, "EC") == 1 && EVP_PKEY_get_bits(key) >= 384) return EVP_sha384();
  return EVP_sha256();
}

Result<Secret> private_key_to_pem(const EVP_PKEY* key, const Secret* passphrase) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_secmem()));
  if (!bio) return ossl::error("cannot allocate a memory buffer");
  const EVP_CIPHER* cipher = nullptr;
  const char* pass = nullptr;
  int pass_len = 0;
  if (passphrase != nullptr && !passphrase->empty()) {
    cipher = EVP_aes_256_cbc();
    pass = passphrase->c_str();
    pass_len = static_cast<int>(passphrase->size());
  }
  if (PEM_write_bio_PKCS8PrivateKey(bio.get(), key, cipher, pass, pass_len, nullptr, nullptr) !=
      1) {
    return ossl::error("cannot encode the private key");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return Secret(std::string_view(data, static_cast<std::size_t>(size)));
}

std::string public_key_to_pem(const EVP_PKEY* key) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    ossl::clear_errors();
    return {};
  }
  return ossl::mem_contents(bio.get());
}

Result<ossl::Ptr<EVP_PKEY>> private_key_from_pem(std::string_view pem, const Secret* passphrase) {
  auto bio = ossl::mem_reader(pem);
  if (!bio) return ossl::error("cannot read the private key");
  ossl::Ptr<EVP_PKEY> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_cb, const_cast<Secret*>(passphrase)));
  if (key) return key;
  const bool encrypted = pem.find("ENCRYPTED") != std::string_view::npos;
  if (encrypted) {
    ossl::clear_errors();
    return make_error(Errc::bad_passphrase,
                      passphrase == nullptr || passphrase->empty()
                          ? "the private key is encrypted and no passphrase was given"
                          : "wrong passphrase for the private key");
  }
  return ossl::error(Errc::invalid_input, "not a readable PEM private key");
}

bool same_public_key(const EVP_PKEY* a, const EVP_PKEY* b) noexcept {
  bool same = EVP_PKEY_eq(a, b) == 1;
  ossl::clear_errors();
  return same;
}

}  // namespace onboard::ca
