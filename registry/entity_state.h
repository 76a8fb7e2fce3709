// The authorization state the audit log vouches for: devices (status, type and so group
// membership), certificates of every kind (revocation included), ACL rules, groups, API tokens and
// claims.
// Internal to registry/.
//
// Every write that changes such an entity records in its audit row, under "state", the entity's
// digest before and after the change (`"device:dev-1": [before, after]`, null where it does not
// exist). The row's hash covers them, so they cannot be edited without breaking the chain. A
// migration or a restore records the whole state instead, under "attest" (a first part in its own
// row, further parts in `state.attest` rows), which the log then starts from. `audit verify`
// replays the digests in row order (StateLedger) and compares the newest one of each entity with
// the entity as it is: a change made with plain SQL, behind the store, shows as a current state
// that differs from its newest row, as an entity no row recorded, or, when the store changed the
// entity later, as a row whose "before" differs from the row before it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "registry/audit_store.h"
#include "registry/model.h"
#include "registry/sql.h"

namespace onboard::registry::sql {

enum class Entity : std::uint8_t { device, certificate, rule, group, token, claim };

// One entity kind's table: the columns that make up its state, the key first.
struct EntityTable {
  Entity entity;
  const char* name;     // "device": the prefix of its references ("device:dev-1")
  const char* table;    // "devices"
  const char* key;      // "id": the column that names one entity
  const char* columns;  // "id, name, ...": every column of its state, the key first
  std::vector<bool> integer_columns;
  const char* order_by;  // the order verify reads the table in
};

// Devices, certificates, rules, groups, tokens, claims: the order verify checks them in.
const std::vector<EntityTable>& entity_tables();
const EntityTable& entity_table(Entity entity);

// "device:dev-1", "rule:17": how an audit row names an entity.
std::string entity_ref(Entity entity, std::string_view key);
// The key of the entity in the current row of a query of `table.columns`.
std::string entity_key(const EntityTable& table, const Statement& row);
// Lower-case hex SHA-256 of the current row of a query of `table.columns`: every column, typed,
// NULL told apart from empty, each length-prefixed.
std::string entity_digest(const EntityTable& table, const Statement& row);

// The entities one write changes, each with its digest before the change (nullopt: it did not
// exist). SqlStore::touch fills it before the change; record_audit adds the digests after it.
struct Touched {
  struct Entry {
    Entity entity;
    std::string key;
    std::optional<std::string> before;
  };
  std::vector<Entry> entries;

  bool contains(Entity entity, std::string_view key) const;
  // An entity this write creates under a key never used before (a new rule's id).
  void created(Entity entity, std::string key);
};

// Audit rows hold at most this many entities of an attestation each.
inline constexpr std::size_t kAttestChunk = 1000;

// Replays the state digests of the audit rows, fed in seq order after the chain check accepted
// them, then compares the current entities with them. Stops at the first problem, which goes
// into the AuditCheck given to finish().
//
// Memory: one entry per entity the log knows (about 90 bytes: a 16-byte hash of its reference,
// its digest, the row), never the entities themselves.
class StateLedger {
 public:
  // false once a problem was found: stop feeding.
  bool add_row(const AuditEvent& row);
  // Each current entity, table by table.
  bool add_current(const EntityTable& table, const std::string& key, const std::string& digest);
  // After every current entity: the seq of the lowest row that recorded an entity no longer
  // there, if any. The caller reads that row and names the entity with missing_in().
  std::optional<std::int64_t> first_missing() const;
  // The reference in the row's details that is missing now (first_missing's row).
  std::optional<std::string> missing_in(const AuditEvent& row) const;
  void report_missing(std::int64_t seq, const std::string& ref);

  bool ok() const { return problem_.empty(); }
  std::int64_t entities_checked() const { return checked_; }
  // Copies the problem, if any, into `check`.
  void finish(AuditCheck& check) const;

 private:
  using Key = std::array<unsigned char, 16>;
  using Digest = std::array<unsigned char, 32>;
  struct KeyHash {
    std::size_t operator()(const Key& key) const noexcept;
  };
  struct Recorded {
    std::int64_t seq = 0;
    Digest digest{};
    bool exists = false;
    bool seen = false;
  };
  static Key key_of(std::string_view ref);
  bool fail(std::optional<std::int64_t> seq, std::string entity, std::string problem);
  bool malformed(const AuditEvent& row);
  bool add_change(const AuditEvent& row, const std::string& ref,
                  const std::optional<Digest>& before, const std::optional<Digest>& after);

  std::unordered_map<Key, Recorded, KeyHash> recorded_;
  std::int64_t checked_ = 0;
  std::optional<std::int64_t> bad_seq_;
  std::string entity_;
  std::string problem_;
};

}  // namespace onboard::registry::sql
