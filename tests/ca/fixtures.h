// Certificate fixtures made by code, named by scenario. P-256 keys keep the suite fast; the RSA
// paths have their own cases.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "ca/certificate.h"
#include "ca/crl.h"
#include "ca/keys.h"
#include "ca/signer.h"

namespace onboard::test {

constexpr UnixTime kDay = 86400;
constexpr UnixTime kNow = 1'800'000'000;  // a fixed "now": 2027-01-15

template <class T>
T must(Result<T> result) {
  INFO((result.ok() ? std::string() : result.error().message));
  REQUIRE(result.ok());
  return std::move(result).value();
}

inline void must(const Status& status) {
  INFO((status.ok() ? std::string() : status.error().message));
  REQUIRE(status.ok());
}

// A CA in memory: its certificate and its signer.
struct TestCa {
  ossl::Ptr<X509> cert;
  std::unique_ptr<ca::KeySigner> signer;
};

inline TestCa make_root(const std::string& name = "Test Root", ca::KeyAlg alg = ca::KeyAlg::p256,
                        UnixTime now = kNow) {
  auto key = must(ca::generate_key(alg));
  ca::CertificateRequest request;
  request.profile = ca::Profile::root_ca;
  request.common_name = name;
  request.public_key = key.get();
  request.not_before = now - kDay;
  request.not_after = now + 3650 * kDay;
  request.path_length = 1;
  auto signer = std::make_unique<ca::KeySigner>(std::move(key));
  auto cert = must(ca::issue_certificate(request, nullptr, *signer));
  return TestCa{std::move(cert), std::move(signer)};
}

inline TestCa make_intermediate(const TestCa& root, const std::string& name = "Test Issuing") {
  auto key = must(ca::generate_key(ca::KeyAlg::p256));
  ca::CertificateRequest request;
  request.profile = ca::Profile::intermediate_ca;
  request.common_name = name;
  request.public_key = key.get();
  request.not_before = kNow - kDay;
  request.not_after = kNow + 1000 * kDay;
  auto cert = must(ca::issue_certificate(request, root.cert.get(), *root.signer));
  return TestCa{std::move(cert), std::make_unique<ca::KeySigner>(std::move(key))};
}

struct TestLeaf {
  ossl::Ptr<X509> cert;
  ossl::Ptr<EVP_PKEY> key;
};

inline ca::CertificateRequest device_request(const std::string& id, const EVP_PKEY* key,
                                             UnixTime not_before = kNow - kDay,
                                             UnixTime not_after = kNow + 365 * kDay) {
  ca::CertificateRequest request;
  request.profile = ca::Profile::device;
  request.common_name = id;
  request.public_key = key;
  request.not_before = not_before;
  request.not_after = not_after;
  return request;
}

inline TestLeaf make_device(const TestCa& ca, const std::string& id,
                            ca::KeyAlg alg = ca::KeyAlg::p256, UnixTime not_before = kNow - kDay,
                            UnixTime not_after = kNow + 365 * kDay) {
  auto key = must(ca::generate_key(alg));
  auto cert = must(ca::issue_certificate(device_request(id, key.get(), not_before, not_after),
                                         ca.cert.get(), *ca.signer));
  return TestLeaf{std::move(cert), std::move(key)};
}

inline bool has_extension(const X509* cert, int nid) {
  return X509_get_ext_by_NID(cert, nid, -1) >= 0;
}

inline bool extension_is_critical(const X509* cert, int nid) {
  int index = X509_get_ext_by_NID(cert, nid, -1);
  return index >= 0 && X509_EXTENSION_get_critical(X509_get_ext(cert, index)) == 1;
}

}  // namespace onboard::test
