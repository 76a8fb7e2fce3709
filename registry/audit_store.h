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

// verify_audit's answer: ok, or the first problem. verify_audit checks the chain of rows first,
// then that the authorization state (devices, certificates, rules, groups, API tokens) is what
// the rows recorded (entity_state.h): a change made behind the store shows.
struct AuditCheck {
  std::int64_t rows_checked = 0;
  std::int64_t entities_checked = 0;  // current entities compared with the log
  // The row the problem is about: an edited or missing row; for the state, the newest row that
  // recorded the entity (or the row that found it changed). None for an entity no row recorded.
  std::optional<std::int64_t> bad_seq;
  // The entity whose state differs from the log ("device dev-1", "rule 17"); empty for a problem
  // of the chain itself.
  std::string entity;
  std::string problem;    // "row 17 was edited", "device dev-1 differs from row 9, ...", ...
  std::string head_hash;  // worth recording elsewhere: it pins the whole chain
  bool ok() const noexcept { return problem.empty(); }
};

class AuditStore {
 public:
  virtual ~AuditStore() = default;

  // Audit log, oldest first: the rows with seq > after_seq, at most `limit` (0: all).
  virtual Result<std::vector<AuditEvent>> audit_list(std::size_t limit,
                                                     std::int64_t after_seq = 0) = 0;
  virtual Result<AuditCheck> verify_audit() = 0;

  // An audit row for an event that changes nothing else (a refused download, a link issued).
  // `details` must be a JSON object without the keys the store records state under ("state",
  // "attest").
  virtual Status record_event(std::string_view action, std::string_view subject,
                              std::string_view details, const Actor& actor) = 0;

  // Change feed: the latest change seq (0 for none), and the changes after `seq`, oldest first.
  virtual Result<std::int64_t> change_seq() = 0;
  virtual Result<std::vector<Change>> changes_since(std::int64_t seq) = 0;
};

}  // namespace onboard::registry
