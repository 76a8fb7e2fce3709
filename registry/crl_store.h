// What issuing a CRL needs of the registry: the revoked certificates of an issuer and the CRL
// numbers (kept apart from DeviceStore like smallstep's CertificateRevocationListDB, so that CRL
// issuance depends on this alone).
//
// Writes follow the Store contract (store.h): each numbering call is one transaction with its
// audit row, and no exception escapes.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "registry/model.h"

namespace onboard::registry {

class CrlStore {
 public:
  virtual ~CrlStore() = default;

  // Every revoked certificate of every kind that `issuer` (RFC 2253, as stored) issued: what that
  // CA's CRL lists.
  virtual Result<std::vector<RevokedEntry>> revoked_certificates(std::string_view issuer) = 0;

  // CRL numbering: next_crl_number increments the stored number atomically and returns it.
  virtual Result<std::uint64_t> next_crl_number(const Actor& actor) = 0;
  virtual Result<CrlState> crl_state() = 0;
  // The root CA's CRL has a number sequence of its own (only used with an issuing intermediate,
  // whose revocation the root's CRL publishes). Audited as crl.issue_root; no change row.
  virtual Result<std::uint64_t> next_root_crl_number(const Actor& actor) = 0;
};

}  // namespace onboard::registry
