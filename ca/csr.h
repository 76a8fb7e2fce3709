// Certificate signing requests: the way a device keeps its key to itself.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"
#include "core/ossl.h"

namespace onboard::ca {

// A CSR that passed every check: its signature matches its key, the key is acceptable and the
// subject CN is a valid device id. Other subject fields and requested extensions are ignored: the
// device profile decides what the certificate says.
struct DeviceCsr {
  std::string device_id;
  ossl::Ptr<EVP_PKEY> public_key;
};

Result<ossl::Ptr<X509_REQ>> csr_from_pem(std::string_view pem);
std::string csr_to_pem(const X509_REQ* req);
Result<DeviceCsr> check_device_csr(const X509_REQ* req);
// Parse and check in one step.
Result<DeviceCsr> read_device_csr(std::string_view pem);

// Makes a CSR with subject CN=`common_name`, signed by `key` (what a device does).
Result<ossl::Ptr<X509_REQ>> make_csr(const EVP_PKEY* key, std::string_view common_name);

}  // namespace onboard::ca
