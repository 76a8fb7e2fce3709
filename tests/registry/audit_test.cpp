#include "registry/audit.h"

#include <catch2/catch.hpp>

#include <vector>

using namespace onboard::registry;

namespace {

// A valid chain of `count` rows, built the way a store appends them.
std::vector<AuditEvent> make_chain(int count) {
  std::vector<AuditEvent> rows;
  std::string prev{kAuditGenesisHash};
  for (int i = 1; i <= count; ++i) {
    AuditEvent row{i,
                   1'700'000'000 + i,
                   "alice",
                   "device.register",
                   "dev-" + std::to_string(i),
                   R"({"n":)" + std::to_string(i) + "}",
                   prev,
                   ""};
    row.hash = audit_hash(row);
    prev = row.hash;
    rows.push_back(row);
  }
  return rows;
}

AuditHead head_of(const std::vector<AuditEvent>& rows) {
  if (rows.empty()) return AuditHead{};
  return AuditHead{rows.back().seq, rows.back().hash};
}

AuditCheck verify(const std::vector<AuditEvent>& rows, const AuditHead& head) {
  AuditChainVerifier verifier;
  for (const auto& row : rows) {
    if (!verifier.add(row)) break;
  }
  return verifier.finish(head);
}

}  // namespace

// The encoding is fixed for good: every registry's chain was hashed with it. The expected value was
// computed independently (Python: hashlib.sha256 over each field as an 8-byte big-endian length
// and its bytes, seq and at as 8-byte big-endian values, in the order of audit.h).
TEST_CASE("an audit hash is the documented encoding of the row") {
  const AuditEvent row{7,       1'767'225'600,          "cli:root",           "device.register",
                       "dev-1", R"({"type":"sensor"})", std::string(64, '0'), ""};
  CHECK(audit_hash(row) == "b66dc7435b32564b4b14f8b45201e16769eb59f6673a011b8d1cea4b5c1a264f");
}

TEST_CASE("an audit hash is 64 lower-case hex digits and depends on every field") {
  const AuditEvent base = make_chain(1).front();
  const std::string hash = audit_hash(base);
  CHECK(hash.size() == 64);
  CHECK(hash.find_first_not_of("0123456789abcdef") == std::string::npos);

  auto changed = [&](auto edit) {
    AuditEvent copy = base;
    edit(copy);
    return audit_hash(copy) != hash;
  };
  CHECK(changed([](AuditEvent& e) { e.seq = 2; }));
  CHECK(changed([](AuditEvent& e) { e.at += 1; }));
  CHECK(changed([](AuditEvent& e) { e.actor = "mallory"; }));
  CHECK(changed([](AuditEvent& e) { e.action = "device.revoke"; }));
  CHECK(changed([](AuditEvent& e) { e.subject = "dev-2"; }));
  CHECK(changed([](AuditEvent& e) { e.details = "{}"; }));
  CHECK(changed([](AuditEvent& e) { e.prev_hash[0] = '1'; }));
  // The stored hash itself is not an input.
  CHECK_FALSE(changed([](AuditEvent& e) { e.hash = "anything"; }));
}

TEST_CASE("moving characters from one audit field to the next changes the hash") {
  AuditEvent a = make_chain(1).front();
  AuditEvent b = a;
  a.actor = "ab";
  a.action = "c";
  b.actor = "a";
  b.action = "bc";
  CHECK(audit_hash(a) != audit_hash(b));
}

TEST_CASE("an intact chain verifies and reports how many rows it checked") {
  const auto rows = make_chain(5);
  const auto check = verify(rows, head_of(rows));
  CHECK(check.ok());
  CHECK(check.rows_checked == 5);
  CHECK(check.head_hash == rows.back().hash);
  CHECK(check.problem.empty());
}

TEST_CASE("an empty chain with a genesis head verifies") { CHECK(verify({}, AuditHead{}).ok()); }

TEST_CASE("a row edited without recomputing its hash is named as edited") {
  auto rows = make_chain(5);
  rows[2].details = R"({"n":99})";
  const auto check = verify(rows, head_of(rows));
  CHECK(check.bad_seq == 3);
  CHECK(check.problem == "row 3 was edited");
}

TEST_CASE("a row edited with a recomputed hash is caught by the next row's link") {
  auto rows = make_chain(5);
  rows[2].actor = "mallory";
  rows[2].hash = audit_hash(rows[2]);
  const auto check = verify(rows, head_of(rows));
  CHECK(check.bad_seq == 3);
  CHECK(check.problem == "row 3 was edited (row 4 links to another hash)");
}

TEST_CASE("a deleted middle row is named as missing") {
  auto rows = make_chain(5);
  rows.erase(rows.begin() + 1);
  const auto check = verify(rows, AuditHead{5, make_chain(5).back().hash});
  CHECK(check.bad_seq == 2);
  CHECK(check.problem == "row 2 is missing");
}

TEST_CASE("a deleted newest row is named as missing through the head") {
  const auto full = make_chain(5);
  auto rows = full;
  rows.pop_back();
  const auto check = verify(rows, head_of(full));
  CHECK(check.bad_seq == 5);
  CHECK(check.problem == "row 5 is missing (the log should end at row 5)");
}

TEST_CASE("an edited newest row with a recomputed hash is caught by the head") {
  const auto full = make_chain(3);
  auto rows = full;
  rows[2].subject = "other";
  rows[2].hash = audit_hash(rows[2]);
  const auto check = verify(rows, head_of(full));
  CHECK(check.bad_seq == 3);
  CHECK(check.problem == "row 3 was edited (the log head has another hash)");
}

TEST_CASE("a row appended behind the head's back is named") {
  const auto rows = make_chain(4);
  const auto check = verify(rows, AuditHead{3, rows[2].hash});
  CHECK(check.bad_seq == 4);
  CHECK(check.problem == "row 4 was added outside the registry");
}

TEST_CASE("a first row that does not start at the genesis hash is named") {
  auto rows = make_chain(2);
  rows[0].prev_hash = std::string(64, 'f');
  rows[0].hash = audit_hash(rows[0]);
  const auto check = verify(rows, head_of(rows));
  CHECK(check.bad_seq == 1);
  CHECK(check.problem == "row 1 was edited (it does not start the chain)");
}
