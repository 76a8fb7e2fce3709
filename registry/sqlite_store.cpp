#include "registry/sqlite_store.h"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <utility>

#include "core/identity.h"
#include "registry/audit.h"
#include "registry/schema.h"

namespace onboard::registry {

namespace detail {

Error sqlite_error(int code, std::string_view what) {
  const std::string prefix = std::string(what) + ": ";
  auto io = [&](std::string_view why) { return make_error(Errc::io, prefix + std::string(why)); };
  switch (code & 0xff) {  // the primary code; extended codes add detail in the high bits
    case SQLITE_FULL:
      return io("the disk is full");
    case SQLITE_IOERR:
      return io("an I/O error occurred on the registry file");
    case SQLITE_READONLY:
      return io("the registry is read-only (check the permissions of the file and its directory)");
    case SQLITE_CANTOPEN:
      return io("the registry cannot be opened (check the path and the directory's permissions)");
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return io("permission denied");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return io("the registry stayed locked by another writer for too long");
    case SQLITE_NOTADB:
      return make_error(Errc::corrupt, prefix + "the file is not an SQLite database");
    case SQLITE_CORRUPT:
      return make_error(Errc::corrupt, prefix + "the registry file is damaged");
    case SQLITE_CONSTRAINT:
      if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return make_error(Errc::conflict, prefix + "it already exists");
      }
      if (code == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return make_error(Errc::not_found, prefix + "it refers to something that does not exist");
      }
      return make_error(Errc::internal, prefix + "a registry constraint was violated");
    default:
      // sqlite3_errstr is a fixed English phrase per code: nothing from the data leaks through it.
      return make_error(Errc::internal, prefix + "unexpected SQLite error (" +
                                            (code >= 0 ? sqlite3_errstr(code) : "misuse") + ")");
  }
}

}  // namespace detail

namespace {

constexpr int kBusyTimeoutMs = 5000;

// A stored value that the schema's CHECKs should have made impossible.
struct CorruptValue : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Turns the exception being handled into an Error; call only inside a catch block. Nothing else
// may leave the Store API, so this catches everything.
Error current_exception_error(std::string_view what) {
  try {
    throw;
  } catch (const SQLite::Exception& e) {
    const int code = e.getExtendedErrorCode() != -1 ? e.getExtendedErrorCode() : e.getErrorCode();
    return detail::sqlite_error(code, what);
  } catch (const CorruptValue& e) {
    return make_error(Errc::corrupt, std::string(what) + ": the registry holds " + e.what());
  } catch (const std::bad_alloc&) {
    return make_error(Errc::internal, std::string(what) + ": out of memory");
  } catch (...) {
    return make_error(Errc::internal, std::string(what) + ": internal error");
  }
}

// --- Binding and reading -------------------------------------------------------------------------
// Values are only ever bound, never spliced into SQL text.

void bind_one(SQLite::Statement& s, int i, std::string_view v) { s.bind(i, std::string(v)); }
void bind_one(SQLite::Statement& s, int i, std::int64_t v) { s.bind(i, v); }
void bind_one(SQLite::Statement& s, int i, int v) { s.bind(i, v); }
template <class T>
void bind_one(SQLite::Statement& s, int i, const std::optional<T>& v) {
  if (v) {
    bind_one(s, i, *v);
  } else {
    s.bind(i);  // NULL
  }
}

// A statement with `args` bound to ?1, ?2, ... in order. Statements are locals: they are
// finalized when the caller's scope ends, so none can keep a read transaction open (the
// reference doc's pitfall E).
template <class... Args>
SQLite::Statement prepare(SQLite::Database& db, const char* sql, const Args&... args) {
  SQLite::Statement statement(db, sql);
  int index = 0;
  (bind_one(statement, ++index, args), ...);
  return statement;
}

std::optional<std::string> text_or_null(const SQLite::Column& column) {
  if (column.isNull()) return std::nullopt;
  return column.getString();
}

DeviceStatus device_status_from(const std::string& text) {
  if (auto status = parse_device_status(text)) return *status;
  throw CorruptValue("an unknown device status");
}

RevocationReason reason_from(const std::string& text) {
  if (auto reason = parse_revocation_reason(text)) return *reason;
  throw CorruptValue("an unknown revocation reason");
}

ChangeKind change_kind_from(const std::string& text) {
  for (auto kind : {ChangeKind::device, ChangeKind::group, ChangeKind::crl}) {
    if (text == to_string(kind)) return kind;
  }
  throw CorruptValue("an unknown change kind");
}

// Columns in the order of `SELECT id, name, type, location, firmware, status, created_at,
// updated_at, metadata`.
Device device_from(const SQLite::Statement& s) {
  return Device{s.getColumn(0).getString(), s.getColumn(1).getString(),
                s.getColumn(2).getString(), s.getColumn(3).getString(),
                s.getColumn(4).getString(), device_status_from(s.getColumn(5).getString()),
                s.getColumn(6).getInt64(),  s.getColumn(7).getInt64(),
                s.getColumn(8).getString()};
}

CertificateKind certificate_kind_from(const std::string& text) {
  if (auto kind = parse_certificate_kind(text)) return *kind;
  throw CorruptValue("an unknown certificate kind");
}

// The columns certificate_from reads, in its order.
#define ONBOARD_CERTIFICATE_COLUMNS                                                     \
  "serial_hex, issuer, sha256_fingerprint, device_id, subject, not_before, not_after, " \
  "status, revoked_at, revocation_reason, pem, kind"

// Columns: ONBOARD_CERTIFICATE_COLUMNS.
Certificate certificate_from(const SQLite::Statement& s) {
  Certificate c;
  c.serial_hex = s.getColumn(0).getString();
  c.issuer = s.getColumn(1).getString();
  c.sha256_fingerprint = s.getColumn(2).getString();
  c.device_id = text_or_null(s.getColumn(3)).value_or("");
  c.subject = s.getColumn(4).getString();
  c.not_before = s.getColumn(5).getInt64();
  c.not_after = s.getColumn(6).getInt64();
  c.status = s.getColumn(7).getString() == "revoked" ? CertificateStatus::revoked
                                                     : CertificateStatus::active;
  if (!s.getColumn(8).isNull()) c.revoked_at = s.getColumn(8).getInt64();
  if (auto reason = text_or_null(s.getColumn(9))) c.revocation_reason = reason_from(*reason);
  c.pem = s.getColumn(10).getString();
  c.kind = certificate_kind_from(s.getColumn(11).getString());
  return c;
}

// Columns: id, device_id, group_name, access, pattern, effect, priority, created_at.
RuleRecord rule_from(const SQLite::Statement& s) {
  RuleRecord r;
  r.id = s.getColumn(0).getInt64();
  if (auto device = text_or_null(s.getColumn(1))) {
    r.subject_kind = SubjectKind::device;
    r.subject = *device;
  } else {
    r.subject_kind = SubjectKind::group;
    r.subject = s.getColumn(2).getString();
  }
  const auto access = s.getColumn(3).getInt();
  if (access < 1 || access > kAccessReadWrite) throw CorruptValue("an invalid access mask");
  r.access = static_cast<std::uint8_t>(access);
  r.pattern = s.getColumn(4).getString();
  r.effect = s.getColumn(5).getString() == "deny" ? RuleEffect::deny : RuleEffect::allow;
  r.priority = s.getColumn(6).getInt();
  r.created_at = s.getColumn(7).getInt64();
  return r;
}

AuditEvent audit_event_from(const SQLite::Statement& s) {
  return AuditEvent{s.getColumn(0).getInt64(),  s.getColumn(1).getInt64(),
                    s.getColumn(2).getString(), s.getColumn(3).getString(),
                    s.getColumn(4).getString(), s.getColumn(5).getString(),
                    s.getColumn(6).getString(), s.getColumn(7).getString()};
}

// --- Reading access data ---------------------------------------------------------------------
// The columns the broker needs; strict about values, so that a damaged row fails the load (and the
// plugin keeps its last good snapshot) rather than turning into an allow.

// A text column as a view, valid until the statement steps again.
std::string_view text_view(const SQLite::Statement& s, int index) {
  const SQLite::Column column = s.getColumn(index);
  return {column.getText(), static_cast<std::size_t>(column.getBytes())};
}

CertificateStatus certificate_status_from(std::string_view text) {
  if (text == "active") return CertificateStatus::active;
  if (text == "revoked") return CertificateStatus::revoked;
  throw CorruptValue("an unknown certificate status");
}

// Columns from `first`: id, access, pattern, effect, priority.
// Patterns are interned as they are read: a fleet repeats a few patterns on every device.
acl::Rule access_rule_from(const SQLite::Statement& s, int first,
                           acl::PatternPool::Session& patterns) {
  const auto access = s.getColumn(first + 1).getInt();
  if (access < 1 || access > kAccessReadWrite) throw CorruptValue("an invalid access mask");
  const std::string_view effect = text_view(s, first + 3);
  if (effect != "allow" && effect != "deny") throw CorruptValue("an unknown rule effect");
  return acl::Rule{s.getColumn(first).getInt64(), patterns.intern_text(text_view(s, first + 2)),
                   static_cast<std::uint8_t>(access),
                   effect == "allow" ? acl::Effect::allow : acl::Effect::deny,
                   s.getColumn(first + 4).getInt()};
}

// Columns from `first`: sha256_fingerprint, serial_hex, status, not_before, not_after.
CertificateAccess certificate_access_from(const SQLite::Statement& s, int first) {
  return CertificateAccess{s.getColumn(first).getString(), s.getColumn(first + 1).getString(),
                           certificate_status_from(text_view(s, first + 2)),
                           s.getColumn(first + 3).getInt64(), s.getColumn(first + 4).getInt64()};
}

// Columns: id, status, type.
DeviceAccess device_access_from(const SQLite::Statement& s) {
  DeviceAccess device;
  device.id = s.getColumn(0).getString();
  device.status = device_status_from(s.getColumn(1).getString());
  device.type = s.getColumn(2).getString();
  return device;
}

// For a merge join: `rows` is ordered by its column 0 like the keys the caller walks through, in
// the same (binary) order. Skips rows whose key sorts before `key` (orphans, which foreign keys
// forbid), then passes every row with this key to `take` and leaves `rows` on the first row after.
template <class F>
void take_rows_of(SQLite::Statement& rows, bool& has_row, std::string_view key, F&& take) {
  while (has_row && text_view(rows, 0) < key) has_row = rows.executeStep();
  while (has_row && text_view(rows, 0) == key) {
    take(rows);
    has_row = rows.executeStep();
  }
}

// --- Input checks ----------------------------------------------------------------------------
// Everything that is echoed in a message is checked first, so messages stay one clean line.

bool is_hex(std::string_view text, bool upper) {
  return std::all_of(text.begin(), text.end(), [upper](char c) {
    return (c >= '0' && c <= '9') || (upper ? (c >= 'A' && c <= 'F') : (c >= 'a' && c <= 'f'));
  });
}

// Accepts upper or lower case and the colon-separated form `openssl x509 -fingerprint` prints.
std::optional<std::string> normalize_fingerprint(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ':') continue;
    out.push_back(c >= 'A' && c <= 'F' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  if (out.size() != 64 || !is_hex(out, false)) return std::nullopt;
  return out;
}

Status check_device_id(std::string_view id) {
  if (auto problem = device_id_problem(id)) return make_error(Errc::invalid_input, *problem);
  return ok_status();
}

Status check_group_name(std::string_view name) {
  if (auto problem = group_name_problem(name)) return make_error(Errc::invalid_input, *problem);
  return ok_status();
}

Status check_subject(SubjectKind kind, std::string_view name) {
  return kind == SubjectKind::device ? check_device_id(name) : check_group_name(name);
}

Result<NewCertificate> checked_certificate(NewCertificate c) {
  auto bad = [](std::string why) { return make_error(Errc::invalid_input, std::move(why)); };
  // 20 octets is RFC 5280's limit for a serial number.
  if (c.serial_hex.empty() || c.serial_hex.size() > 40 || !is_hex(c.serial_hex, true)) {
    return bad("certificate serial must be 1 to 40 upper-case hex digits");
  }
  auto fingerprint = normalize_fingerprint(c.sha256_fingerprint);
  if (!fingerprint) return bad("certificate fingerprint must be 64 hex digits (SHA-256)");
  c.sha256_fingerprint = *fingerprint;
  if (c.issuer.empty() || c.subject.empty())
    return bad("certificate issuer and subject are required");
  if (c.not_after < c.not_before) return bad("certificate expires before it becomes valid");
  if (!c.pem.starts_with("-----BEGIN CERTIFICATE-----")) return bad("certificate PEM is missing");
  if (!c.held_key_pem.empty() &&
      !c.held_key_pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
    // A plaintext key must never reach the registry file.
    return bad("a held key must be an encrypted PKCS#8 PEM");
  }
  return c;
}

Result<std::string> compact_metadata(std::string_view json) {
  if (auto problem = metadata_problem(json)) return make_error(Errc::invalid_input, *problem);
  return nlohmann::json::parse(json).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// --- The store -------------------------------------------------------------------------------

class SqliteStore final : public Store {
 public:
  SqliteStore(SQLite::Database db, std::string path, bool read_only)
      : db_(std::move(db)), path_(std::move(path)), read_only_(read_only) {}

  Status create_or_upgrade(UnixTime now);

  Result<Device> register_device(const NewDevice& device, const NewCertificate& certificate,
                                 const Actor& actor) override;
  Result<Device> get_device(std::string_view id) override;
  Result<std::vector<Device>> list_devices(const DeviceFilter& filter) override;
  Result<std::int64_t> count_devices(const DeviceFilter& filter) override;
  Result<bool> set_device_enabled(std::string_view id, bool enabled, const Actor& actor) override;
  Result<Device> update_device(std::string_view id, const DeviceUpdate& update,
                               const Actor& actor) override;
  Result<RevokeOutcome> revoke_device(std::string_view id, RevocationReason reason,
                                      const Actor& actor) override;

  Result<std::vector<Certificate>> certificates_of(std::string_view device_id) override;
  Result<Certificate> find_certificate_by_fingerprint(std::string_view sha256_hex) override;
  Result<AddedCertificate> add_certificate(std::string_view device_id,
                                           const NewCertificate& certificate, bool supersede_active,
                                           const Actor& actor) override;
  Result<std::vector<RevokedEntry>> revoked_certificates(std::string_view issuer) override;
  Result<Certificate> record_certificate(CertificateKind kind, const NewCertificate& certificate,
                                         const Actor& actor) override;
  Result<std::vector<Certificate>> list_certificates(const CertificateFilter& filter) override;
  Result<Certificate> find_certificate_by_serial(std::string_view serial_hex) override;
  Result<CertificateRevokeOutcome> revoke_certificate(std::string_view sha256_hex,
                                                      RevocationReason reason,
                                                      const Actor& actor) override;

  Result<RuleRecord> add_rule(const NewRule& rule, const Actor& actor) override;
  Status remove_rule(std::int64_t rule_id, const Actor& actor) override;
  Result<std::vector<RuleRecord>> rules_for_subject(SubjectKind kind,
                                                    std::string_view name) override;
  Result<std::vector<RuleRecord>> rules_for_device(std::string_view device_id) override;

  Result<Group> create_group(std::string_view name, std::string_view description,
                             const Actor& actor) override;
  Result<std::vector<Group>> list_groups() override;

  Result<std::uint64_t> next_crl_number(const Actor& actor) override;
  Result<CrlState> crl_state() override;
  Result<std::uint64_t> next_root_crl_number(const Actor& actor) override;

  Result<std::vector<AuditEvent>> audit_list(std::size_t limit, std::int64_t after_seq) override;
  Result<AuditCheck> verify_audit() override;

  Result<std::int64_t> change_seq() override;
  Result<std::vector<Change>> changes_since(std::int64_t seq) override;

  Result<AccessData> read_access(const AccessQuery& query) override;

  Result<std::optional<HeldKey>> held_key(std::string_view device_id) override;
  Status create_batch(std::string_view id, std::string_view source, const Actor& actor) override;
  Result<Batch> get_batch(std::string_view id) override;
  Result<Device> register_device_in_batch(const NewDevice& device,
                                          const NewCertificate& certificate,
                                          std::string_view batch_id, std::int64_t line,
                                          const Actor& actor) override;
  Result<BundleRecord> record_bundle(const BundleRecord& bundle, const Actor& actor) override;
  Result<BundleRecord> get_bundle(std::string_view id) override;
  Result<std::vector<BundleRecord>> bundles_of_device(std::string_view device_id) override;
  Result<BundleRecord> claim_bundle_download(std::string_view id, std::string_view downloaded_by,
                                             const Actor& actor) override;
  Result<ApiToken> create_api_token(std::string_view name, ApiRole role,
                                    std::string_view token_sha256, const Actor& actor) override;
  Result<std::vector<ApiToken>> list_api_tokens() override;
  Result<bool> revoke_api_token(std::string_view name, const Actor& actor) override;
  Result<ApiToken> find_api_token(std::string_view token_sha256) override;
  Status record_event(std::string_view action, std::string_view subject, std::string_view details,
                      const Actor& actor) override;

 private:
  Result<Device> insert_device(const NewDevice& device, const NewCertificate& certificate,
                               std::optional<std::string_view> batch_id, std::int64_t line,
                               const Actor& actor);
  void hold_key(std::string_view device_id, const NewCertificate& certificate, UnixTime now);
  void erase_held_key(std::string_view device_id);
  std::optional<BundleRecord> load_bundle(std::string_view id);

  // Runs `body` in one read transaction, so that several statements see one snapshot.
  template <class F>
  auto read(std::string_view what, F&& body) -> decltype(body());
  // Runs `body` in one write transaction, committed only if it returns ok.
  template <class F>
  auto write(std::string_view what, const Actor& actor, F&& body) -> decltype(body());

  // Helpers for use inside read()/write(); they throw SQLite::Exception.
  std::optional<Device> load_device(std::string_view id);
  bool group_exists(std::string_view name);
  bool subject_exists(SubjectKind kind, std::string_view name);
  void insert_group(std::string_view name, std::string_view description, UnixTime now);
  // kind device needs the device's id; any other kind records no device.
  Status insert_certificate(CertificateKind kind, std::string_view device_id,
                            const NewCertificate& c);
  std::vector<std::string> revoke_active_certificates(std::string_view device_id,
                                                      RevocationReason reason, UnixTime now);
  void set_device_status(std::string_view id, DeviceStatus status, UnixTime now);
  void record_change(ChangeKind kind, std::string_view subject, UnixTime now);
  void record_audit(const Actor& actor, std::string_view action, std::string_view subject,
                    const nlohmann::json& details);
  std::vector<RuleRecord> query_rules(SQLite::Statement& statement);
  void read_all_access(AccessData& data);
  void read_listed_access(const std::set<std::string, std::less<>>& device_ids,
                          const std::set<std::string, std::less<>>& group_names, AccessData& data);

  SQLite::Database db_;
  std::string path_;
  bool read_only_;
};

template <class F>
auto SqliteStore::read(std::string_view what, F&& body) -> decltype(body()) {
  try {
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::DEFERRED);
    auto result = body();
    transaction.commit();
    return result;
  } catch (...) {
    return current_exception_error(what);
  }
}

template <class F>
auto SqliteStore::write(std::string_view what, const Actor& actor, F&& body) -> decltype(body()) {
  if (read_only_) {
    return make_error(Errc::io, std::string(what) + ": the registry is open read-only");
  }
  if (actor.name.empty()) {
    return make_error(Errc::invalid_input,
                      std::string(what) + ": no actor named for the audit log");
  }
  try {
    // IMMEDIATE: take the write lock now, waiting up to the busy timeout behind another writer.
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    auto result = body();
    if (result.ok()) transaction.commit();
    return result;  // not committed: the Transaction's destructor rolls everything back
  } catch (...) {
    return current_exception_error(what);
  }
}

// --- helpers ---

std::optional<Device> SqliteStore::load_device(std::string_view id) {
  auto query = prepare(db_,
                       "SELECT id, name, type, location, firmware, status, created_at, updated_at, "
                       "metadata FROM devices WHERE id = ?1",
                       id);
  if (!query.executeStep()) return std::nullopt;
  return device_from(query);
}

bool SqliteStore::group_exists(std::string_view name) {
  auto query = prepare(db_, "SELECT 1 FROM groups WHERE name = ?1", name);
  return query.executeStep();
}

bool SqliteStore::subject_exists(SubjectKind kind, std::string_view name) {
  if (kind == SubjectKind::group) return group_exists(name);
  auto query = prepare(db_, "SELECT 1 FROM devices WHERE id = ?1", name);
  return query.executeStep();
}

void SqliteStore::insert_group(std::string_view name, std::string_view description, UnixTime now) {
  prepare(db_, "INSERT INTO groups (name, description, created_at) VALUES (?1, ?2, ?3)", name,
          description, now)
      .exec();
  record_change(ChangeKind::group, name, now);
}

// The duplicate checks come first so the operator reads which certificate clashes; the UNIQUE
// constraints stay as the backstop.
Status SqliteStore::insert_certificate(CertificateKind kind, std::string_view device_id,
                                       const NewCertificate& c) {
  auto same_fingerprint = prepare(db_, "SELECT 1 FROM certificates WHERE sha256_fingerprint = ?1",
                                  c.sha256_fingerprint);
  if (same_fingerprint.executeStep()) {
    return make_error(Errc::conflict,
                      "a certificate with fingerprint " + c.sha256_fingerprint + " already exists");
  }
  auto same_serial =
      prepare(db_, "SELECT 1 FROM certificates WHERE issuer = ?1 AND serial_hex = ?2", c.issuer,
              c.serial_hex);
  if (same_serial.executeStep()) {
    return make_error(Errc::conflict, "a certificate with serial " + c.serial_hex +
                                          " from the same issuer already exists");
  }
  std::optional<std::string_view> device;
  if (kind == CertificateKind::device) device = device_id;
  prepare(db_,
          "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, kind, device_id, "
          "subject, not_before, not_after, status, pem) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9)",
          c.serial_hex, c.issuer, c.sha256_fingerprint, to_string(kind), device, c.subject,
          c.not_before, c.not_after, c.pem)
      .exec();
  return ok_status();
}

std::vector<std::string> SqliteStore::revoke_active_certificates(std::string_view device_id,
                                                                 RevocationReason reason,
                                                                 UnixTime now) {
  std::vector<std::string> serials;
  auto active = prepare(db_,
                        "SELECT serial_hex FROM certificates WHERE device_id = ?1 AND "
                        "status = 'active' ORDER BY rowid",
                        device_id);
  while (active.executeStep()) serials.push_back(active.getColumn(0).getString());
  prepare(db_,
          "UPDATE certificates SET status = 'revoked', revoked_at = ?1, revocation_reason = ?2 "
          "WHERE device_id = ?3 AND status = 'active'",
          now, revocation_reason_name(reason), device_id)
      .exec();
  return serials;
}

void SqliteStore::set_device_status(std::string_view id, DeviceStatus status, UnixTime now) {
  prepare(db_, "UPDATE devices SET status = ?1, updated_at = ?2 WHERE id = ?3", to_string(status),
          now, id)
      .exec();
}

// The change counter lives in meta and is bumped in the caller's transaction; a reader that saw
// seq N loads exactly the rows after N.
void SqliteStore::record_change(ChangeKind kind, std::string_view subject, UnixTime now) {
  db_.exec("UPDATE meta SET change_seq = change_seq + 1 WHERE id = 1");
  prepare(db_,
          "INSERT INTO changes (seq, at, kind, subject) "
          "SELECT change_seq, ?1, ?2, ?3 FROM meta WHERE id = 1",
          now, to_string(kind), subject)
      .exec();
}

void SqliteStore::record_audit(const Actor& actor, std::string_view action,
                               std::string_view subject, const nlohmann::json& details) {
  auto head = prepare(db_, "SELECT audit_head_seq, audit_head_hash FROM meta WHERE id = 1");
  if (!head.executeStep()) throw CorruptValue("no meta row");
  AuditEvent event;
  event.seq = head.getColumn(0).getInt64() + 1;
  event.prev_hash = head.getColumn(1).getString();
  event.at = actor.now;
  event.actor = actor.name;
  event.action = std::string(action);
  event.subject = std::string(subject);
  // Sorted keys and compact output: the same details always hash alike. Invalid UTF-8 in
  // operator-supplied text is replaced rather than failing the whole change.
  event.details = details.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  event.hash = audit_hash(event);
  prepare(db_,
          "INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
          event.seq, event.at, event.actor, event.action, event.subject, event.details,
          event.prev_hash, event.hash)
      .exec();
  prepare(db_, "UPDATE meta SET audit_head_seq = ?1, audit_head_hash = ?2 WHERE id = 1", event.seq,
          event.hash)
      .exec();
}

std::vector<RuleRecord> SqliteStore::query_rules(SQLite::Statement& statement) {
  std::vector<RuleRecord> rules;
  while (statement.executeStep()) rules.push_back(rule_from(statement));
  return rules;
}

// --- migrations ---

Status SqliteStore::create_or_upgrade(UnixTime now) {
  const Actor system{"onboard:migration", now};
  return write("prepare registry " + path_, system, [&]() -> Status {
    // Checked again under the write lock: another process may have migrated meanwhile.
    ONBOARD_TRY(const int version, schema::stored_version(db_, path_));
    if (version == schema::kCurrentVersion) return ok_status();
    schema::migrate(db_, version, now);
    nlohmann::json details = {{"from_version", version}, {"to_version", schema::kCurrentVersion}};
    record_audit(system, version == 0 ? "registry.create" : "registry.migrate", path_, details);
    return ok_status();
  });
}

// --- devices ---

Result<Device> SqliteStore::register_device(const NewDevice& input,
                                            const NewCertificate& certificate, const Actor& actor) {
  return insert_device(input, certificate, std::nullopt, 0, actor);
}

Result<Device> SqliteStore::register_device_in_batch(const NewDevice& input,
                                                     const NewCertificate& certificate,
                                                     std::string_view batch_id, std::int64_t line,
                                                     const Actor& actor) {
  return insert_device(input, certificate, batch_id, line, actor);
}

Result<Device> SqliteStore::insert_device(const NewDevice& input, const NewCertificate& certificate,
                                          std::optional<std::string_view> batch_id,
                                          std::int64_t line, const Actor& actor) {
  ONBOARD_CHECK(check_device_id(input.id));
  if (!input.type.empty()) ONBOARD_CHECK(check_group_name(input.type));
  ONBOARD_TRY(std::string metadata, compact_metadata(input.metadata));
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));

  return write("register device", actor, [&]() -> Result<Device> {
    if (batch_id) {
      auto batch = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", *batch_id);
      if (!batch.executeStep()) {
        return make_error(Errc::not_found, "batch " + std::string(*batch_id) + " does not exist");
      }
    }
    if (load_device(input.id)) {
      return make_error(Errc::conflict, "device " + input.id + " already exists");
    }
    const Device device{input.id,       input.name.empty() ? input.id : input.name,
                        input.type,     input.location,
                        input.firmware, DeviceStatus::active,
                        actor.now,      actor.now,
                        metadata};
    prepare(db_,
            "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
            "updated_at, metadata) VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?6, ?7)",
            device.id, device.name, device.type, device.location, device.firmware, actor.now,
            device.metadata)
        .exec();
    const bool new_group = !device.type.empty() && !group_exists(device.type);
    if (new_group) insert_group(device.type, "devices of type " + device.type, actor.now);
    // Fails on a duplicate certificate after the device row exists: returning the error makes
    // write() roll the device row back with it.
    ONBOARD_CHECK(insert_certificate(CertificateKind::device, device.id, cert));
    hold_key(device.id, cert, actor.now);
    if (batch_id) {
      prepare(db_, "INSERT INTO batch_devices (batch_id, device_id, line) VALUES (?1, ?2, ?3)",
              *batch_id, device.id, line)
          .exec();
    }
    record_change(ChangeKind::device, device.id, actor.now);
    nlohmann::json details = {
        {"name", device.name},        {"type", device.type},
        {"serial", cert.serial_hex},  {"fingerprint", cert.sha256_fingerprint},
        {"created_group", new_group}, {"key_held", !cert.held_key_pem.empty()}};
    if (batch_id) {
      details["batch"] = *batch_id;
      details["line"] = line;
    }
    record_audit(actor, "device.register", device.id, details);
    return device;
  });
}

Result<Device> SqliteStore::get_device(std::string_view id) {
  ONBOARD_CHECK(check_device_id(id));
  return read("get device", [&]() -> Result<Device> {
    if (auto device = load_device(id)) return *device;
    return make_error(Errc::not_found, "device " + std::string(id) + " does not exist");
  });
}

// `?1 IS NULL OR ...` keeps one fixed statement for every filter combination; keyset paging on
// the primary key stays fast however deep the page.
Result<std::vector<Device>> SqliteStore::list_devices(const DeviceFilter& filter) {
  std::optional<std::string_view> status;
  if (filter.status) status = to_string(*filter.status);
  const std::int64_t limit = filter.limit == 0 ? -1 : static_cast<std::int64_t>(filter.limit);
  return read("list devices", [&]() -> Result<std::vector<Device>> {
    auto query = prepare(db_,
                         "SELECT id, name, type, location, firmware, status, created_at, "
                         "updated_at, metadata FROM devices "
                         "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR type = ?2) "
                         "AND id > ?3 ORDER BY id LIMIT ?4",
                         status, filter.type, std::string_view(filter.after_id), limit);
    std::vector<Device> devices;
    while (query.executeStep()) devices.push_back(device_from(query));
    return devices;
  });
}

Result<std::int64_t> SqliteStore::count_devices(const DeviceFilter& filter) {
  std::optional<std::string_view> status;
  if (filter.status) status = to_string(*filter.status);
  return read("count devices", [&]() -> Result<std::int64_t> {
    auto query = prepare(db_,
                         "SELECT count(*) FROM devices "
                         "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR type = ?2)",
                         status, filter.type);
    query.executeStep();
    return query.getColumn(0).getInt64();
  });
}

Result<bool> SqliteStore::set_device_enabled(std::string_view id, bool enabled,
                                             const Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  const std::string name(id);
  return write(enabled ? "enable device" : "disable device", actor, [&]() -> Result<bool> {
    auto device = load_device(id);
    if (!device) return make_error(Errc::not_found, "device " + name + " does not exist");
    if (device->status == DeviceStatus::revoked) {
      return make_error(Errc::conflict,
                        "device " + name + " is revoked; it can no longer be enabled or disabled");
    }
    const auto target = enabled ? DeviceStatus::active : DeviceStatus::disabled;
    if (device->status == target) return false;
    set_device_status(id, target, actor.now);
    record_change(ChangeKind::device, id, actor.now);
    record_audit(actor, enabled ? "device.enable" : "device.disable", id, nlohmann::json::object());
    return true;
  });
}

// The audit row names each changed field with its old and new value; fields given but equal to
// what is stored are not changes.
Result<Device> SqliteStore::update_device(std::string_view id, const DeviceUpdate& update,
                                          const Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  if (update.empty()) return make_error(Errc::invalid_input, "nothing to update");
  if (update.type && !update.type->empty()) ONBOARD_CHECK(check_group_name(*update.type));
  std::optional<std::string> metadata;
  if (update.metadata) {
    ONBOARD_TRY(metadata, compact_metadata(*update.metadata));
  }
  const std::string name(id);
  return write("update device", actor, [&]() -> Result<Device> {
    auto loaded = load_device(id);
    if (!loaded) return make_error(Errc::not_found, "device " + name + " does not exist");
    if (loaded->status == DeviceStatus::revoked) {
      return make_error(Errc::conflict,
                        "device " + name + " is revoked; its record can no longer be changed");
    }
    Device device = *loaded;
    nlohmann::json changed = nlohmann::json::object();
    auto apply = [&](const char* field, std::string& current,
                     const std::optional<std::string>& wanted) {
      if (!wanted || *wanted == current) return;
      changed[field] = {{"from", current}, {"to", *wanted}};
      current = *wanted;
    };
    apply("name", device.name,
          update.name && update.name->empty() ? std::optional<std::string>(name) : update.name);
    apply("type", device.type, update.type);
    apply("location", device.location, update.location);
    apply("firmware", device.firmware, update.firmware);
    apply("metadata", device.metadata, metadata);
    if (changed.empty()) return device;  // nothing differs: nothing written, audit included
    device.updated_at = actor.now;
    prepare(db_,
            "UPDATE devices SET name = ?1, type = ?2, location = ?3, firmware = ?4, metadata = ?5, "
            "updated_at = ?6 WHERE id = ?7",
            device.name, device.type, device.location, device.firmware, device.metadata, actor.now,
            id)
        .exec();
    nlohmann::json details = {{"changed", changed}};
    if (changed.contains("type")) {
      // The broker finds a device's group by its type: the device's change row makes a running
      // broker reload it, and so apply the new group's rules and drop the old one's.
      const bool new_group = !device.type.empty() && !group_exists(device.type);
      if (new_group) insert_group(device.type, "devices of type " + device.type, actor.now);
      record_change(ChangeKind::device, id, actor.now);
      details["created_group"] = new_group;
    }
    record_audit(actor, "device.update", id, details);
    return device;
  });
}

Result<RevokeOutcome> SqliteStore::revoke_device(std::string_view id, RevocationReason reason,
                                                 const Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  return write("revoke device", actor, [&]() -> Result<RevokeOutcome> {
    auto device = load_device(id);
    if (!device)
      return make_error(Errc::not_found, "device " + std::string(id) + " does not exist");
    RevokeOutcome outcome;
    if (device->status == DeviceStatus::revoked) {
      outcome.already_revoked = true;  // idempotent: an answer, and nothing written
      return outcome;
    }
    outcome.revoked_serials = revoke_active_certificates(id, reason, actor.now);
    erase_held_key(id);  // a revoked device is never packaged: its key has no use left
    set_device_status(id, DeviceStatus::revoked, actor.now);
    record_change(ChangeKind::device, id, actor.now);
    record_audit(
        actor, "device.revoke", id,
        {{"reason", revocation_reason_name(reason)}, {"serials", outcome.revoked_serials}});
    return outcome;
  });
}

// --- certificates ---

Result<std::vector<Certificate>> SqliteStore::certificates_of(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("list certificates", [&]() -> Result<std::vector<Certificate>> {
    if (!subject_exists(SubjectKind::device, device_id)) {
      return make_error(Errc::not_found, "device " + std::string(device_id) + " does not exist");
    }
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates WHERE device_id = ?1 ORDER BY rowid",
                         device_id);
    std::vector<Certificate> certificates;
    while (query.executeStep()) certificates.push_back(certificate_from(query));
    return certificates;
  });
}

Result<Certificate> SqliteStore::find_certificate_by_fingerprint(std::string_view sha256_hex) {
  auto fingerprint = normalize_fingerprint(sha256_hex);
  if (!fingerprint) {
    return make_error(Errc::invalid_input, "a fingerprint must be 64 hex digits (SHA-256)");
  }
  return read("find certificate", [&]() -> Result<Certificate> {
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates WHERE sha256_fingerprint = ?1",
                         *fingerprint);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "no certificate has fingerprint " + *fingerprint);
    }
    return certificate_from(query);
  });
}

Result<AddedCertificate> SqliteStore::add_certificate(std::string_view device_id,
                                                      const NewCertificate& certificate,
                                                      bool supersede_active, const Actor& actor) {
  ONBOARD_CHECK(check_device_id(device_id));
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  const std::string id(device_id);
  return write("add certificate", actor, [&]() -> Result<AddedCertificate> {
    auto device = load_device(id);
    if (!device) return make_error(Errc::not_found, "device " + id + " does not exist");
    if (device->status == DeviceStatus::revoked) {
      return make_error(Errc::conflict,
                        "device " + id + " is revoked; it cannot receive a new certificate");
    }
    AddedCertificate added;
    if (supersede_active) {
      added.superseded_serials =
          revoke_active_certificates(id, RevocationReason::superseded, actor.now);
    }
    ONBOARD_CHECK(insert_certificate(CertificateKind::device, id, cert));
    if (!cert.held_key_pem.empty()) {
      hold_key(id, cert, actor.now);
    } else if (supersede_active) {
      erase_held_key(id);  // it belonged to a certificate that is now revoked
    }
    record_change(ChangeKind::device, id, actor.now);
    record_audit(actor, "certificate.add", id,
                 {{"serial", cert.serial_hex},
                  {"fingerprint", cert.sha256_fingerprint},
                  {"superseded", added.superseded_serials}});
    added.certificate = Certificate{cert.serial_hex,
                                    cert.issuer,
                                    cert.sha256_fingerprint,
                                    id,
                                    cert.subject,
                                    cert.not_before,
                                    cert.not_after,
                                    CertificateStatus::active,
                                    std::nullopt,
                                    std::nullopt,
                                    cert.pem,
                                    CertificateKind::device};
    return added;
  });
}

Result<std::vector<RevokedEntry>> SqliteStore::revoked_certificates(std::string_view issuer) {
  return read("list revoked certificates", [&]() -> Result<std::vector<RevokedEntry>> {
    auto query = prepare(db_,
                         "SELECT serial_hex, revoked_at, revocation_reason FROM certificates "
                         "WHERE status = 'revoked' AND issuer = ?1 ORDER BY serial_hex",
                         issuer);
    std::vector<RevokedEntry> entries;
    while (query.executeStep()) {
      entries.push_back(RevokedEntry{query.getColumn(0).getString(), query.getColumn(1).getInt64(),
                                     reason_from(query.getColumn(2).getString())});
    }
    return entries;
  });
}

Result<Certificate> SqliteStore::record_certificate(CertificateKind kind,
                                                    const NewCertificate& certificate,
                                                    const Actor& actor) {
  if (kind == CertificateKind::device) {
    return make_error(Errc::invalid_input,
                      "a device certificate is recorded with its device (register or renew it)");
  }
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  if (!cert.held_key_pem.empty()) {
    return make_error(Errc::invalid_input, "the registry holds keys of devices only");
  }
  return write("record certificate", actor, [&]() -> Result<Certificate> {
    ONBOARD_CHECK(insert_certificate(kind, {}, cert));
    record_audit(actor, "certificate.record", cert.serial_hex,
                 {{"kind", to_string(kind)},
                  {"fingerprint", cert.sha256_fingerprint},
                  {"subject", cert.subject},
                  {"not_after", cert.not_after}});
    return Certificate{cert.serial_hex,
                       cert.issuer,
                       cert.sha256_fingerprint,
                       {},
                       cert.subject,
                       cert.not_before,
                       cert.not_after,
                       CertificateStatus::active,
                       std::nullopt,
                       std::nullopt,
                       cert.pem,
                       kind};
  });
}

Result<std::vector<Certificate>> SqliteStore::list_certificates(const CertificateFilter& filter) {
  std::optional<std::string_view> kind, status;
  if (filter.kind) kind = to_string(*filter.kind);
  if (filter.status) status = to_string(*filter.status);
  return read("list certificates", [&]() -> Result<std::vector<Certificate>> {
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates "
                         "WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR status = ?2) "
                         "ORDER BY rowid",
                         kind, status);
    std::vector<Certificate> certificates;
    while (query.executeStep()) certificates.push_back(certificate_from(query));
    return certificates;
  });
}

Result<Certificate> SqliteStore::find_certificate_by_serial(std::string_view serial_hex) {
  std::string serial;
  for (char c : serial_hex) {
    if (c == ':') continue;  // the form `openssl x509 -serial` does not print, but others do
    serial.push_back(c >= 'a' && c <= 'f' ? static_cast<char>(c - 'a' + 'A') : c);
  }
  if (serial.empty() || serial.size() > 40 || !is_hex(serial, true)) {
    return make_error(Errc::invalid_input, "a serial must be 1 to 40 hex digits");
  }
  return read("find certificate", [&]() -> Result<Certificate> {
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates WHERE serial_hex = ?1 ORDER BY rowid LIMIT 2",
                         serial);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "no certificate has serial " + serial);
    }
    Certificate found = certificate_from(query);
    if (query.executeStep()) {
      return make_error(Errc::conflict, "more than one issuer used serial " + serial +
                                            "; name the certificate by its fingerprint");
    }
    return found;
  });
}

Result<CertificateRevokeOutcome> SqliteStore::revoke_certificate(std::string_view sha256_hex,
                                                                 RevocationReason reason,
                                                                 const Actor& actor) {
  auto fingerprint = normalize_fingerprint(sha256_hex);
  if (!fingerprint) {
    return make_error(Errc::invalid_input, "a fingerprint must be 64 hex digits (SHA-256)");
  }
  return write("revoke certificate", actor, [&]() -> Result<CertificateRevokeOutcome> {
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates WHERE sha256_fingerprint = ?1",
                         *fingerprint);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "no certificate has fingerprint " + *fingerprint);
    }
    CertificateRevokeOutcome outcome;
    outcome.certificate = certificate_from(query);
    query.reset();
    if (outcome.certificate.status == CertificateStatus::revoked) {
      outcome.already_revoked = true;  // idempotent: an answer, and nothing written
      return outcome;
    }
    prepare(db_,
            "UPDATE certificates SET status = 'revoked', revoked_at = ?1, revocation_reason = ?2 "
            "WHERE sha256_fingerprint = ?3",
            actor.now, revocation_reason_name(reason), *fingerprint)
        .exec();
    outcome.certificate.status = CertificateStatus::revoked;
    outcome.certificate.revoked_at = actor.now;
    outcome.certificate.revocation_reason = reason;
    const auto& cert = outcome.certificate;
    nlohmann::json details = {{"kind", to_string(cert.kind)},
                              {"fingerprint", cert.sha256_fingerprint},
                              {"reason", revocation_reason_name(reason)}};
    if (cert.kind == CertificateKind::device) {
      // A key kept for a revoked certificate has no use left.
      prepare(db_, "DELETE FROM held_keys WHERE device_id = ?1 AND certificate_sha256 = ?2",
              cert.device_id, cert.sha256_fingerprint)
          .exec();
      record_change(ChangeKind::device, cert.device_id, actor.now);
      details["device"] = cert.device_id;
    }
    record_audit(actor, "certificate.revoke", cert.serial_hex, details);
    return outcome;
  });
}

// --- rules and groups ---

Result<RuleRecord> SqliteStore::add_rule(const NewRule& rule, const Actor& actor) {
  ONBOARD_CHECK(check_subject(rule.subject_kind, rule.subject));
  if (rule.access < 1 || rule.access > kAccessReadWrite) {
    return make_error(Errc::invalid_input, "access must combine publish, subscribe and read");
  }
  if (rule.pattern.empty()) return make_error(Errc::invalid_input, "a rule needs a topic pattern");
  const bool device = rule.subject_kind == SubjectKind::device;
  return write("add rule", actor, [&]() -> Result<RuleRecord> {
    if (!subject_exists(rule.subject_kind, rule.subject)) {
      return make_error(Errc::not_found, std::string(to_string(rule.subject_kind)) + " " +
                                             rule.subject + " does not exist");
    }
    std::optional<std::string_view> device_id;
    std::optional<std::string_view> group_name;
    if (device) {
      device_id = rule.subject;
    } else {
      group_name = rule.subject;
    }
    prepare(db_,
            "INSERT INTO acl_rules (device_id, group_name, access, pattern, effect, priority, "
            "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            device_id, group_name, static_cast<int>(rule.access), rule.pattern,
            to_string(rule.effect), rule.priority, actor.now)
        .exec();
    const RuleRecord record{db_.getLastInsertRowid(),
                            rule.subject_kind,
                            rule.subject,
                            rule.pattern,
                            rule.access,
                            rule.effect,
                            rule.priority,
                            actor.now};
    record_change(device ? ChangeKind::device : ChangeKind::group, rule.subject, actor.now);
    record_audit(actor, rule.effect == RuleEffect::allow ? "acl.grant" : "acl.deny",
                 std::to_string(record.id),
                 {{std::string(to_string(rule.subject_kind)), rule.subject},
                  {"access", rule.access},
                  {"pattern", rule.pattern},
                  {"priority", rule.priority}});
    return record;
  });
}

Status SqliteStore::remove_rule(std::int64_t rule_id, const Actor& actor) {
  return write("remove rule", actor, [&]() -> Status {
    auto query = prepare(db_,
                         "SELECT id, device_id, group_name, access, pattern, effect, priority, "
                         "created_at FROM acl_rules WHERE id = ?1",
                         rule_id);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "rule " + std::to_string(rule_id) + " does not exist");
    }
    const RuleRecord rule = rule_from(query);
    query.reset();
    prepare(db_, "DELETE FROM acl_rules WHERE id = ?1", rule_id).exec();
    const bool device = rule.subject_kind == SubjectKind::device;
    record_change(device ? ChangeKind::device : ChangeKind::group, rule.subject, actor.now);
    record_audit(actor, "acl.remove", std::to_string(rule_id),
                 {{std::string(to_string(rule.subject_kind)), rule.subject},
                  {"access", rule.access},
                  {"pattern", rule.pattern},
                  {"effect", to_string(rule.effect)},
                  {"priority", rule.priority}});
    return ok_status();
  });
}

Result<std::vector<RuleRecord>> SqliteStore::rules_for_subject(SubjectKind kind,
                                                               std::string_view name) {
  ONBOARD_CHECK(check_subject(kind, name));
  return read("list rules", [&]() -> Result<std::vector<RuleRecord>> {
    if (!subject_exists(kind, name)) {
      return make_error(Errc::not_found,
                        std::string(to_string(kind)) + " " + std::string(name) + " does not exist");
    }
    auto query = prepare(db_,
                         kind == SubjectKind::device
                             ? "SELECT id, device_id, group_name, access, pattern, effect, "
                               "priority, created_at FROM acl_rules WHERE device_id = ?1 "
                               "ORDER BY priority DESC, id"
                             : "SELECT id, device_id, group_name, access, pattern, effect, "
                               "priority, created_at FROM acl_rules WHERE group_name = ?1 "
                               "ORDER BY priority DESC, id",
                         name);
    return query_rules(query);
  });
}

Result<std::vector<RuleRecord>> SqliteStore::rules_for_device(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("list rules", [&]() -> Result<std::vector<RuleRecord>> {
    auto device = load_device(device_id);
    if (!device) {
      return make_error(Errc::not_found, "device " + std::string(device_id) + " does not exist");
    }
    // The type's group is NULL-bound for an untyped device so that it matches nothing.
    std::optional<std::string_view> type;
    if (!device->type.empty()) type = device->type;
    auto query = prepare(db_,
                         "SELECT id, device_id, group_name, access, pattern, effect, priority, "
                         "created_at FROM acl_rules "
                         "WHERE device_id = ?1 OR group_name = ?2 OR group_name = ?3 "
                         "ORDER BY priority DESC, id",
                         device_id, kDefaultGroup, type);
    return query_rules(query);
  });
}

Result<Group> SqliteStore::create_group(std::string_view name, std::string_view description,
                                        const Actor& actor) {
  ONBOARD_CHECK(check_group_name(name));
  return write("create group", actor, [&]() -> Result<Group> {
    if (group_exists(name)) {
      return make_error(Errc::conflict, "group " + std::string(name) + " already exists");
    }
    insert_group(name, description, actor.now);
    record_audit(actor, "group.create", name, {{"description", description}});
    return Group{std::string(name), std::string(description), actor.now};
  });
}

Result<std::vector<Group>> SqliteStore::list_groups() {
  return read("list groups", [&]() -> Result<std::vector<Group>> {
    auto query = prepare(db_, "SELECT name, description, created_at FROM groups ORDER BY name");
    std::vector<Group> groups;
    while (query.executeStep()) {
      groups.push_back(Group{query.getColumn(0).getString(), query.getColumn(1).getString(),
                             query.getColumn(2).getInt64()});
    }
    return groups;
  });
}

// --- CRL ---

Result<std::uint64_t> SqliteStore::next_crl_number(const Actor& actor) {
  return write("next CRL number", actor, [&]() -> Result<std::uint64_t> {
    prepare(db_,
            "UPDATE meta SET crl_number = crl_number + 1, crl_last_issued_at = ?1 WHERE id = 1",
            actor.now)
        .exec();
    const auto number = db_.execAndGet("SELECT crl_number FROM meta WHERE id = 1").getInt64();
    record_change(ChangeKind::crl, "", actor.now);
    record_audit(actor, "crl.issue", std::to_string(number), nlohmann::json::object());
    return static_cast<std::uint64_t>(number);
  });
}

Result<std::uint64_t> SqliteStore::next_root_crl_number(const Actor& actor) {
  return write("next root CRL number", actor, [&]() -> Result<std::uint64_t> {
    db_.exec("UPDATE meta SET root_crl_number = root_crl_number + 1 WHERE id = 1");
    const auto number = db_.execAndGet("SELECT root_crl_number FROM meta WHERE id = 1").getInt64();
    record_audit(actor, "crl.issue_root", std::to_string(number), nlohmann::json::object());
    return static_cast<std::uint64_t>(number);
  });
}

Result<CrlState> SqliteStore::crl_state() {
  return read("read CRL state", [&]() -> Result<CrlState> {
    auto query = prepare(db_, "SELECT crl_number, crl_last_issued_at FROM meta WHERE id = 1");
    if (!query.executeStep()) throw CorruptValue("no meta row");
    CrlState state{static_cast<std::uint64_t>(query.getColumn(0).getInt64()), std::nullopt};
    if (!query.getColumn(1).isNull()) state.last_issued_at = query.getColumn(1).getInt64();
    return state;
  });
}

// --- audit and change feed ---

Result<std::vector<AuditEvent>> SqliteStore::audit_list(std::size_t limit, std::int64_t after_seq) {
  const std::int64_t sql_limit = limit == 0 ? -1 : static_cast<std::int64_t>(limit);
  return read("list audit events", [&]() -> Result<std::vector<AuditEvent>> {
    auto query = prepare(db_,
                         "SELECT seq, at, actor, action, subject, details, prev_hash, hash "
                         "FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                         after_seq, sql_limit);
    std::vector<AuditEvent> events;
    while (query.executeStep()) events.push_back(audit_event_from(query));
    return events;
  });
}

// One read transaction: the rows and the head come from the same snapshot, so a concurrent
// append cannot look like tampering.
Result<AuditCheck> SqliteStore::verify_audit() {
  return read("verify audit log", [&]() -> Result<AuditCheck> {
    AuditChainVerifier verifier;
    auto rows = prepare(db_,
                        "SELECT seq, at, actor, action, subject, details, prev_hash, hash "
                        "FROM audit_events ORDER BY seq");
    while (rows.executeStep()) {
      if (!verifier.add(audit_event_from(rows))) break;  // the first problem is the answer
    }
    rows.reset();
    auto head_query = prepare(db_, "SELECT audit_head_seq, audit_head_hash FROM meta WHERE id = 1");
    if (!head_query.executeStep()) throw CorruptValue("no meta row");
    const AuditHead head{head_query.getColumn(0).getInt64(), head_query.getColumn(1).getString()};
    return verifier.finish(head);
  });
}

Result<std::int64_t> SqliteStore::change_seq() {
  return read("read change sequence", [&]() -> Result<std::int64_t> {
    return db_.execAndGet("SELECT change_seq FROM meta WHERE id = 1").getInt64();
  });
}

Result<std::vector<Change>> SqliteStore::changes_since(std::int64_t seq) {
  return read("read changes", [&]() -> Result<std::vector<Change>> {
    auto query =
        prepare(db_, "SELECT seq, at, kind, subject FROM changes WHERE seq > ?1 ORDER BY seq", seq);
    std::vector<Change> changes;
    while (query.executeStep()) {
      changes.push_back(Change{query.getColumn(0).getInt64(), query.getColumn(1).getInt64(),
                               change_kind_from(query.getColumn(2).getString()),
                               query.getColumn(3).getString()});
    }
    return changes;
  });
}

// --- access data for the broker ---

Result<AccessData> SqliteStore::read_access(const AccessQuery& query) {
  return read("read access data", [&]() -> Result<AccessData> {
    AccessData data;
    // The first read fixes the transaction's view: every row below is as of this seq.
    data.change_seq = db_.execAndGet("SELECT change_seq FROM meta WHERE id = 1").getInt64();
    switch (query.scope) {
      case AccessQuery::Scope::everything:
        read_all_access(data);
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
        auto changes =
            prepare(db_, "SELECT kind, subject FROM changes WHERE seq > ?1", query.after_seq);
        while (changes.executeStep()) {
          const ChangeKind kind = change_kind_from(changes.getColumn(0).getString());
          if (kind == ChangeKind::device) device_ids.insert(changes.getColumn(1).getString());
          if (kind == ChangeKind::group) group_names.insert(changes.getColumn(1).getString());
        }
        changes.reset();
        read_listed_access(device_ids, group_names, data);
        break;
      }
    }
    return data;
  });
}

// A handful of set-based reads, merged in id order: the same six statements at any fleet size.
void SqliteStore::read_all_access(AccessData& data) {
  acl::PatternPool pool;  // equal patterns share a node from the start (registry/pattern.h)
  acl::PatternPool::Session patterns(pool);
  data.devices.reserve(
      static_cast<std::size_t>(db_.execAndGet("SELECT count(*) FROM devices").getInt64()));
  auto devices = prepare(db_, "SELECT id, status, type FROM devices ORDER BY id");
  auto rules = prepare(db_,
                       "SELECT device_id, id, access, pattern, effect, priority FROM acl_rules "
                       "WHERE device_id IS NOT NULL ORDER BY device_id, priority DESC, id");
  auto certificates = prepare(db_,
                              "SELECT device_id, sha256_fingerprint, serial_hex, status, "
                              "not_before, not_after FROM certificates WHERE kind = 'device' "
                              "ORDER BY device_id, rowid");
  bool rule_row = rules.executeStep();
  bool cert_row = certificates.executeStep();
  while (devices.executeStep()) {
    DeviceAccess device = device_access_from(devices);
    take_rows_of(rules, rule_row, device.id, [&](const SQLite::Statement& row) {
      device.rules.push_back(access_rule_from(row, 1, patterns));
    });
    take_rows_of(certificates, cert_row, device.id, [&](const SQLite::Statement& row) {
      device.certificates.push_back(certificate_access_from(row, 1));
    });
    // Grown row by row, the lists have room to spare (sixteen rules for ten); trimmed here, where
    // the freed block is reused by the next device, rather than in Snapshot::build.
    device.rules.shrink_to_fit();
    device.certificates.shrink_to_fit();
    data.devices.push_back(std::move(device));
  }

  auto groups = prepare(db_, "SELECT name FROM groups ORDER BY name");
  auto group_rules = prepare(db_,
                             "SELECT group_name, id, access, pattern, effect, priority FROM "
                             "acl_rules WHERE group_name IS NOT NULL "
                             "ORDER BY group_name, priority DESC, id");
  bool group_rule_row = group_rules.executeStep();
  while (groups.executeStep()) {
    GroupAccess group{groups.getColumn(0).getString(), {}};
    take_rows_of(group_rules, group_rule_row, group.name, [&](const SQLite::Statement& row) {
      group.rules.push_back(access_rule_from(row, 1, patterns));
    });
    data.groups.push_back(std::move(group));
  }
}

// Three indexed lookups per device and one per group, each statement prepared once.
void SqliteStore::read_listed_access(const std::set<std::string, std::less<>>& device_ids,
                                     const std::set<std::string, std::less<>>& group_names,
                                     AccessData& data) {
  acl::PatternPool pool;  // equal patterns share a node from the start (registry/pattern.h)
  acl::PatternPool::Session patterns(pool);
  SQLite::Statement device_row(db_, "SELECT id, status, type FROM devices WHERE id = ?1");
  SQLite::Statement rules(db_,
                          "SELECT id, access, pattern, effect, priority FROM acl_rules "
                          "WHERE device_id = ?1 ORDER BY priority DESC, id");
  SQLite::Statement certificates(db_,
                                 "SELECT sha256_fingerprint, serial_hex, status, not_before, "
                                 "not_after FROM certificates "
                                 "WHERE device_id = ?1 AND kind = 'device' ORDER BY rowid");
  for (const auto& id : device_ids) {
    device_row.reset();
    device_row.bind(1, id);
    if (!device_row.executeStep()) {
      data.missing_devices.push_back(id);
      continue;
    }
    DeviceAccess device = device_access_from(device_row);
    rules.reset();
    rules.bind(1, id);
    while (rules.executeStep()) device.rules.push_back(access_rule_from(rules, 0, patterns));
    certificates.reset();
    certificates.bind(1, id);
    while (certificates.executeStep()) {
      device.certificates.push_back(certificate_access_from(certificates, 0));
    }
    data.devices.push_back(std::move(device));
  }

  SQLite::Statement group_rules(db_,
                                "SELECT id, access, pattern, effect, priority FROM acl_rules "
                                "WHERE group_name = ?1 ORDER BY priority DESC, id");
  for (const auto& name : group_names) {
    GroupAccess group{name, {}};
    group_rules.reset();
    group_rules.bind(1, name);
    while (group_rules.executeStep())
      group.rules.push_back(access_rule_from(group_rules, 0, patterns));
    data.groups.push_back(std::move(group));
  }
}

// --- held keys, batches, bundles, API tokens ---

void SqliteStore::hold_key(std::string_view device_id, const NewCertificate& certificate,
                           UnixTime now) {
  if (certificate.held_key_pem.empty()) return;
  prepare(db_,
          "INSERT OR REPLACE INTO held_keys (device_id, certificate_sha256, encrypted_pem, "
          "created_at) VALUES (?1, ?2, ?3, ?4)",
          device_id, certificate.sha256_fingerprint, certificate.held_key_pem, now)
      .exec();
}

// The connection runs with secure_delete on (see open_sqlite_store), so the row's bytes are
// overwritten with zeros in the page, not merely unlinked.
void SqliteStore::erase_held_key(std::string_view device_id) {
  prepare(db_, "DELETE FROM held_keys WHERE device_id = ?1", device_id).exec();
}

Result<std::optional<HeldKey>> SqliteStore::held_key(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("read held key", [&]() -> Result<std::optional<HeldKey>> {
    if (!subject_exists(SubjectKind::device, device_id)) {
      return make_error(Errc::not_found, "device " + std::string(device_id) + " does not exist");
    }
    auto query = prepare(db_,
                         "SELECT device_id, certificate_sha256, encrypted_pem, created_at "
                         "FROM held_keys WHERE device_id = ?1",
                         device_id);
    if (!query.executeStep()) return std::optional<HeldKey>();
    return std::optional<HeldKey>(
        HeldKey{query.getColumn(0).getString(), query.getColumn(1).getString(),
                query.getColumn(2).getString(), query.getColumn(3).getInt64()});
  });
}

Status SqliteStore::create_batch(std::string_view id, std::string_view source, const Actor& actor) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "batch id: " + *problem);
  }
  return write("create batch", actor, [&]() -> Status {
    auto existing = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", id);
    if (existing.executeStep()) {
      return make_error(Errc::conflict, "batch " + std::string(id) + " already exists");
    }
    prepare(db_, "INSERT INTO batches (id, source, created_at) VALUES (?1, ?2, ?3)", id, source,
            actor.now)
        .exec();
    record_audit(actor, "batch.create", id, {{"source", source}});
    return ok_status();
  });
}

Result<Batch> SqliteStore::get_batch(std::string_view id) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "batch id: " + *problem);
  }
  return read("read batch", [&]() -> Result<Batch> {
    auto query = prepare(db_, "SELECT id, source, created_at FROM batches WHERE id = ?1", id);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "batch " + std::string(id) + " does not exist");
    }
    Batch batch{query.getColumn(0).getString(),
                query.getColumn(1).getString(),
                query.getColumn(2).getInt64(),
                {}};
    auto members = prepare(
        db_, "SELECT device_id, line FROM batch_devices WHERE batch_id = ?1 ORDER BY line", id);
    while (members.executeStep()) {
      batch.devices.push_back({members.getColumn(0).getString(), members.getColumn(1).getInt64()});
    }
    return batch;
  });
}

std::optional<BundleRecord> SqliteStore::load_bundle(std::string_view id) {
  auto query = prepare(db_,
                       "SELECT id, batch_id, path, sha256, size, with_keys, created_at, "
                       "downloaded_at, downloaded_by FROM bundles WHERE id = ?1",
                       id);
  if (!query.executeStep()) return std::nullopt;
  BundleRecord b;
  b.id = query.getColumn(0).getString();
  b.batch_id = text_or_null(query.getColumn(1)).value_or("");
  b.path = query.getColumn(2).getString();
  b.sha256 = query.getColumn(3).getString();
  b.size = query.getColumn(4).getInt64();
  b.with_keys = query.getColumn(5).getInt() != 0;
  b.created_at = query.getColumn(6).getInt64();
  if (!query.getColumn(7).isNull()) b.downloaded_at = query.getColumn(7).getInt64();
  b.downloaded_by = text_or_null(query.getColumn(8)).value_or("");
  auto devices = prepare(db_,
                         "SELECT device_id, certificate_sha256 FROM bundle_devices "
                         "WHERE bundle_id = ?1 ORDER BY device_id",
                         id);
  while (devices.executeStep()) {
    b.devices.push_back({devices.getColumn(0).getString(), devices.getColumn(1).getString()});
  }
  return b;
}

Result<BundleRecord> SqliteStore::record_bundle(const BundleRecord& input, const Actor& actor) {
  auto bad = [](std::string why) { return make_error(Errc::invalid_input, std::move(why)); };
  if (auto problem = device_id_problem(input.id)) return bad("bundle id: " + *problem);
  if (input.devices.empty()) return bad("a bundle holds at least one device");
  if (input.path.empty()) return bad("a bundle needs the path it was written to");
  if (!normalize_fingerprint(input.sha256)) return bad("a bundle's SHA-256 must be 64 hex digits");
  for (const auto& d : input.devices) ONBOARD_CHECK(check_device_id(d.device_id));

  auto recorded = write("record bundle", actor, [&]() -> Result<BundleRecord> {
    if (load_bundle(input.id)) {
      return make_error(Errc::conflict, "bundle " + input.id + " already exists");
    }
    if (!input.batch_id.empty()) {
      auto batch = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", input.batch_id);
      if (!batch.executeStep()) {
        return make_error(Errc::not_found, "batch " + input.batch_id + " does not exist");
      }
    }
    // Re-checked under the write lock: a device revoked or disabled since the caller read it
    // must not be delivered.
    for (const auto& d : input.devices) {
      auto device = load_device(d.device_id);
      if (!device) return make_error(Errc::not_found, "device " + d.device_id + " does not exist");
      if (device->status != DeviceStatus::active) {
        return make_error(Errc::conflict, "device " + d.device_id + " is " +
                                              std::string(to_string(device->status)) +
                                              " and cannot be bundled");
      }
      auto certificate = prepare(db_,
                                 "SELECT 1 FROM certificates WHERE sha256_fingerprint = ?1 AND "
                                 "device_id = ?2 AND status = 'active'",
                                 d.certificate_sha256, d.device_id);
      if (!certificate.executeStep()) {
        return make_error(Errc::conflict, "the certificate bundled for " + d.device_id +
                                              " is no longer its active certificate");
      }
    }
    prepare(db_,
            "INSERT INTO bundles (id, batch_id, path, sha256, size, with_keys, created_at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            input.id, input.batch_id.empty() ? std::optional<std::string>() : input.batch_id,
            input.path, *normalize_fingerprint(input.sha256), input.size, input.with_keys ? 1 : 0,
            actor.now)
        .exec();
    nlohmann::json wiped = nlohmann::json::array();
    for (const auto& d : input.devices) {
      prepare(db_,
              "INSERT INTO bundle_devices (bundle_id, device_id, certificate_sha256) "
              "VALUES (?1, ?2, ?3)",
              input.id, d.device_id, d.certificate_sha256)
          .exec();
      if (!input.with_keys) continue;
      auto erased = prepare(db_,
                            "DELETE FROM held_keys WHERE device_id = ?1 AND "
                            "certificate_sha256 = ?2",
                            d.device_id, d.certificate_sha256);
      if (erased.exec() > 0) wiped.push_back(d.device_id);
    }
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& d : input.devices) devices.push_back(d.device_id);
    record_audit(actor, "bundle.create", input.id,
                 {{"devices", devices},
                  {"sha256", *normalize_fingerprint(input.sha256)},
                  {"batch", input.batch_id},
                  {"keys_wiped", wiped}});
    return *load_bundle(input.id);
  });
  if (recorded.ok() && recorded->with_keys) {
    // The erased rows' old page images still sit in the WAL until a checkpoint copies the zeroed
    // pages back and the log is truncated. Best effort: a busy reader only delays it (the keys
    // there are encrypted anyway).
    try {
      db_.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (...) {
    }
  }
  return recorded;
}

Result<BundleRecord> SqliteStore::get_bundle(std::string_view id) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "bundle id: " + *problem);
  }
  return read("read bundle", [&]() -> Result<BundleRecord> {
    if (auto bundle = load_bundle(id)) return *bundle;
    return make_error(Errc::not_found, "bundle " + std::string(id) + " does not exist");
  });
}

Result<std::vector<BundleRecord>> SqliteStore::bundles_of_device(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("list bundles", [&]() -> Result<std::vector<BundleRecord>> {
    auto query = prepare(db_,
                         "SELECT b.id FROM bundle_devices d JOIN bundles b ON b.id = d.bundle_id "
                         "WHERE d.device_id = ?1 ORDER BY b.created_at, b.id",
                         device_id);
    std::vector<std::string> ids;
    while (query.executeStep()) ids.push_back(query.getColumn(0).getString());
    std::vector<BundleRecord> bundles;
    for (const auto& id : ids) bundles.push_back(*load_bundle(id));
    return bundles;
  });
}

Result<BundleRecord> SqliteStore::claim_bundle_download(std::string_view id,
                                                        std::string_view downloaded_by,
                                                        const Actor& actor) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "bundle id: " + *problem);
  }
  return write("claim bundle download", actor, [&]() -> Result<BundleRecord> {
    // Conditional on downloaded_at IS NULL: of two concurrent claims exactly one changes a row.
    auto claim = prepare(db_,
                         "UPDATE bundles SET downloaded_at = ?1, downloaded_by = ?2 "
                         "WHERE id = ?3 AND downloaded_at IS NULL",
                         actor.now, downloaded_by, id);
    if (claim.exec() == 0) {
      if (!load_bundle(id)) {
        return make_error(Errc::not_found, "bundle " + std::string(id) + " does not exist");
      }
      return make_error(Errc::conflict,
                        "bundle " + std::string(id) + " has been downloaded already");
    }
    record_audit(actor, "bundle.download", id, {{"by", downloaded_by}});
    return *load_bundle(id);
  });
}

namespace {
ApiToken api_token_from(const SQLite::Statement& s) {
  ApiToken t;
  t.id = s.getColumn(0).getInt64();
  t.name = s.getColumn(1).getString();
  auto role = parse_api_role(s.getColumn(2).getString());
  if (!role) throw CorruptValue("an unknown API role");
  t.role = *role;
  t.created_at = s.getColumn(3).getInt64();
  if (!s.getColumn(4).isNull()) t.revoked_at = s.getColumn(4).getInt64();
  return t;
}
}  // namespace

Result<ApiToken> SqliteStore::create_api_token(std::string_view name, ApiRole role,
                                               std::string_view token_sha256, const Actor& actor) {
  if (auto problem = device_id_problem(name)) {
    return make_error(Errc::invalid_input, "token name: " + *problem);
  }
  auto hash = normalize_fingerprint(token_sha256);
  if (!hash) return make_error(Errc::invalid_input, "a token hash must be 64 hex digits");
  return write("create API token", actor, [&]() -> Result<ApiToken> {
    auto existing = prepare(db_, "SELECT 1 FROM api_tokens WHERE name = ?1", name);
    if (existing.executeStep()) {
      return make_error(Errc::conflict, "a token named " + std::string(name) + " already exists");
    }
    prepare(db_,
            "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
            name, to_string(role), *hash, actor.now)
        .exec();
    record_audit(actor, "token.create", name, {{"role", to_string(role)}});
    return ApiToken{db_.getLastInsertRowid(), std::string(name), role, actor.now, std::nullopt};
  });
}

Result<std::vector<ApiToken>> SqliteStore::list_api_tokens() {
  return read("list API tokens", [&]() -> Result<std::vector<ApiToken>> {
    auto query =
        prepare(db_, "SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY name");
    std::vector<ApiToken> tokens;
    while (query.executeStep()) tokens.push_back(api_token_from(query));
    return tokens;
  });
}

Result<bool> SqliteStore::revoke_api_token(std::string_view name, const Actor& actor) {
  if (auto problem = device_id_problem(name)) {
    return make_error(Errc::invalid_input, "token name: " + *problem);
  }
  return write("revoke API token", actor, [&]() -> Result<bool> {
    auto query = prepare(db_, "SELECT revoked_at FROM api_tokens WHERE name = ?1", name);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "no token is named " + std::string(name));
    }
    if (!query.getColumn(0).isNull()) return false;
    prepare(db_, "UPDATE api_tokens SET revoked_at = ?1 WHERE name = ?2", actor.now, name).exec();
    record_audit(actor, "token.revoke", name, nlohmann::json::object());
    return true;
  });
}

Result<ApiToken> SqliteStore::find_api_token(std::string_view token_sha256) {
  auto hash = normalize_fingerprint(token_sha256);
  if (!hash) return make_error(Errc::invalid_input, "a token hash must be 64 hex digits");
  return read("find API token", [&]() -> Result<ApiToken> {
    auto query = prepare(db_,
                         "SELECT id, name, role, created_at, revoked_at FROM api_tokens "
                         "WHERE token_sha256 = ?1 AND revoked_at IS NULL",
                         *hash);
    if (!query.executeStep()) return make_error(Errc::not_found, "unknown or revoked token");
    return api_token_from(query);
  });
}

Status SqliteStore::record_event(std::string_view action, std::string_view subject,
                                 std::string_view details, const Actor& actor) {
  auto parsed = nlohmann::json::parse(details, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return make_error(Errc::invalid_input, "audit details must be a JSON object");
  }
  if (action.empty()) return make_error(Errc::invalid_input, "an audit row needs an action");
  return write("record event", actor, [&]() -> Status {
    record_audit(actor, action, subject, parsed);
    return ok_status();
  });
}

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& path, OpenMode mode) {
  const std::string where = path.string();
  const bool read_only = mode == OpenMode::read_only;
  std::error_code ignored;
  if (read_only && !std::filesystem::exists(path, ignored)) {
    return make_error(Errc::not_found, "no registry at " + where);
  }
  try {
    const int flags =
        read_only ? SQLite::OPEN_READONLY : (SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    SQLite::Database db(where, flags, kBusyTimeoutMs);
    // Recognise the file before changing anything in it: a foreign file is left untouched.
    ONBOARD_TRY(const int version, schema::stored_version(db, where));
    if (read_only) {
      if (version == 0)
        return make_error(Errc::not_found, where + " is not an initialised registry");
      if (version < schema::kCurrentVersion) {
        return make_error(Errc::corrupt, where + " has the old schema version " +
                                             std::to_string(version) +
                                             "; open it once with onboardctl to upgrade it");
      }
      return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(db), where, true));
    }
    if (db.execAndGet("PRAGMA journal_mode = WAL").getString() != "wal") {
      return make_error(Errc::io, "open registry " + where + ": cannot switch to WAL mode");
    }
    db.exec("PRAGMA foreign_keys = ON");
    // Deleted content (a held key once packaged) is overwritten with zeros, not just unlinked.
    db.exec("PRAGMA secure_delete = ON");
    auto store = std::make_unique<SqliteStore>(std::move(db), where, false);
    ONBOARD_CHECK(store->create_or_upgrade(unix_now()));
    return std::unique_ptr<Store>(std::move(store));
  } catch (...) {
    return current_exception_error("open registry " + where);
  }
}

}  // namespace onboard::registry
