// Certificate profiles and issuance. Issuance is a pipeline of small checks and steps; a request
// that does not fit its profile is refused, never silently adjusted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ca/signer.h"
#include "core/error.h"
#include "core/ossl.h"
#include "core/time.h"
#include "core/x509.h"

namespace onboard::ca {

enum class Profile {
  root_ca,          // self-signed; CA:TRUE, keyCertSign + cRLSign
  intermediate_ca,  // signed by the root; CA:TRUE pathlen:0
  device,           // CN = device id; digitalSignature (+ keyEncipherment for RSA), clientAuth
  server,           // the broker: SAN DNS/IP names, serverAuth
  ocsp_responder,   // delegated OCSP responder: digitalSignature, OCSPSigning, id-pkix-ocsp-nocheck
};

struct CertificateRequest {
  Profile profile = Profile::device;
  std::string common_name;
  std::string organization;              // optional O= in the subject
  const EVP_PKEY* public_key = nullptr;  // borrowed: the subject's key
  UnixTime not_before = 0;
  UnixTime not_after = 0;
  std::vector<std::string> dns_names;     // server profile
  std::vector<std::string> ip_addresses;  // server profile
  std::string crl_url;                    // optional CRL distribution point (http or https)
  std::string ocsp_url;  // optional Authority Information Access OCSP URL (device and server)
  int path_length = 0;   // CA profiles: how many CAs may follow below
};

// Signs `request` with `signer`. `issuer` is the issuing CA's certificate, or nullptr for a
// self-signed root (then `signer` must hold the request's own key).
Result<ossl::Ptr<X509>> issue_certificate(const CertificateRequest& request, const X509* issuer,
                                          const Signer& signer);

// Input checks the profiles rely on, exposed for validating options at the edge.
std::optional<std::string> dns_name_problem(std::string_view name);
std::optional<std::string> ip_address_problem(std::string_view address);
std::optional<std::string> crl_url_problem(std::string_view url);
// The same rules for an OCSP responder URL (Authority Information Access).
std::optional<std::string> ocsp_url_problem(std::string_view url);
std::optional<std::string> subject_name_problem(std::string_view name);

struct CertificateInfo {
  std::string serial_hex;          // upper-case hex, no separators
  std::string sha256_fingerprint;  // lower-case hex of the DER's SHA-256
  std::string subject_cn;
  std::string subject;  // RFC 2253 one-line form
  std::string issuer;
  UnixTime not_before = 0;
  UnixTime not_after = 0;
  std::string key;  // describe_key() of the public key
};
CertificateInfo describe_certificate(const X509* cert);

std::string certificate_to_pem(const X509* cert);
Result<ossl::Ptr<X509>> certificate_from_pem(std::string_view pem);
// Every certificate in a PEM bundle, in order; an empty bundle is an error.
Result<std::vector<ossl::Ptr<X509>>> certificates_from_pem(std::string_view pem);

}  // namespace onboard::ca
