#include "ca/csr.h"

#include <openssl/pem.h>

#include "ca/keys.h"
#include "core/identity.h"

namespace onboard::ca {

Result<ossl::Ptr<X509_REQ>> csr_from_pem(std::string_view pem) {
  if (pem.find("-----BEGIN CERTIFICATE REQUEST-----") == std::string_view::npos &&
      pem.find("-----BEGIN NEW CERTIFICATE REQUEST-----") == std::string_view::npos) {
    return make_error(Errc::invalid_input, "malformed CSR: no PEM 'CERTIFICATE REQUEST' block");
  }
  auto bio = ossl::mem_reader(pem);
  ossl::Ptr<X509_REQ> req(bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr)
                              : nullptr);
  if (!req) return ossl::error(Errc::invalid_input, "malformed CSR");
  return req;
}

std::string csr_to_pem(const X509_REQ* req) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), const_cast<X509_REQ*>(req)) != 1) {
    ossl::clear_errors();
    return {};
  }
  return ossl::mem_contents(bio.get());
}

Result<DeviceCsr> check_device_csr(const X509_REQ* req) {
  const EVP_PKEY* key = X509_REQ_get0_pubkey(const_cast<X509_REQ*>(req));
  if (key == nullptr) return ossl::error(Errc::invalid_input, "CSR has no readable public key");
  // Check the key before the signature: verifying with an unsupported key type fails less clearly.
  ONBOARD_CHECK(check_acceptable_key(key));
  if (X509_REQ_verify(const_cast<X509_REQ*>(req), const_cast<EVP_PKEY*>(key)) != 1) {
    ossl::clear_errors();
    return make_error(Errc::invalid_input, "CSR signature does not match its public key");
  }
  const X509_NAME* subject = X509_REQ_get_subject_name(req);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return make_error(Errc::invalid_input, "CSR subject has no common name (CN)");
  if (X509_NAME_get_index_by_NID(subject, NID_commonName, index) >= 0) {
    return make_error(Errc::invalid_input, "CSR subject has more than one common name (CN)");
  }
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  std::string cn(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                 static_cast<std::size_t>(ASN1_STRING_length(value)));
  if (auto problem = device_id_problem(cn)) {
    return make_error(Errc::invalid_input, "CSR common name is not a valid device id: " + *problem);
  }
  ossl::Ptr<EVP_PKEY> owned(EVP_PKEY_dup(const_cast<EVP_PKEY*>(key)));
  if (!owned) return ossl::error("cannot copy the CSR's public key");
  return DeviceCsr{std::move(cn), std::move(owned)};
}

Result<DeviceCsr> read_device_csr(std::string_view pem) {
  ONBOARD_TRY(auto req, csr_from_pem(pem));
  return check_device_csr(req.get());
}

Result<ossl::Ptr<X509_REQ>> make_csr(const EVP_PKEY* key, std::string_view common_name) {
  ossl::Ptr<X509_REQ> req(X509_REQ_new());
  if (!req) return ossl::error("cannot allocate a CSR");
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), const_cast<EVP_PKEY*>(key)) != 1 ||
      X509_REQ_sign(req.get(), const_cast<EVP_PKEY*>(key), signing_digest(key)) <= 0) {
    return ossl::error("cannot build the CSR");
  }
  return req;
}

}  // namespace onboard::ca
