#include "ca/verify.h"

namespace onboard::ca {

VerifyOutcome verify_certificate(const X509* leaf, std::span<X509* const> intermediates,
                                 std::span<X509* const> roots, std::span<X509_CRL* const> crls,
                                 const VerifyOptions& options) {
  auto failure = [](std::string what) {
    ossl::clear_errors();
    return VerifyOutcome{X509_V_ERR_UNSPECIFIED, std::move(what)};
  };
  ossl::Ptr<X509_STORE> store(X509_STORE_new());
  ossl::Ptr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  ossl::Ptr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  if (!store || !ctx || !untrusted) return failure("cannot allocate a verification context");
  for (X509* root : roots) {
    if (X509_STORE_add_cert(store.get(), root) != 1) return failure("cannot add a trusted root");
  }
  for (X509_CRL* crl : crls) {
    if (X509_STORE_add_crl(store.get(), crl) != 1) return failure("cannot add a CRL");
  }
  for (X509* cert : intermediates) {
    if (X509_up_ref(cert) != 1) return failure("cannot reference an intermediate");
    if (sk_X509_push(untrusted.get(), cert) == 0) {
      X509_free(cert);
      return failure("cannot add an intermediate");
    }
  }
  if (X509_STORE_CTX_init(ctx.get(), store.get(), const_cast<X509*>(leaf), untrusted.get()) != 1) {
    return failure("cannot initialise verification");
  }
  unsigned long flags = X509_V_FLAG_X509_STRICT;
  if (options.check_crl) flags |= X509_V_FLAG_CRL_CHECK;
  X509_STORE_CTX_set_flags(ctx.get(), flags);
  if (options.at != 0) X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(options.at));
  if (options.purpose == Purpose::tls_client)
    X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (options.purpose == Purpose::tls_server)
    X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);

  int rc = X509_verify_cert(ctx.get());
  int code = X509_STORE_CTX_get_error(ctx.get());
  ossl::clear_errors();
  if (rc == 1) return VerifyOutcome{};
  if (code == X509_V_OK) code = X509_V_ERR_UNSPECIFIED;
  return VerifyOutcome{code, X509_verify_cert_error_string(code)};
}

}  // namespace onboard::ca
