#include "core/x509.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/encoding.h"
#include "core/ossl.h"

namespace onboard {
namespace {

std::string common_name(const X509_NAME* name) {
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return {};
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, value);
  if (len < 0) {
    ossl::clear_errors();
    return {};
  }
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

}  // namespace

std::string sha256_fingerprint(const X509* cert) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &length) != 1) {
    ossl::clear_errors();
    return {};
  }
  return hex_encode({digest, length});
}

std::string serial_hex(const X509* cert) {
  std::string out;
  if (ossl::Ptr<BIGNUM> bn{ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)}) {
    if (char* text = BN_bn2hex(bn.get())) {
      out = text;
      OPENSSL_free(text);
    }
  }
  ossl::clear_errors();
  return out;
}

std::string subject_common_name(const X509* cert) {
  return common_name(X509_get_subject_name(cert));
}

std::optional<UnixTime> to_unix_time(const ASN1_TIME* time) {
  struct tm tm {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    ossl::clear_errors();
    return std::nullopt;
  }
  return static_cast<UnixTime>(timegm(&tm));
}

}  // namespace onboard
