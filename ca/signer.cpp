#include "ca/signer.h"

#include "ca/keys.h"

namespace onboard::ca {

Status KeySigner::sign(X509* cert) const {
  if (X509_sign(cert, key_.get(), signing_digest(key_.get())) <= 0) {
    return ossl::error("cannot sign the certificate");
  }
  return ok_status();
}

Status KeySigner::sign(X509_CRL* crl) const {
  if (X509_CRL_sign(crl, key_.get(), signing_digest(key_.get())) <= 0) {
    return ossl::error("cannot sign the CRL");
  }
  return ok_status();
}

Status KeySigner::sign(X509_REQ* req) const {
  if (X509_REQ_sign(req, key_.get(), signing_digest(key_.get())) <= 0) {
    return ossl::error("cannot sign the certificate request");
  }
  return ok_status();
}

}  // namespace onboard::ca
