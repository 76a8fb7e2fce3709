// The audit log's hash chain, independent of any database so every Store shares one definition.
//
// Each row's hash is SHA-256 over a fixed tag and every field of the row, including the previous
// row's hash, each field length-prefixed so that no two different rows encode alike ("ab"+"c" vs
// "a"+"bc"). The store also keeps the newest row's seq and hash (the head) in the same
// transaction, so deleting the newest rows shows too. What a chain cannot catch on its own is a
// writer who rewrites the tail and the head together: recording head_hash outside the database
// (AuditCheck::head_hash) closes that gap.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "registry/audit_store.h"
#include "registry/model.h"

namespace onboard::registry {

// The prev_hash of row 1.
inline constexpr std::string_view kAuditGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// Lower-case hex SHA-256 of the row's canonical encoding; ignores event.hash.
std::string audit_hash(const AuditEvent& event);

// The newest row's seq and hash as the store records them (seq 0 and the genesis hash when empty).
struct AuditHead {
  std::int64_t seq = 0;
  std::string hash{kAuditGenesisHash};
};

// Checks rows fed in ascending seq order, stopping at the first problem, then the head.
class AuditChainVerifier {
 public:
  // false once a problem was found: stop feeding and call finish().
  bool add(const AuditEvent& row);
  AuditCheck finish(const AuditHead& head) const;

 private:
  bool fail(std::int64_t seq, std::string problem);

  AuditCheck check_;
  std::int64_t last_seq_ = 0;
  std::string last_hash_{kAuditGenesisHash};
};

}  // namespace onboard::registry
