#include "registry/entity_state.h"

#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "core/encoding.h"

namespace onboard::registry::sql {
namespace {

// Versioned so that a future encoding can never be confused with this one.
constexpr std::string_view kStateTag = "mosquitto-onboard state v1";
// What a reference names at most in a message: the rest is cut.
constexpr std::size_t kShownKeyBytes = 80;

std::array<unsigned char, 32> sha256(std::string_view data) {
  std::array<unsigned char, 32> digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != digest.size()) {
    // Only when the library is unusable; the store turns it into Errc::internal.
    throw std::runtime_error("SHA-256 failed");
  }
  return digest;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// A digest as the rows write it: 64 lower-case hex digits.
std::optional<std::array<unsigned char, 32>> parse_digest(const nlohmann::json& value) {
  if (!value.is_string()) return std::nullopt;
  const auto& text = value.get_ref<const std::string&>();
  std::array<unsigned char, 32> digest{};
  if (text.size() != 2 * digest.size()) return std::nullopt;
  for (std::size_t i = 0; i < digest.size(); ++i) {
    const int high = hex_value(text[2 * i]), low = hex_value(text[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    digest[i] = static_cast<unsigned char>(high * 16 + low);
  }
  return digest;
}

// A reference's entity kind is known: "device:...", "rule:...", ...
bool known_ref(std::string_view ref) {
  const auto colon = ref.find(':');
  if (colon == std::string_view::npos) return false;
  const auto kind = ref.substr(0, colon);
  return std::any_of(entity_tables().begin(), entity_tables().end(),
                     [&](const EntityTable& t) { return kind == t.name; });
}

// "device dev-1" for a message: a key written behind the store may hold anything, so every byte
// outside printable ASCII is shown as \xNN, and a long key is cut.
std::string shown(std::string_view ref) {
  const auto colon = ref.find(':');
  std::string out(ref.substr(0, colon));
  out += ' ';
  const auto key = colon == std::string_view::npos ? std::string_view() : ref.substr(colon + 1);
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (i == kShownKeyBytes) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(key[i]);
    if (c > 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string row_name(std::int64_t seq) { return "row " + std::to_string(seq); }

// The details of a row that records state, parsed; nullopt for every other row (most rows of a
// registry from before version 4, and rows that change nothing the log vouches for).
std::optional<nlohmann::json> state_details(const AuditEvent& row) {
  if (row.details.find("\"state\"") == std::string::npos &&
      row.details.find("\"attest\"") == std::string::npos) {
    return std::nullopt;
  }
  auto details = nlohmann::json::parse(row.details, nullptr, false);
  if (details.is_discarded() || !details.is_object()) return std::nullopt;
  if (!details.contains("state") && !details.contains("attest")) return std::nullopt;
  return details;
}

}  // namespace

const std::vector<EntityTable>& entity_tables() {
  // Every column of each table but certificates.rowid (the order rows were recorded in, kept by
  // copies, changing nothing a broker decides).
  static const std::vector<EntityTable> kTables = {
      {Entity::device,
       "device",
       "devices",
       "id",
       "id, name, type, location, firmware, status, created_at, updated_at, metadata",
       {false, false, false, false, false, false, true, true, false},
       "id"},
      {Entity::certificate,
       "certificate",
       "certificates",
       "sha256_fingerprint",
       "sha256_fingerprint, serial_hex, issuer, kind, device_id, subject, not_before, not_after, "
       "status, revoked_at, revocation_reason, pem, renews",
       {false, false, false, false, false, false, true, true, false, true, false, false, false},
       "rowid"},
      {Entity::rule,
       "rule",
       "acl_rules",
       "id",
       "id, device_id, group_name, access, pattern, effect, priority, created_at",
       {true, false, false, true, false, false, true, true},
       "id"},
      {Entity::group,
       "group",
       "groups",
       "name",
       "name, description, created_at",
       {false, false, true},
       "name"},
      {Entity::token,
       "token",
       "api_tokens",
       "name",
       "name, id, role, token_sha256, created_at, revoked_at",
       {false, true, false, false, true, true},
       "name"},
      {Entity::claim,
       "claim",
       "claims",
       "name",
       "name, certificate_sha256, quota, quota_used, expires_at, id_pattern, device_type, status, "
       "created_at, created_by, revoked_at",
       {false, false, true, true, true, false, false, false, true, false, true},
       "name"},
  };
  return kTables;
}

const EntityTable& entity_table(Entity entity) {
  for (const auto& table : entity_tables()) {
    if (table.entity == entity) return table;
  }
  throw std::logic_error("an entity without a table");
}

std::string entity_ref(Entity entity, std::string_view key) {
  return std::string(entity_table(entity).name) + ":" + std::string(key);
}

std::string entity_key(const EntityTable& table, const Statement& row) {
  if (table.integer_columns.front()) return std::to_string(row.int64(0));
  return row.text(0);
}

std::string entity_digest(const EntityTable& table, const Statement& row) {
  std::string encoding;
  append_length_prefixed(encoding, kStateTag);
  append_length_prefixed(encoding, table.name);
  for (std::size_t i = 0; i < table.integer_columns.size(); ++i) {
    const int column = static_cast<int>(i);
    if (row.is_null(column)) {
      encoding.push_back('N');
    } else if (table.integer_columns[i]) {
      encoding.push_back('I');
      append_u64_be(encoding, static_cast<std::uint64_t>(row.int64(column)));
    } else {
      encoding.push_back('T');
      append_length_prefixed(encoding, row.view(column));
    }
  }
  return hex_encode(sha256(encoding));
}

bool Touched::contains(Entity entity, std::string_view key) const {
  return std::any_of(entries.begin(), entries.end(),
                     [&](const Entry& e) { return e.entity == entity && e.key == key; });
}

void Touched::created(Entity entity, std::string key) {
  if (!contains(entity, key)) entries.push_back(Entry{entity, std::move(key), std::nullopt});
}

// --- StateLedger -------------------------------------------------------------------------------

std::size_t StateLedger::KeyHash::operator()(const Key& key) const noexcept {
  std::size_t hash = 0;
  std::memcpy(&hash, key.data(), sizeof hash);  // already a cryptographic hash
  return hash;
}

StateLedger::Key StateLedger::key_of(std::string_view ref) {
  const auto digest = sha256(ref);
  Key key{};
  std::copy_n(digest.begin(), key.size(), key.begin());
  return key;
}

bool StateLedger::fail(std::optional<std::int64_t> seq, std::string entity, std::string problem) {
  bad_seq_ = seq;
  entity_ = std::move(entity);
  problem_ = std::move(problem);
  return false;
}

bool StateLedger::malformed(const AuditEvent& row) {
  return fail(row.seq, "", row_name(row.seq) + " holds a malformed state record");
}

bool StateLedger::add_change(const AuditEvent& row, const std::string& ref,
                             const std::optional<Digest>& before,
                             const std::optional<Digest>& after) {
  const Key key = key_of(ref);
  auto found = recorded_.find(key);
  const bool known = found != recorded_.end();
  const bool existed = known && found->second.exists;
  const bool as_recorded =
      before.has_value() == existed && (!before || *before == found->second.digest);
  if (!as_recorded) {
    const std::string entity = shown(ref);
    const std::string n = row_name(row.seq);
    std::string problem;
    if (!known) {
      problem = n + " found " + entity + ", which no earlier row recorded (added outside the " +
                "registry)";
    } else {
      const std::string m = row_name(found->second.seq);
      if (!existed) {
        problem = n + " found " + entity + ", which " + m + " removed (added back outside the " +
                  "registry)";
      } else if (!before) {
        problem = n + " found no " + entity + ", which " + m + " recorded (deleted outside the " +
                  "registry)";
      } else {
        problem = n + " found " + entity + " not as " + m + " left it (changed outside the " +
                  "registry in between)";
      }
    }
    return fail(row.seq, entity, problem);
  }
  Recorded& entry = known ? found->second : recorded_[key];
  entry.seq = row.seq;
  entry.exists = after.has_value();
  if (after) entry.digest = *after;
  return true;
}

bool StateLedger::add_row(const AuditEvent& row) {
  if (!ok()) return false;
  const auto details = state_details(row);
  if (!details) return true;
  if (const auto attest = details->find("attest"); attest != details->end()) {
    const auto part = attest->find("part");
    const auto entities = attest->find("entities");
    if (!attest->is_object() || part == attest->end() || !part->is_number_unsigned() ||
        entities == attest->end() || !entities->is_object()) {
      return malformed(row);
    }
    // The first part of an attestation starts the state afresh: it lists every entity.
    if (part->get<std::uint64_t>() == 1) recorded_.clear();
    for (const auto& [ref, value] : entities->items()) {
      const auto digest = parse_digest(value);
      if (!digest || !known_ref(ref)) return malformed(row);
      recorded_[key_of(ref)] = Recorded{row.seq, *digest, true, false};
    }
  }
  if (const auto state = details->find("state"); state != details->end()) {
    if (!state->is_object()) return malformed(row);
    for (const auto& [ref, change] : state->items()) {
      if (!known_ref(ref) || !change.is_array() || change.size() != 2) return malformed(row);
      std::optional<Digest> before, after;
      if (!change[0].is_null() && !(before = parse_digest(change[0]))) return malformed(row);
      if (!change[1].is_null() && !(after = parse_digest(change[1]))) return malformed(row);
      if (!add_change(row, ref, before, after)) return false;
    }
  }
  return true;
}

bool StateLedger::add_current(const EntityTable& table, const std::string& key,
                              const std::string& digest) {
  if (!ok()) return false;
  ++checked_;
  const std::string ref = entity_ref(table.entity, key);
  auto found = recorded_.find(key_of(ref));
  const std::string entity = shown(ref);
  if (found == recorded_.end()) {
    return fail(std::nullopt, entity,
                entity + " has no audit row behind it (added outside the registry)");
  }
  Recorded& entry = found->second;
  const std::string m = row_name(entry.seq);
  if (!entry.exists) {
    return fail(entry.seq, entity,
                entity + " exists, but " + m + " removed it (added back outside the registry)");
  }
  if (parse_digest(digest) != entry.digest) {
    return fail(entry.seq, entity,
                entity + " differs from " + m +
                    ", the newest row that changed it (changed outside the registry)");
  }
  entry.seen = true;
  return true;
}

std::optional<std::int64_t> StateLedger::first_missing() const {
  std::optional<std::int64_t> first;
  for (const auto& [key, entry] : recorded_) {
    if (entry.exists && !entry.seen && (!first || entry.seq < *first)) first = entry.seq;
  }
  return first;
}

std::optional<std::string> StateLedger::missing_in(const AuditEvent& row) const {
  const auto details = state_details(row);
  if (!details) return std::nullopt;
  auto missing = [&](const std::string& ref) {
    auto found = recorded_.find(key_of(ref));
    return found != recorded_.end() && found->second.exists && !found->second.seen &&
           found->second.seq == row.seq;
  };
  auto first_of = [&](const nlohmann::json& refs) -> std::optional<std::string> {
    if (!refs.is_object()) return std::nullopt;
    for (const auto& [ref, value] : refs.items()) {
      if (missing(ref)) return ref;
    }
    return std::nullopt;
  };
  if (const auto state = details->find("state"); state != details->end()) {
    if (auto ref = first_of(*state)) return ref;
  }
  if (const auto attest = details->find("attest");
      attest != details->end() && attest->is_object()) {
    if (const auto entities = attest->find("entities"); entities != attest->end()) {
      return first_of(*entities);
    }
  }
  return std::nullopt;
}

void StateLedger::report_missing(std::int64_t seq, const std::string& ref) {
  const std::string entity = shown(ref);
  fail(
      seq, entity,
      entity + " is missing, but " + row_name(seq) + " recorded it (deleted outside the registry)");
}

void StateLedger::finish(AuditCheck& check) const {
  check.entities_checked = checked_;
  if (ok()) return;
  check.bad_seq = bad_seq_;
  check.entity = entity_;
  check.problem = problem_;
}

}  // namespace onboard::registry::sql
