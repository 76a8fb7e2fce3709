#include "ca/certificate.h"

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <chrono>
#include <ctime>

#include "ca/keys.h"
#include "core/identity.h"

namespace onboard::ca {
namespace {

constexpr int kSerialBits = 128;

Status set_random_serial(X509* cert) {
  ossl::Ptr<BIGNUM> bn(BN_new());
  if (!bn) return ossl::error("cannot allocate a serial number");
  // A zero serial is invalid; with 128 random bits it is all but impossible, but never issue it.
  do {
    if (BN_rand(bn.get(), kSerialBits, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
      return ossl::error("cannot draw a random serial number");
    }
  } while (BN_is_zero(bn.get()));
  if (BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return ossl::error("cannot set the serial number");
  }
  return ok_status();
}

Result<ossl::Ptr<X509_NAME>> make_name(const CertificateRequest& request) {
  ossl::Ptr<X509_NAME> name(X509_NAME_new());
  if (!name) return ossl::error("cannot allocate a name");
  auto add = [&](const char* field, const std::string& value) -> Status {
    if (X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1) {
      return ossl::error(Errc::invalid_input, std::string("cannot set the subject ") + field);
    }
    return ok_status();
  };
  if (!request.organization.empty()) ONBOARD_CHECK(add("O", request.organization));
  ONBOARD_CHECK(add("CN", request.common_name));
  return name;
}

Status add_conf_extension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  ossl::Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext) return ossl::error(std::string("cannot build extension ") + OBJ_nid2sn(nid));
  if (X509_add_ext(cert, ext.get(), -1) != 1) {
    return ossl::error(std::string("cannot add extension ") + OBJ_nid2sn(nid));
  }
  return ok_status();
}

// Built from values rather than a config string, so that no name can inject another entry.
Status add_subject_alt_names(X509* cert, const CertificateRequest& request) {
  ossl::Ptr<GENERAL_NAMES> names(GENERAL_NAMES_new());
  if (!names) return ossl::error("cannot allocate subjectAltName");
  for (const auto& dns : request.dns_names) {
    ossl::Ptr<GENERAL_NAME> gn(GENERAL_NAME_new());
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    if (!gn || ia5 == nullptr ||
        ASN1_STRING_set(ia5, dns.data(), static_cast<int>(dns.size())) != 1) {
      ASN1_IA5STRING_free(ia5);
      return ossl::error("cannot encode DNS name");
    }
    GENERAL_NAME_set0_value(gn.get(), GEN_DNS, ia5);
    if (sk_GENERAL_NAME_push(names.get(), gn.get()) == 0) return ossl::error("cannot add DNS name");
    gn.release();
  }
  for (const auto& ip : request.ip_addresses) {
    ossl::Ptr<GENERAL_NAME> gn(GENERAL_NAME_new());
    ASN1_OCTET_STRING* octets = a2i_IPADDRESS(ip.c_str());
    if (!gn || octets == nullptr) {
      ASN1_OCTET_STRING_free(octets);
      return ossl::error(Errc::invalid_input, "cannot encode IP address " + ip);
    }
    GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, octets);
    if (sk_GENERAL_NAME_push(names.get(), gn.get()) == 0)
      return ossl::error("cannot add IP address");
    gn.release();
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return ossl::error("cannot add subjectAltName");
  }
  return ok_status();
}

Status check_request(const CertificateRequest& request, const X509* issuer) {
  if (request.public_key == nullptr)
    return make_error(Errc::invalid_input, "no subject public key");
  ONBOARD_CHECK(check_acceptable_key(request.public_key));
  if (request.profile == Profile::device) {
    if (auto problem = device_id_problem(request.common_name)) {
      return make_error(Errc::invalid_input, *problem);
    }
  } else if (auto problem = subject_name_problem(request.common_name)) {
    return make_error(Errc::invalid_input, "common name: " + *problem);
  }
  if (!request.organization.empty()) {
    if (auto problem = subject_name_problem(request.organization)) {
      return make_error(Errc::invalid_input, "organization: " + *problem);
    }
  }
  if (request.not_after <= request.not_before) {
    return make_error(Errc::invalid_input, "the validity period is empty");
  }
  if (issuer != nullptr) {
    auto issuer_end = to_unix_time(X509_get0_notAfter(issuer));
    if (!issuer_end || request.not_after > *issuer_end) {
      return make_error(Errc::invalid_input,
                        "the certificate would outlive its issuing CA; choose a shorter validity");
    }
  } else if (request.profile != Profile::root_ca) {
    return make_error(Errc::internal, "only a root CA certificate may be self-signed");
  }
  if (request.profile == Profile::server) {
    if (request.dns_names.empty() && request.ip_addresses.empty()) {
      return make_error(Errc::invalid_input,
                        "a server certificate needs at least one DNS name or IP address");
    }
    for (const auto& dns : request.dns_names) {
      if (auto problem = dns_name_problem(dns)) return make_error(Errc::invalid_input, *problem);
    }
    for (const auto& ip : request.ip_addresses) {
      if (auto problem = ip_address_problem(ip)) return make_error(Errc::invalid_input, *problem);
    }
  } else if (!request.dns_names.empty() || !request.ip_addresses.empty()) {
    return make_error(Errc::invalid_input,
                      "DNS names and IP addresses belong in server certificates only");
  }
  if (!request.crl_url.empty()) {
    if (auto problem = crl_url_problem(request.crl_url))
      return make_error(Errc::invalid_input, *problem);
  }
  if (!request.ocsp_url.empty()) {
    if (auto problem = ocsp_url_problem(request.ocsp_url))
      return make_error(Errc::invalid_input, *problem);
  }
  if (request.path_length < 0 || request.path_length > 8) {
    return make_error(Errc::invalid_input, "CA path length must be between 0 and 8");
  }
  return ok_status();
}

Status add_profile_extensions(X509* cert, const CertificateRequest& request, const X509* issuer) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer != nullptr ? const_cast<X509*>(issuer) : cert, cert, nullptr, nullptr,
                 0);
  const bool rsa = is_rsa(request.public_key);
  switch (request.profile) {
    case Profile::root_ca:
    case Profile::intermediate_ca:
      ONBOARD_CHECK(
          add_conf_extension(cert, &ctx, NID_basic_constraints,
                             "critical,CA:TRUE,pathlen:" + std::to_string(request.path_length)));
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
      break;
    case Profile::device:
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE"));
      // keyEncipherment is meaningful for RSA key transport only; on EC or Ed25519 keys it is
      // wrong.
      ONBOARD_CHECK(add_conf_extension(
          cert, &ctx, NID_key_usage,
          rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"));
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_ext_key_usage, "clientAuth"));
      break;
    case Profile::server:
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE"));
      ONBOARD_CHECK(add_conf_extension(
          cert, &ctx, NID_key_usage,
          rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"));
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_ext_key_usage, "serverAuth"));
      ONBOARD_CHECK(add_subject_alt_names(cert, request));
      break;
    case Profile::ocsp_responder:
      // RFC 6960 4.2.2.2: the CA delegates signing OCSP answers with OCSPSigning; nocheck
      // (4.2.2.2.1) tells clients not to ask about the responder itself, so it is short-lived.
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE"));
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_key_usage, "critical,digitalSignature"));
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_ext_key_usage, "OCSPSigning"));
      ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_id_pkix_OCSP_noCheck, "ignored"));
      break;
  }
  ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_subject_key_identifier, "hash"));
  ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!request.crl_url.empty() && request.profile != Profile::root_ca) {
    ONBOARD_CHECK(
        add_conf_extension(cert, &ctx, NID_crl_distribution_points, "URI:" + request.crl_url));
  }
  if (!request.ocsp_url.empty() &&
      (request.profile == Profile::device || request.profile == Profile::server)) {
    ONBOARD_CHECK(add_conf_extension(cert, &ctx, NID_info_access, "OCSP;URI:" + request.ocsp_url));
  }
  return ok_status();
}

std::string name_to_string(const X509_NAME* name) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
    ossl::clear_errors();
    return {};
  }
  return ossl::mem_contents(bio.get());
}

bool is_printable_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> dns_name_problem(std::string_view name) {
  if (name.empty() || name.size() > 253)
    return "DNS name '" + std::string(name) + "' has a bad length";
  std::size_t label = 0;
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (label == 0 || label > 63)
        return "DNS name '" + std::string(name) + "' has an empty or overlong label";
      if (name[i - 1] == '-' || name[i - label] == '-') {
        return "DNS name '" + std::string(name) + "' has a label starting or ending with '-'";
      }
      label = 0;
      continue;
    }
    char c = name[i];
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok)
      return "DNS name '" + std::string(name) + "' may hold only letters, digits, '-' and '.'";
    ++label;
  }
  return std::nullopt;
}

std::optional<std::string> ip_address_problem(std::string_view address) {
  std::string text(address);
  unsigned char buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1 || inet_pton(AF_INET6, text.c_str(), buf) == 1) {
    return std::nullopt;
  }
  return "'" + text + "' is not an IPv4 or IPv6 address";
}

std::optional<std::string> ocsp_url_problem(std::string_view url) {
  auto problem = crl_url_problem(url);
  if (problem && problem->starts_with("CRL URL")) problem->replace(0, 3, "OCSP");
  return problem;
}

std::optional<std::string> crl_url_problem(std::string_view url) {
  if (!(url.starts_with("http://") || url.starts_with("https://"))) {
    return "CRL URL must start with http:// or https://";
  }
  if (url.size() > 2048) return "CRL URL is longer than 2048 characters";
  for (char c : url) {
    // A comma would end the URI in OpenSSL's extension syntax; whitespace and quotes are never
    // valid.
    if (c == ',' || c == '"' || c == '\\' || c == '<' || c == '>' || !is_printable_ascii({&c, 1}) ||
        c == ' ') {
      return "CRL URL contains a character that is not allowed in a URI: '" + std::string(1, c) +
             "'";
    }
  }
  return std::nullopt;
}

std::optional<std::string> subject_name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > 64) return "is longer than 64 characters";
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "contains a control character";
  }
  return std::nullopt;
}

Result<ossl::Ptr<X509>> issue_certificate(const CertificateRequest& request, const X509* issuer,
                                          const Signer& signer) {
  ONBOARD_CHECK(check_request(request, issuer));
  if (issuer != nullptr && X509_check_private_key(issuer, signer.public_key()) != 1) {
    ossl::clear_errors();
    return make_error(Errc::internal,
                      "the signing key does not belong to the issuing CA certificate");
  }
  if (issuer == nullptr && !same_public_key(request.public_key, signer.public_key())) {
    return make_error(Errc::internal, "a self-signed certificate must be signed with its own key");
  }

  ossl::Ptr<X509> cert(X509_new());
  if (!cert) return ossl::error("cannot allocate a certificate");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1)
    return ossl::error("cannot set the version");
  ONBOARD_CHECK(set_random_serial(cert.get()));

  ONBOARD_TRY(auto subject, make_name(request));
  if (X509_set_subject_name(cert.get(), subject.get()) != 1)
    return ossl::error("cannot set the subject");
  const X509_NAME* issuer_name = issuer != nullptr ? X509_get_subject_name(issuer) : subject.get();
  if (X509_set_issuer_name(cert.get(), issuer_name) != 1)
    return ossl::error("cannot set the issuer");

  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(request.not_before)) ==
          nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(request.not_after)) ==
          nullptr) {
    return ossl::error("cannot set the validity period");
  }
  if (X509_set_pubkey(cert.get(), const_cast<EVP_PKEY*>(request.public_key)) != 1) {
    return ossl::error("cannot set the public key");
  }
  ONBOARD_CHECK(add_profile_extensions(cert.get(), request, issuer));
  ONBOARD_CHECK(signer.sign(cert.get()));
  return cert;
}

CertificateInfo describe_certificate(const X509* cert) {
  CertificateInfo info;
  info.serial_hex = serial_hex(cert);
  info.sha256_fingerprint = sha256_fingerprint(cert);
  info.subject_cn = subject_common_name(cert);
  info.subject = name_to_string(X509_get_subject_name(cert));
  info.issuer = name_to_string(X509_get_issuer_name(cert));
  info.not_before = to_unix_time(X509_get0_notBefore(cert)).value_or(0);
  info.not_after = to_unix_time(X509_get0_notAfter(cert)).value_or(0);
  if (const EVP_PKEY* key = X509_get0_pubkey(cert)) info.key = describe_key(key);
  ossl::clear_errors();
  return info;
}

std::string certificate_to_pem(const X509* cert) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), const_cast<X509*>(cert)) != 1) {
    ossl::clear_errors();
    return {};
  }
  return ossl::mem_contents(bio.get());
}

Result<ossl::Ptr<X509>> certificate_from_pem(std::string_view pem) {
  auto bio = ossl::mem_reader(pem);
  ossl::Ptr<X509> cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) return ossl::error(Errc::invalid_input, "not a PEM certificate");
  return cert;
}

Result<std::vector<ossl::Ptr<X509>>> certificates_from_pem(std::string_view pem) {
  auto bio = ossl::mem_reader(pem);
  if (!bio) return ossl::error("cannot read certificates");
  std::vector<ossl::Ptr<X509>> out;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    out.emplace_back(cert);
  ossl::clear_errors();  // the read that ends the loop always leaves "no start line" queued
  if (out.empty()) return make_error(Errc::invalid_input, "no PEM certificate found");
  return out;
}

}  // namespace onboard::ca
