// The audit log and the change feed: reading and verifying the log, recording an event that
// changes nothing else, and reading the feed the broker follows.
//
// record_event follows the Store contract (store.h): one transaction, and no exception escapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "registry/model.h"

namespace onboard::registry {

// verify_audit's answer: ok, or the first bad row and what is wrong with it.
struct AuditCheck {
  std::int64_t rows_checked = 0;
  std::optional<std::int64_t> bad_seq;
  std::string problem;    // "row 17 was edited", "row 18 is missing", ...
  std::string head_hash;  // worth recording elsewhere: it pins the whole chain
  bool ok() const noexcept { return !bad_seq.has_value(); }
};

class AuditStore {
 public:
  virtual ~AuditStore() = default;

  // Audit log, oldest first: the rows with seq > after_seq, at most `limit` (0: all).
  virtual Result<std::vector<AuditEvent>> audit_list(std::size_t limit,
                                                     std::int64_t after_seq = 0) = 0;
  virtual Result<AuditCheck> verify_audit() = 0;

  // An audit row for an event that changes nothing else (a refused download, a link issued).
  // `details` must be a JSON object.
  virtual Status record_event(std::string_view action, std::string_view subject,
                              std::string_view details, const Actor& actor) = 0;

  // Change feed: the latest change seq (0 for none), and the changes after `seq`, oldest first.
  virtual Result<std::int64_t> change_seq() = 0;
  virtual Result<std::vector<Change>> changes_since(std::int64_t seq) = 0;
};

}  // namespace onboard::registry
