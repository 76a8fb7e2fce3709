// The certificate authority as it lives in a data directory:
//   <dir>/ca/root.crt      the self-signed root (0644: the broker and clients trust it)
//   <dir>/ca/root.key      its PKCS#8 key (0600, optionally passphrase-encrypted)
//   <dir>/ca/issuing.crt   an optional intermediate that signs devices and servers: the current
//   <dir>/ca/issuing.key   issuing CA
//   <dir>/ca/issuing-<SERIAL>.crt  an earlier issuing CA that 'ca rotate' replaced, kept (with
//   <dir>/ca/issuing-<SERIAL>.key  its key) while its devices are in use: it is in chain.pem, so
//                          they still verify, and it still signs their CRL (one per kept issuer
//                          in crl.pem). Retired by moving both files away (docs: "CA rotation").
//   <dir>/ca/chain.pem     what brokers (cafile) and devices trust: the current issuing CA, the
//                          kept earlier ones, then the root (chain_pem(); written by init and
//                          rotate)
//   <dir>/ca/ca.json       settings: the CRL distribution point URLs, the OCSP URL; for keys
//                          in a PKCS#11 token, their URIs and the module (never the PIN), and
//                          no .key files
//   <dir>/ca/ocsp.crt      the delegated OCSP responder 'onboardctl serve' makes (ops/ocsp.h)
//   <dir>/ca/ocsp.key
// With an intermediate, the root key is needed only to make the intermediate and to sign the
// root's own CRL (which says whether the intermediate is revoked): it can be kept offline and
// brought out for that.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
  // Written into device and server certificates (Authority Information Access) when set.
  std::string ocsp_url;
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
  // The keys of earlier issuing CAs 'ca rotate' kept, by the CA's serial (upper-case hex).
  std::map<std::string, std::string> kept_uris;
};

struct CaPaths {
  explicit CaPaths(const std::filesystem::path& data_dir);
  std::filesystem::path dir, root_cert, root_key, issuing_cert, issuing_key, settings;
  // Where 'ca rotate' keeps the issuing CA it replaced, by its serial (upper-case hex).
  std::filesystem::path retired_cert(std::string_view serial_hex) const;
  std::filesystem::path retired_key(std::string_view serial_hex) const;
  std::filesystem::path chain() const { return dir / "chain.pem"; }
};

// An issuing CA that 'ca rotate' replaced, kept for the overlap: it verifies the devices it
// issued and signs their CRL, but issues nothing new.
struct RetiredIssuer {
  ossl::Ptr<X509> cert;
  std::filesystem::path cert_path, key_path;
  std::unique_ptr<Signer> signer;  // set by load_signing_key()
};

// What 'ca rotate' makes: a new issuing CA signed by the root.
struct RotateOptions {
  std::string common_name;  // empty: the current one's, with today's date (see rotate())
  KeyAlg key_alg = KeyAlg::rsa3072;
  int days = 1825;  // capped at the root's own expiry
  // Encrypts the new key file when set; for a CA whose keys are in a PKCS#11 token, the token's
  // user PIN (the new key is generated there).
  const Secret* passphrase = nullptr;
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
  // from its file, or opens it in its PKCS#11 token with `passphrase` as the PIN; and the
  // keys of the kept earlier issuing CAs (files, same passphrase), which sign their own CRLs.
  Status load_signing_key(const Secret* passphrase);
  bool can_sign() const noexcept { return signer_ != nullptr; }

  const X509* root() const noexcept { return root_.get(); }
  const X509* issuer() const noexcept { return issuing_ ? issuing_.get() : root_.get(); }
  bool has_intermediate() const noexcept { return issuing_ != nullptr; }
  // Earlier issuing CAs kept by 'ca rotate', newest first.
  const std::vector<RetiredIssuer>& retired() const noexcept { return retired_; }
  // Issuing CA first, then the kept earlier ones, then the root: what a relying party needs to
  // build the chain of any device still in use.
  std::string chain_pem() const;
  const std::string& crl_url() const noexcept { return crl_url_; }
  // The CRL distribution point of certificates the current issuing CA signs from now on. While
  // 'ca rotate' keeps earlier issuing CAs, each issuer's certificates need a URL of their own
  // that serves that issuer's CRL: crl_url()/<ISSUER SERIAL> (issuer_crl_url()). The plain
  // crl_url() then still serves the oldest kept issuer's, whose certificates carry it; a single
  // issuer issues with the plain URL. A crl_url() ending in ".pem" is a file holding every
  // issuer's CRL and stays as it is.
  std::string issuing_crl_url() const;
  const std::string& root_crl_url() const noexcept { return root_crl_url_; }
  const std::string& ocsp_url() const noexcept { return ocsp_url_; }
  // Sets (or, with an empty url, removes) the OCSP URL in the CA's settings for certificates
  // issued from now on; those issued before keep what they carry.
  static Status set_ocsp_url(const std::filesystem::path& data_dir, std::string_view url);
  const CaPaths& paths() const noexcept { return paths_; }
  const Signer* signer() const noexcept { return signer_.get(); }
  // Set when the CA keys are in a PKCS#11 token.
  const std::optional<TokenKeys>& token_keys() const noexcept { return token_keys_; }

  // The root's own key, for signing the root CRL when there is an intermediate (without one the
  // root is the signing CA and load_signing_key() loads it). Errc::not_found when the key file
  // is not here (kept offline).
  Result<std::unique_ptr<Signer>> load_root_signer(const Secret* passphrase) const;

  // Issues a device or server certificate under the issuing CA, with the CRL distribution point
  // and the OCSP URL filled in. Requires load_signing_key().
  Result<IssuedCertificate> issue(CertificateRequest request) const;

  // Replaces the issuing intermediate with a new one signed by the root (`root_signer`, from
  // load_root_signer()): the old certificate and key are kept as issuing-<SERIAL>.crt/.key and
  // become retired()[0]; new issuance uses the new one. For a CA whose keys are in a PKCS#11
  // token the new key is generated in that token (labelled "<root label>-issuing-<UTC time>",
  // never extractable), the old one stays there, and ca.json records both (the kept one under
  // "kept" by its CA's serial): no key file is written. Needs load_signing_key() first. Refuses
  // (Errc::invalid_input) a CA without an intermediate, where the root signs devices itself, and
  // a common name that an issuer of this CA already has (CRLs and the registry tell issuers apart
  // by name). On failure nothing on disk has changed. Does not write chain.pem or the CRL.
  Status rotate(const Signer& root_signer, const RotateOptions& options, UnixTime now);

 private:
  explicit Authority(CaPaths paths) : paths_(std::move(paths)) {}
  // rotate(): the current issuing CA and its signer become retired()[0].
  void keep_current_issuer(const std::filesystem::path& cert_path,
                           const std::filesystem::path& key_path);
  // rotate() in a token: issuing.crt replaced by `cert` (the old one kept as
  // issuing-<old_serial>.crt) and ca.json by settings naming `key_uri` as the issuing key and the
  // old key as kept. On failure nothing on disk has changed.
  Status replace_token_issuer(const X509* cert, const std::string& key_uri,
                              const std::string& old_serial);

  CaPaths paths_;
  ossl::Ptr<X509> root_;
  ossl::Ptr<X509> issuing_;
  std::vector<RetiredIssuer> retired_;
  std::string crl_url_;
  std::string root_crl_url_;
  std::string ocsp_url_;
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

// `crl_url` + "/" + `issuer_serial_hex`, where 'onboardctl serve' publishes that issuer's CRL
// alone; `crl_url` itself when it is empty or ends in ".pem".
std::string issuer_crl_url(std::string_view crl_url, std::string_view issuer_serial_hex);

// Builds the IssuedCertificate view of a certificate.
IssuedCertificate make_issued(ossl::Ptr<X509> cert);

}  // namespace onboard::ca
