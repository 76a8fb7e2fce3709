#include "ca/crl.h"

#include <openssl/pem.h>

namespace onboard::ca {
namespace {

Result<ossl::Ptr<X509_REVOKED>> make_entry(const RevokedEntry& entry) {
  BIGNUM* raw = nullptr;
  if (entry.serial_hex.empty() || entry.serial_hex.size() > 40 ||
      BN_hex2bn(&raw, entry.serial_hex.c_str()) != static_cast<int>(entry.serial_hex.size())) {
    BN_free(raw);
    ossl::clear_errors();
    return make_error(Errc::invalid_input, "bad serial number '" + entry.serial_hex + "'");
  }
  ossl::Ptr<BIGNUM> bn(raw);
  ossl::Ptr<X509_REVOKED> revoked(X509_REVOKED_new());
  ossl::Ptr<ASN1_INTEGER> serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  ossl::Ptr<ASN1_TIME> when(ASN1_TIME_set(nullptr, static_cast<time_t>(entry.revoked_at)));
  if (!revoked || !serial || !when ||
      X509_REVOKED_set_serialNumber(revoked.get(), serial.get()) != 1 ||
      X509_REVOKED_set_revocationDate(revoked.get(), when.get()) != 1) {
    return ossl::error("cannot build a CRL entry");
  }
  // RFC 5280 5.3.1: the reason code should be absent rather than 'unspecified'.
  if (entry.reason != RevocationReason::unspecified) {
    ossl::Ptr<ASN1_ENUMERATED> code(ASN1_ENUMERATED_new());
    if (!code || ASN1_ENUMERATED_set(code.get(), static_cast<long>(entry.reason)) != 1 ||
        X509_REVOKED_add1_ext_i2d(revoked.get(), NID_crl_reason, code.get(), 0, 0) != 1) {
      return ossl::error("cannot set a CRL reason code");
    }
  }
  return revoked;
}

}  // namespace

Result<ossl::Ptr<X509_CRL>> build_crl(const X509* issuer, const Signer& signer,
                                      std::span<const RevokedEntry> revoked,
                                      const CrlParams& params) {
  if (params.next_update <= params.this_update) {
    return make_error(Errc::invalid_input, "CRL next update must come after this update");
  }
  if (X509_check_private_key(issuer, signer.public_key()) != 1) {
    ossl::clear_errors();
    return make_error(Errc::internal, "the signing key does not belong to the CRL issuer");
  }
  ossl::Ptr<X509_CRL> crl(X509_CRL_new());
  ossl::Ptr<ASN1_TIME> this_update(ASN1_TIME_set(nullptr, static_cast<time_t>(params.this_update)));
  ossl::Ptr<ASN1_TIME> next_update(ASN1_TIME_set(nullptr, static_cast<time_t>(params.next_update)));
  if (!crl || !this_update || !next_update ||
      X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer)) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), this_update.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next_update.get()) != 1) {
    return ossl::error("cannot build the CRL");
  }
  for (const auto& entry : revoked) {
    ONBOARD_TRY(auto item, make_entry(entry));
    if (X509_CRL_add0_revoked(crl.get(), item.get()) != 1)
      return ossl::error("cannot add a CRL entry");
    item.release();
  }

  ossl::Ptr<ASN1_INTEGER> number(ASN1_INTEGER_new());
  if (!number || ASN1_INTEGER_set_uint64(number.get(), params.crl_number) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, 0) != 1) {
    return ossl::error("cannot set the CRL number");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, const_cast<X509*>(issuer), nullptr, nullptr, crl.get(), 0);
  ossl::Ptr<X509_EXTENSION> aki(
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!aki || X509_CRL_add_ext(crl.get(), aki.get(), -1) != 1) {
    return ossl::error("cannot set the CRL authority key identifier");
  }
  if (X509_CRL_sort(crl.get()) != 1) return ossl::error("cannot sort the CRL");
  ONBOARD_CHECK(signer.sign(crl.get()));
  return crl;
}

std::string crl_to_pem(const X509_CRL* crl) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_CRL(bio.get(), const_cast<X509_CRL*>(crl)) != 1) {
    ossl::clear_errors();
    return {};
  }
  return ossl::mem_contents(bio.get());
}

std::string crl_to_der(const X509_CRL* crl) {
  unsigned char* der = nullptr;
  int len = i2d_X509_CRL(const_cast<X509_CRL*>(crl), &der);
  if (len <= 0) {
    ossl::clear_errors();
    return {};
  }
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

Result<ossl::Ptr<X509_CRL>> crl_from_pem(std::string_view pem) {
  auto bio = ossl::mem_reader(pem);
  ossl::Ptr<X509_CRL> crl(bio ? PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)
                              : nullptr);
  if (!crl) return ossl::error(Errc::invalid_input, "not a PEM CRL");
  return crl;
}

Result<std::vector<ossl::Ptr<X509_CRL>>> crls_from_pem(std::string_view pem) {
  auto bio = ossl::mem_reader(pem);
  std::vector<ossl::Ptr<X509_CRL>> crls;
  while (bio) {
    ossl::Ptr<X509_CRL> crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
    if (!crl) break;
    crls.push_back(std::move(crl));
  }
  ossl::clear_errors();  // the end of the text
  if (crls.empty()) return make_error(Errc::invalid_input, "not a PEM CRL");
  return crls;
}

}  // namespace onboard::ca
