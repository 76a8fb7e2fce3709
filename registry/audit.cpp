#include "registry/audit.h"
#include "core/digest.h"
#include "core/encoding.h"

#include <openssl/evp.h>

#include <array>
#include <stdexcept>
#include <utility>

namespace onboard::registry {
namespace {

// Versioned so that a future encoding can never be confused with this one.
constexpr std::string_view kEncodingTag = "mosquitto-onboard audit v1";

std::string canonical_encoding(const AuditEvent& event) {
  std::string out;
  append_length_prefixed(out, kEncodingTag);
  append_u64_be(out, static_cast<std::uint64_t>(event.seq));
  append_u64_be(out, static_cast<std::uint64_t>(event.at));
  append_length_prefixed(out, event.actor);
  append_length_prefixed(out, event.action);
  append_length_prefixed(out, event.subject);
  append_length_prefixed(out, event.details);
  append_length_prefixed(out, event.prev_hash);
  return out;
}

}  // namespace

std::string audit_hash(const AuditEvent& event) {
  // SHA-256 of an in-memory buffer only fails when the library is unusable; the store turns the
  // exception into Errc::internal.
  auto hash = sha256_hex(canonical_encoding(event));
  if (!hash) throw std::runtime_error("SHA-256 failed");
  return std::move(hash).value();
}

bool AuditChainVerifier::fail(std::int64_t seq, std::string problem) {
  check_.bad_seq = seq;
  check_.problem = std::move(problem);
  return false;
}

// Order of checks per row: a gap first (a deleted row), then the row against its own hash (an
// edit that left the hash alone), then its link to the previous row (an edit of the previous row
// whose hash was recomputed: only the next row's link still remembers the old one).
bool AuditChainVerifier::add(const AuditEvent& row) {
  if (!check_.ok()) return false;
  const std::int64_t expected = last_seq_ + 1;
  const std::string n = std::to_string(row.seq);
  if (row.seq > expected) return fail(expected, "row " + std::to_string(expected) + " is missing");
  if (row.seq < expected) return fail(row.seq, "row " + n + " is out of order");
  if (audit_hash(row) != row.hash) return fail(row.seq, "row " + n + " was edited");
  if (row.prev_hash != last_hash_) {
    if (row.seq == 1) return fail(1, "row 1 was edited (it does not start the chain)");
    const std::string prev = std::to_string(last_seq_);
    return fail(last_seq_, "row " + prev + " was edited (row " + n + " links to another hash)");
  }
  last_seq_ = row.seq;
  last_hash_ = row.hash;
  ++check_.rows_checked;
  return true;
}

AuditCheck AuditChainVerifier::finish(const AuditHead& head) const {
  AuditCheck result = check_;
  result.head_hash = head.hash;
  if (!result.ok()) return result;
  if (head.seq > last_seq_) {
    result.bad_seq = last_seq_ + 1;
    result.problem = "row " + std::to_string(last_seq_ + 1) +
                     " is missing (the log should end at row " + std::to_string(head.seq) + ")";
  } else if (head.seq < last_seq_) {
    result.bad_seq = head.seq + 1;
    result.problem = "row " + std::to_string(head.seq + 1) + " was added outside the registry";
  } else if (head.hash != last_hash_) {
    result.bad_seq = last_seq_;
    result.problem =
        "row " + std::to_string(last_seq_) + " was edited (the log head has another hash)";
  }
  return result;
}

}  // namespace onboard::registry
