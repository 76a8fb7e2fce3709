// The broker's read of the registry (AccessStore::read_access), the same on every backend.
#include <algorithm>
#include <iterator>
#include <set>
#include <utility>

#include "registry/sql.h"

namespace onboard::registry::sql {
namespace {

// --- Reading access data ---------------------------------------------------------------------
// The columns the broker needs; strict about values, so that a damaged row fails the load (and the
// plugin keeps its last good snapshot) rather than turning into an allow.

// A text column as a view, valid until the statement steps again.
std::string_view text_view(const Statement& s, int index) { return s.view(index); }

CertificateStatus certificate_status_from(std::string_view text) {
  if (text == "active") return CertificateStatus::active;
  if (text == "revoked") return CertificateStatus::revoked;
  throw CorruptValue("an unknown certificate status");
}

// Columns from `first`: id, access, pattern, effect, priority.
// Patterns are interned as they are read: a fleet repeats a few patterns on every device.
acl::Rule access_rule_from(const Statement& s, int first, acl::PatternPool::Session& patterns) {
  const auto access = s.int32(first + 1);
  if (access < 1 || access > kAccessReadWrite) throw CorruptValue("an invalid access mask");
  const std::string_view effect = text_view(s, first + 3);
  if (effect != "allow" && effect != "deny") throw CorruptValue("an unknown rule effect");
  return acl::Rule{s.int64(first), patterns.intern_text(text_view(s, first + 2)),
                   static_cast<std::uint8_t>(access),
                   effect == "allow" ? acl::Effect::allow : acl::Effect::deny, s.int32(first + 4)};
}

// Columns from `first`: sha256_fingerprint, serial_hex, status, not_before, not_after.
CertificateAccess certificate_access_from(const Statement& s, int first) {
  return CertificateAccess{s.text(first), s.text(first + 1),
                           certificate_status_from(text_view(s, first + 2)), s.int64(first + 3),
                           s.int64(first + 4)};
}

// Every claim with its certificate's state, by name. Claims are few (one per fleet or factory
// run): always read whole.
std::vector<ClaimAccess> read_claims(Database& db) {
  auto rows = prepare(db,
                      "SELECT c.name, c.certificate_sha256, t.status, t.not_before, t.not_after, "
                      "c.status, c.quota, c.quota_used, c.id_pattern, c.device_type "
                      "FROM claims AS c JOIN certificates AS t "
                      "ON t.sha256_fingerprint = c.certificate_sha256 ORDER BY c.name");
  std::vector<ClaimAccess> claims;
  while (rows.step()) {
    ClaimAccess claim;
    claim.name = rows.text(0);
    claim.certificate_sha256 = rows.text(1);
    claim.certificate_status = certificate_status_from(text_view(rows, 2));
    claim.not_before = rows.int64(3);
    claim.not_after = rows.int64(4);
    const std::string_view status = text_view(rows, 5);
    if (status != "active" && status != "revoked") throw CorruptValue("an unknown claim status");
    claim.status = status == "active" ? ClaimStatus::active : ClaimStatus::revoked;
    claim.quota = rows.int64(6);
    claim.quota_used = rows.int64(7);
    claim.id_pattern = rows.text(8);
    claim.device_type = rows.text(9);
    claims.push_back(std::move(claim));
  }
  return claims;
}

// Columns: id, status, type.
DeviceAccess device_access_from(const Statement& s) {
  DeviceAccess device;
  device.id = s.text(0);
  device.status = device_status_from(s.text(1));
  device.type = s.text(2);
  return device;
}

// Rules read in id order into the order the snapshot keeps (registry/access.h): highest priority
// first, then id. Stable, so that equal priorities keep their id order; most lists are already so.
void sort_rules(std::vector<acl::Rule>& rules) {
  auto higher = [](const acl::Rule& a, const acl::Rule& b) { return a.priority > b.priority; };
  if (!std::is_sorted(rules.begin(), rules.end(), higher))
    std::stable_sort(rules.begin(), rules.end(), higher);
}

// For a merge join: `rows` is ordered by its column 0 like the keys the caller walks through, in
// the same (binary) order. Skips rows whose key sorts before `key` (orphans, which foreign keys
// forbid), then passes every row with this key to `take` and leaves `rows` on the first row after.
template <class F>
void take_rows_of(Statement& rows, bool& has_row, std::string_view key, F&& take) {
  while (has_row && text_view(rows, 0) < key) has_row = rows.step();
  while (has_row && text_view(rows, 0) == key) {
    take(rows);
    has_row = rows.step();
  }
}

}  // namespace

Result<AccessData> Connection::read_access_data(const AccessQuery& query) {
  return read("read access data", [&]() -> Result<AccessData> {
    AccessData data;
    // The first read fixes the transaction's view: every row below is as of this seq.
    data.change_seq = query_int64(db_, "SELECT change_seq FROM meta WHERE id = 1");
    switch (query.scope) {
      case AccessQuery::Scope::everything:
        read_all_access(data);
        data.claims = read_claims(db_);
        break;
      case AccessQuery::Scope::listed:
        read_listed_access(
            std::set<std::string, std::less<>>(query.device_ids.begin(), query.device_ids.end()),
            std::set<std::string, std::less<>>(query.group_names.begin(), query.group_names.end()),
            data);
        break;
      case AccessQuery::Scope::changed_since: {
        // The plugin asks this every refresh interval; nearly always nothing changed, and one
        // read of the counter is all that answer should cost.
        if (data.change_seq <= query.after_seq) break;
        std::set<std::string, std::less<>> device_ids, group_names;
        bool claims_changed = false;
        auto changes =
            prepare(db_, "SELECT kind, subject FROM changes WHERE seq > ?1", query.after_seq);
        while (changes.step()) {
          const ChangeKind kind = change_kind_from(changes.text(0));
          if (kind == ChangeKind::device) device_ids.insert(changes.text(1));
          if (kind == ChangeKind::group) group_names.insert(changes.text(1));
          if (kind == ChangeKind::claim) claims_changed = true;
        }
        read_listed_access(device_ids, group_names, data);
        if (claims_changed) data.claims = read_claims(db_);
        break;
      }
    }
    return data;
  });
}

// A handful of set-based reads, merged in id order: the same six statements at any fleet size.
void Connection::read_all_access(AccessData& data) {
  acl::PatternPool pool;  // equal patterns share a node from the start (registry/pattern.h)
  acl::PatternPool::Session patterns(pool);
  data.devices.reserve(static_cast<std::size_t>(query_int64(db_, "SELECT count(*) FROM devices")));
  auto devices = scan(db_, "SELECT id, status, type FROM devices ORDER BY id");
  // Both in the order of their device index, (device_id, rowid), so that the database streams them
  // instead of sorting every rule of the fleet before the first row (ten million at a million
  // devices); the rules of each device are then put in priority order here (sort_rules). For a
  // certificate, kind is 'device' exactly when device_id is set (a CHECK): the condition that lets
  // the partial index serve.
  auto rules = scan(db_,
                    "SELECT device_id, id, access, pattern, effect, priority FROM acl_rules "
                    "WHERE device_id IS NOT NULL ORDER BY device_id, id");
  auto certificates = scan(db_,
                           "SELECT device_id, sha256_fingerprint, serial_hex, status, "
                           "not_before, not_after FROM certificates WHERE device_id IS NOT NULL "
                           "ORDER BY device_id, rowid");
  bool rule_row = rules.step();
  bool cert_row = certificates.step();
  // Each device's rows are gathered here, then copied into lists of their exact size: one
  // allocation per list instead of one per doubling and another to trim it.
  std::vector<acl::Rule> rule_rows;
  std::vector<CertificateAccess> cert_rows;
  while (devices.step()) {
    DeviceAccess device = device_access_from(devices);
    rule_rows.clear();
    cert_rows.clear();
    take_rows_of(rules, rule_row, device.id, [&](const Statement& row) {
      rule_rows.push_back(access_rule_from(row, 1, patterns));
    });
    take_rows_of(certificates, cert_row, device.id, [&](const Statement& row) {
      cert_rows.push_back(certificate_access_from(row, 1));
    });
    sort_rules(rule_rows);
    device.rules.assign(std::make_move_iterator(rule_rows.begin()),
                        std::make_move_iterator(rule_rows.end()));
    device.certificates.assign(std::make_move_iterator(cert_rows.begin()),
                               std::make_move_iterator(cert_rows.end()));
    data.devices.push_back(std::move(device));
  }

  auto groups = scan(db_, "SELECT name FROM groups ORDER BY name");
  auto group_rules = scan(db_,
                          "SELECT group_name, id, access, pattern, effect, priority FROM "
                          "acl_rules WHERE group_name IS NOT NULL "
                          "ORDER BY group_name, priority DESC, id");
  bool group_rule_row = group_rules.step();
  while (groups.step()) {
    GroupAccess group{groups.text(0), {}};
    take_rows_of(group_rules, group_rule_row, group.name, [&](const Statement& row) {
      group.rules.push_back(access_rule_from(row, 1, patterns));
    });
    data.groups.push_back(std::move(group));
  }
}

// Three indexed lookups per device and one per group, each statement prepared once.
void Connection::read_listed_access(const std::set<std::string, std::less<>>& device_ids,
                                    const std::set<std::string, std::less<>>& group_names,
                                    AccessData& data) {
  acl::PatternPool pool;  // equal patterns share a node from the start (registry/pattern.h)
  acl::PatternPool::Session patterns(pool);
  auto device_row = prepare(db_, "SELECT id, status, type FROM devices WHERE id = ?1");
  auto rules = prepare(db_,
                       "SELECT id, access, pattern, effect, priority FROM acl_rules "
                       "WHERE device_id = ?1 ORDER BY priority DESC, id");
  // A device id set means a device certificate (the CHECK on kind), so that is all it asks: with
  // `kind = 'device'` beside it, SQLite (no ANALYZE statistics) chose the index on kind and read
  // every device certificate of the fleet for each device, 0.6 s a refresh at 1M devices.
  auto certificates = prepare(db_,
                              "SELECT sha256_fingerprint, serial_hex, status, not_before, "
                              "not_after FROM certificates "
                              "WHERE device_id = ?1 ORDER BY rowid");
  for (const auto& id : device_ids) {
    device_row.bind(id);
    if (!device_row.step()) {
      data.missing_devices.push_back(id);
      continue;
    }
    DeviceAccess device = device_access_from(device_row);
    rules.bind(id);
    while (rules.step()) device.rules.push_back(access_rule_from(rules, 0, patterns));
    certificates.bind(id);
    while (certificates.step()) {
      device.certificates.push_back(certificate_access_from(certificates, 0));
    }
    data.devices.push_back(std::move(device));
  }

  auto group_rules = prepare(db_,
                             "SELECT id, access, pattern, effect, priority FROM acl_rules "
                             "WHERE group_name = ?1 ORDER BY priority DESC, id");
  for (const auto& name : group_names) {
    GroupAccess group{name, {}};
    group_rules.bind(name);
    while (group_rules.step()) group.rules.push_back(access_rule_from(group_rules, 0, patterns));
    data.groups.push_back(std::move(group));
  }
}

namespace {

class AccessOnlyStore final : public AccessStore, private Connection {
 public:
  AccessOnlyStore(std::unique_ptr<Database> db, std::string where)
      : Connection(std::move(db), std::move(where), /*read_only=*/true) {}

  Result<AccessData> read_access(const AccessQuery& query) override {
    return read_access_data(query);
  }
};

}  // namespace

std::unique_ptr<AccessStore> access_only_store(std::unique_ptr<Database> db, std::string where) {
  return std::make_unique<AccessOnlyStore>(std::move(db), std::move(where));
}

}  // namespace onboard::registry::sql
