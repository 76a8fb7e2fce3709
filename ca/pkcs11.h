// A CA key inside a PKCS#11 token (a hardware security module, a smart card, SoftHSM): generated
// there, never extractable, used through the token's own signing operation. Everything PKCS#11 is
// in pkcs11.cpp, behind the Signer seam; the rest of the CA does not know where its key lives.
//
// The path chosen is the raw PKCS#11 API (the module is loaded with dlopen, C_GenerateKeyPair and
// C_Sign are called directly) with OpenSSL doing all the ASN.1: see docs/architecture.md for why
// not libp11 or the pkcs11 ENGINE.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ca/keys.h"
#include "ca/signer.h"
#include "core/secret.h"

namespace onboard::ca {

// The parts of an RFC 7512 URI that name a key: "pkcs11:token=CA;object=root" (path attributes
// separated by ';', percent-encoded). A PIN in the URI (pin-value) is refused: a URI ends up on
// command lines and in ca.json.
struct Pkcs11Uri {
  std::string token;        // the token's label
  std::string serial;       // the token's serial number
  std::string object;       // the key's label (CKA_LABEL)
  std::string id;           // the key's CKA_ID, raw bytes
  std::string module_path;  // the query attribute module-path, if given
};

bool is_pkcs11_uri(std::string_view text) noexcept;
// Errc::invalid_input naming what is wrong. A token (or serial) and an object (or id) are required.
Result<Pkcs11Uri> parse_pkcs11_uri(std::string_view text);
// The canonical text: path attributes percent-encoded, module-path left out (the module is kept
// beside the URI).
std::string format_pkcs11_uri(const Pkcs11Uri& uri);

// The module to load: ONBOARD_PKCS11_MODULE when set (a module that moved), else `configured`.
std::string pkcs11_module_path(const std::string& configured);

// Signs with a private key held in a token. Thread-safe: the token's session is used by one
// signature at a time.
class Pkcs11Signer final : public Signer {
 public:
  // Opens the token the URI names, logs in with `pin` and finds the key pair. Errors:
  // Errc::not_found for a module that cannot be loaded, a token that is not present or a key that
  // is not in it; Errc::bad_passphrase for a wrong or locked PIN.
  static Result<std::unique_ptr<Pkcs11Signer>> open(const std::string& module, const Pkcs11Uri& uri,
                                                    const Secret& pin);
  // Generates a key pair in the token: the private key sensitive and never extractable, labelled
  // uri.object, with a random CKA_ID unless the URI gives one. Errc::conflict when the token
  // already holds a key of that label or id. Ed25519 is refused (few tokens do EdDSA).
  static Result<std::unique_ptr<Pkcs11Signer>> generate(const std::string& module,
                                                        const Pkcs11Uri& uri, const Secret& pin,
                                                        KeyAlg alg);
  // Opens the token, logs in and checks that no key has one of `new_labels` yet: lets a command
  // fail on a wrong PIN, a missing token or a label in use before it has made anything.
  static Status check_access(const std::string& module, const Pkcs11Uri& uri, const Secret& pin,
                             const std::vector<std::string>& new_labels);

  ~Pkcs11Signer() override;
  Pkcs11Signer(const Pkcs11Signer&) = delete;
  Pkcs11Signer& operator=(const Pkcs11Signer&) = delete;

  const EVP_PKEY* public_key() const override;
  Status sign(X509* cert) const override;
  Status sign(X509_CRL* crl) const override;
  Status sign(X509_REQ* req) const override;

  // The URI that names exactly this key (token label and serial, object label and id).
  std::string uri() const;
  // Deletes the key pair from the token: undoes generate() when what follows it fails.
  Status destroy();

  struct Impl;

 private:
  explicit Pkcs11Signer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace onboard::ca
