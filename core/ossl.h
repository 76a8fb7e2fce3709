// One owner type for every OpenSSL object the project holds, and the bridge from OpenSSL's error
// queue to onboard::Error. Rules: a get0 result is borrowed and never stored; release() only after
// a set0/add0/push call that took ownership has succeeded.
#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"

namespace onboard::ossl {

template <class T>
struct Free;

#define ONBOARD_OSSL_FREE(type, fn)                    \
  template <>                                          \
  struct Free<type> {                                  \
    void operator()(type* p) const noexcept { fn(p); } \
  }
ONBOARD_OSSL_FREE(X509, X509_free);
ONBOARD_OSSL_FREE(X509_REQ, X509_REQ_free);
ONBOARD_OSSL_FREE(X509_CRL, X509_CRL_free);
ONBOARD_OSSL_FREE(X509_REVOKED, X509_REVOKED_free);
ONBOARD_OSSL_FREE(X509_EXTENSION, X509_EXTENSION_free);
ONBOARD_OSSL_FREE(X509_NAME, X509_NAME_free);
ONBOARD_OSSL_FREE(X509_STORE, X509_STORE_free);
ONBOARD_OSSL_FREE(X509_STORE_CTX, X509_STORE_CTX_free);
ONBOARD_OSSL_FREE(EVP_PKEY, EVP_PKEY_free);
ONBOARD_OSSL_FREE(EVP_PKEY_CTX, EVP_PKEY_CTX_free);
ONBOARD_OSSL_FREE(EVP_MD_CTX, EVP_MD_CTX_free);
ONBOARD_OSSL_FREE(EVP_CIPHER_CTX, EVP_CIPHER_CTX_free);
ONBOARD_OSSL_FREE(BIO, BIO_free_all);
ONBOARD_OSSL_FREE(BIGNUM, BN_free);
// ASN1_INTEGER, ASN1_ENUMERATED, ASN1_TIME, ASN1_OCTET_STRING... are all ASN1_STRING.
ONBOARD_OSSL_FREE(ASN1_STRING, ASN1_STRING_free);
ONBOARD_OSSL_FREE(GENERAL_NAME, GENERAL_NAME_free);
ONBOARD_OSSL_FREE(GENERAL_NAMES, GENERAL_NAMES_free);
ONBOARD_OSSL_FREE(STACK_OF(X509), [](STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); });
ONBOARD_OSSL_FREE(STACK_OF(X509_INFO),
                  [](STACK_OF(X509_INFO) * s) { sk_X509_INFO_pop_free(s, X509_INFO_free); });
#undef ONBOARD_OSSL_FREE

template <class T>
using Ptr = std::unique_ptr<T, Free<T>>;

// An Error carrying what we were doing and OpenSSL's own reason text; clears the error queue.
Error error(Errc code, std::string_view what);
// The same with Errc::crypto, the usual case.
inline Error error(std::string_view what) { return error(Errc::crypto, what); }
// Drops whatever is queued, for failures that are expected and already reported otherwise.
void clear_errors() noexcept;

// A read-only memory BIO over `data` (which must outlive the BIO).
Ptr<BIO> mem_reader(std::string_view data);
// Everything written to a memory BIO, as a string.
std::string mem_contents(BIO* bio);

}  // namespace onboard::ossl
