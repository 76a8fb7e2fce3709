// The certificate authority as it lives in a data directory:
//   <dir>/ca/root.crt      the self-signed root (0644: the broker and clients trust it)
//   <dir>/ca/root.key      its PKCS#8 key (0600, optionally passphrase-encrypted)
//   <dir>/ca/issuing.crt   an optional intermediate that signs devices and servers
//   <dir>/ca/issuing.key
//   <dir>/ca/ca.json       settings: the CRL distribution point URLs; for keys in a PKCS#11
//                          token, their URIs and the module (never the PIN), and no .key files
// With an intermediate, the root key is needed only to make the intermediate and to sign the
// root's own CRL (which says whether the intermediate is revoked): it can be kept offline and
// brought out for that.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "ca/certificate.h"
#include "ca/keys.h"
#include "ca/signer.h"
#include "core/secret.h"

namespace onboard::ca {

struct CaInitOptions {
  std::string common_name = "mosquitto-onboard Root CA";
  std::string organization;
  // CA keys outlive device keys by years: 3072-bit RSA by default (NIST SP 800-57 past 2030).
  KeyAlg root_key_alg = KeyAlg::rsa3072;
  int root_days = 3650;
  bool intermediate = false;
  std::string intermediate_common_name = "mosquitto-onboard Issuing CA";
  KeyAlg intermediate_key_alg = KeyAlg::rsa3072;
  int intermediate_days = 1825;
  std::string crl_url;  // written into device and server certificates when set
  // Written into the intermediate's certificate: where the root's CRL is published. Empty with
  // an intermediate and a crl_url: derived from crl_url (derived_root_crl_url).
  std::string root_crl_url;
  const Secret* passphrase = nullptr;  // encrypts the CA key files when set
  // A PKCS#11 URI (pkcs11:token=...;object=...): the keys are generated in that token instead of
  // files, the root's labelled `object`, an intermediate's `object`-issuing; `passphrase` is then
  // the token's user PIN.
  std::string token_key_uri;
  std::string pkcs11_module;  // the module that reaches the token (.so path)
};

// Where the CA keys are when they are in a PKCS#11 token (from ca.json).
struct TokenKeys {
  std::string module;
  std::string root_uri;
  std::string issuing_uri;  // empty without an intermediate
};

struct CaPaths {
  explicit CaPaths(const std::filesystem::path& data_dir);
  std::filesystem::path dir, root_cert, root_key, issuing_cert, issuing_key, settings;
};

// What issuance returns: the certificate and what the registry stores about it.
struct IssuedCertificate {
  ossl::Ptr<X509> cert;
  std::string pem;
  CertificateInfo info;
};

class Authority {
 public:
  // Creates a new CA under `data_dir`. Refuses (Errc::conflict) if one exists already; on failure
  // nothing of the new CA is left behind.
  static Result<Authority> create(const std::filesystem::path& data_dir,
                                  const CaInitOptions& options, UnixTime now);
  // Opens an existing CA's certificates; the signing key is loaded by load_signing_key().
  static Result<Authority> open(const std::filesystem::path& data_dir);

  // Loads the issuing CA's private key (the intermediate's if there is one, else the root's):
  // from its file, or opens it in its PKCS#11 token with `passphrase` as the PIN.
  Status load_signing_key(const Secret* passphrase);
  bool can_sign() const noexcept { return signer_ != nullptr; }

  const X509* root() const noexcept { return root_.get(); }
  const X509* issuer() const noexcept { return issuing_ ? issuing_.get() : root_.get(); }
  bool has_intermediate() const noexcept { return issuing_ != nullptr; }
  // Issuing CA first, then the root: what a relying party needs to build the chain.
  std::string chain_pem() const;
  const std::string& crl_url() const noexcept { return crl_url_; }
  const std::string& root_crl_url() const noexcept { return root_crl_url_; }
  const CaPaths& paths() const noexcept { return paths_; }
  const Signer* signer() const noexcept { return signer_.get(); }
  // Set when the CA keys are in a PKCS#11 token.
  const std::optional<TokenKeys>& token_keys() const noexcept { return token_keys_; }

  // The root's own key, for signing the root CRL when there is an intermediate (without one the
  // root is the signing CA and load_signing_key() loads it). Errc::not_found when the key file
  // is not here (kept offline).
  Result<std::unique_ptr<Signer>> load_root_signer(const Secret* passphrase) const;

  // Issues a device or server certificate under the issuing CA, with the CRL distribution point
  // filled in. Requires load_signing_key().
  Result<IssuedCertificate> issue(CertificateRequest request) const;

 private:
  explicit Authority(CaPaths paths) : paths_(std::move(paths)) {}

  CaPaths paths_;
  ossl::Ptr<X509> root_;
  ossl::Ptr<X509> issuing_;
  std::string crl_url_;
  std::string root_crl_url_;
  std::optional<TokenKeys> token_keys_;
  std::unique_ptr<Signer> signer_;
};

// With options.token_key_uri: checks that the token is there, takes the PIN and has no key of the
// new keys' labels, so that a command can fail before it has made anything (Errc::not_found,
// Errc::bad_passphrase, Errc::conflict). Else does nothing.
Status check_token_access(const CaInitOptions& options);

// The root CRL's URL next to the issuing CA's: the last path segment of `crl_url` becomes
// "root-crl" (keeping a ".pem" ending), e.g. http://ca.example/crl -> http://ca.example/root-crl,
// which is where 'onboardctl serve' publishes it. Empty for an empty crl_url.
std::string derived_root_crl_url(std::string_view crl_url);

// Builds the IssuedCertificate view of a certificate.
IssuedCertificate make_issued(ossl::Ptr<X509> cert);

}  // namespace onboard::ca
