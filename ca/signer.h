// The CA key behind a seam: today a key loaded from a file, later a PKCS#11 token.
#pragma once

#include "core/error.h"
#include "core/ossl.h"

namespace onboard::ca {

class Signer {
 public:
  virtual ~Signer() = default;
  // Borrowed; lives as long as the Signer.
  virtual const EVP_PKEY* public_key() const = 0;
  virtual Status sign(X509* cert) const = 0;
  virtual Status sign(X509_CRL* crl) const = 0;
  virtual Status sign(X509_REQ* req) const = 0;
};

// Signs with a private key held in memory.
class KeySigner final : public Signer {
 public:
  explicit KeySigner(ossl::Ptr<EVP_PKEY> key) : key_(std::move(key)) {}
  const EVP_PKEY* public_key() const override { return key_.get(); }
  Status sign(X509* cert) const override;
  Status sign(X509_CRL* crl) const override;
  Status sign(X509_REQ* req) const override;

 private:
  ossl::Ptr<EVP_PKEY> key_;
};

}  // namespace onboard::ca
