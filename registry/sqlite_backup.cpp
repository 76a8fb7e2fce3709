#include "registry/sqlite_backup.h"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string_view>
#include <vector>

#include "core/encoding.h"
#include "core/files.h"
#include "registry/sqlite_access.h"
#include "registry/sqlite_store.h"
#include "registry/store_internal.h"

namespace onboard::registry {
namespace sql {
namespace {

// The tables of schema `schema` (main or backup), each with its columns in order.
std::vector<std::string> table_shapes(Database& db, const std::string& schema) {
  std::vector<std::string> shapes;
  auto tables = prepare(db, ("SELECT name FROM " + schema +
                             ".sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                             "ORDER BY name")
                                .c_str());
  while (tables.step()) {
    const std::string name = tables.text(0);
    auto columns = prepare(db, "SELECT name FROM pragma_table_info(?1, ?2) ORDER BY cid", name,
                           std::string_view(schema));
    std::string shape = name + "(";
    while (columns.step()) shape += columns.text(0) + ",";
    shapes.push_back(shape + ")");
  }
  return shapes;
}

// The main schema's tables, each after every table it refers to.
std::vector<std::string> tables_parents_first(Database& db) {
  std::vector<std::pair<std::string, std::set<std::string>>> pending;
  auto names = prepare(db,
                       "SELECT name FROM main.sqlite_master WHERE type = 'table' AND "
                       "name NOT LIKE 'sqlite_%' ORDER BY name");
  while (names.step()) {
    std::string name = names.text(0);
    std::set<std::string> parents;
    auto keys = prepare(db, "SELECT \"table\" FROM pragma_foreign_key_list(?1, 'main')", name);
    while (keys.step()) {
      if (keys.text(0) != name) parents.insert(keys.text(0));
    }
    pending.emplace_back(std::move(name), std::move(parents));
  }
  std::vector<std::string> ordered;
  std::set<std::string> placed;
  while (!pending.empty()) {
    const auto ready = std::find_if(pending.begin(), pending.end(), [&](const auto& table) {
      return std::includes(placed.begin(), placed.end(), table.second.begin(), table.second.end());
    });
    if (ready == pending.end())
      throw CorruptValue("the registry's tables refer to each other in a cycle");
    placed.insert(ready->first);
    ordered.push_back(ready->first);
    pending.erase(ready);
  }
  return ordered;
}

std::int64_t changed_rows(Database& db, const char* sql) { return prepare(db, sql).exec(); }

}  // namespace

Result<RegistrySummary> SqlStore::summary() {
  return read("summarize registry", [&]() -> Result<RegistrySummary> {
    RegistrySummary s;
    auto meta = prepare(db_, "SELECT change_seq, audit_head_seq, audit_head_hash FROM meta");
    if (!meta.step()) throw CorruptValue("no meta row");
    s.change_seq = meta.int64(0);
    s.audit_rows = meta.int64(1);
    s.audit_head = meta.text(2);
    s.devices = query_int64(db_, "SELECT count(*) FROM devices");
    return s;
  });
}

Result<RestoreSummary> SqlStore::restore_attached(std::string_view backup_name,
                                                  const Actor& actor) {
  ONBOARD_TRY(RegistrySummary replaced, summary());
  return write("restore registry", actor, [&]() -> Result<RestoreSummary> {
    RestoreSummary out;
    out.replaced = replaced;
    if (table_shapes(db_, "main") != table_shapes(db_, "backup")) {
      return make_error(Errc::corrupt,
                        "the backup's tables differ from this registry's; nothing was changed");
    }
    // What the live registry has decided since the backup and must keep, before it is replaced.
    db_.exec(R"sql(
      CREATE TEMP TABLE keep_subjects AS
        SELECT 'device' AS kind, id AS subject FROM main.devices
        UNION SELECT 'group', name FROM main.groups;
      CREATE TEMP TABLE keep_revoked_certificates AS
        SELECT * FROM main.certificates WHERE status = 'revoked';
      CREATE TEMP TABLE keep_revoked_devices AS
        SELECT id FROM main.devices WHERE status = 'revoked';
      CREATE TEMP TABLE keep_revoked_tokens AS
        SELECT token_sha256, revoked_at FROM main.api_tokens WHERE revoked_at IS NOT NULL;
      CREATE TEMP TABLE keep_held_keys AS
        SELECT device_id, certificate_sha256 FROM main.held_keys;
      CREATE TEMP TABLE keep_downloads AS
        SELECT id, downloaded_at, downloaded_by FROM main.bundles WHERE downloaded_at IS NOT NULL;
      CREATE TEMP TABLE keep_meta AS SELECT * FROM main.meta;
      CREATE TEMP TABLE keep_sequence AS SELECT * FROM main.sqlite_sequence;
    )sql");
    // Table names come from the registry's own schema (checked equal above), never from input.
    // Children are emptied before their parents and parents filled before their children, so that
    // no row ever refers to a missing one.
    const std::vector<std::string> tables = tables_parents_first(db_);
    for (auto table = tables.rbegin(); table != tables.rend(); ++table) {
      db_.exec("DELETE FROM main.\"" + *table + "\"");
    }
    for (const auto& table : tables) {
      db_.exec("INSERT INTO main.\"" + table + "\" SELECT * FROM backup.\"" + table + "\"");
    }
    db_.exec(R"sql(
      DELETE FROM main.sqlite_sequence;
      INSERT INTO main.sqlite_sequence (name, seq)
        SELECT name, max(seq) FROM (SELECT name, seq FROM backup.sqlite_sequence
                                    UNION ALL SELECT name, seq FROM temp.keep_sequence)
        GROUP BY name;
      UPDATE main.meta SET
        crl_number = max(crl_number, (SELECT crl_number FROM temp.keep_meta)),
        root_crl_number = max(root_crl_number, (SELECT root_crl_number FROM temp.keep_meta)),
        change_seq = max(change_seq, (SELECT change_seq FROM temp.keep_meta));
    )sql");

    out.revocations_kept += changed_rows(db_, R"sql(
      UPDATE main.certificates
         SET status = 'revoked', revoked_at = k.revoked_at, revocation_reason = k.revocation_reason
        FROM temp.keep_revoked_certificates AS k
       WHERE certificates.sha256_fingerprint = k.sha256_fingerprint
         AND certificates.status = 'active'
    )sql");
    out.revocations_kept += changed_rows(db_, R"sql(
      INSERT INTO main.certificates (serial_hex, issuer, sha256_fingerprint, kind, device_id,
                                     subject, not_before, not_after, status, revoked_at,
                                     revocation_reason, pem)
      SELECT serial_hex, issuer, sha256_fingerprint, 'other', NULL, subject, not_before,
             not_after, 'revoked', revoked_at, revocation_reason, pem
        FROM temp.keep_revoked_certificates AS k
       WHERE NOT EXISTS (SELECT 1 FROM main.certificates AS c
                          WHERE c.sha256_fingerprint = k.sha256_fingerprint
                             OR (c.issuer = k.issuer AND c.serial_hex = k.serial_hex))
    )sql");
    out.revocations_kept += static_cast<std::int64_t>(
        prepare(db_,
                "UPDATE main.devices SET status = 'revoked', updated_at = ?1 "
                "WHERE status != 'revoked' AND id IN (SELECT id FROM temp.keep_revoked_devices)",
                actor.now)
            .exec());
    out.revocations_kept += changed_rows(db_, R"sql(
      UPDATE main.api_tokens SET revoked_at = k.revoked_at
        FROM temp.keep_revoked_tokens AS k
       WHERE api_tokens.token_sha256 = k.token_sha256 AND api_tokens.revoked_at IS NULL
    )sql");
    out.held_keys_dropped = changed_rows(db_, R"sql(
      DELETE FROM main.held_keys
       WHERE NOT EXISTS (SELECT 1 FROM temp.keep_held_keys AS k
                          WHERE k.device_id = held_keys.device_id
                            AND k.certificate_sha256 = held_keys.certificate_sha256)
    )sql");
    changed_rows(db_, R"sql(
      UPDATE main.bundles SET downloaded_at = k.downloaded_at, downloaded_by = k.downloaded_by
        FROM temp.keep_downloads AS k
       WHERE bundles.id = k.id AND bundles.downloaded_at IS NULL
    )sql");

    // Every device and group of either state, and the CRL, so that each broker re-reads them.
    std::vector<std::pair<ChangeKind, std::string>> subjects;
    {
      auto all = prepare(db_, R"sql(
        SELECT kind, subject FROM temp.keep_subjects
        UNION SELECT 'device', id FROM main.devices
        UNION SELECT 'group', name FROM main.groups
        ORDER BY 1, 2
      )sql");
      while (all.step()) {
        subjects.emplace_back(change_kind_from(all.text(0)), all.text(1));
      }
    }
    for (const auto& [kind, subject] : subjects) record_change(kind, subject, actor.now);
    record_change(ChangeKind::crl, "", actor.now);
    record_change(ChangeKind::claim, "", actor.now);  // every broker reloads its claims
    out.subjects_announced = static_cast<std::int64_t>(subjects.size());

    {
      // Checked here rather than left to COMMIT, so that the message can say what is wrong.
      auto broken = prepare(db_, "PRAGMA foreign_key_check");
      if (broken.step()) {
        return make_error(Errc::corrupt,
                          "the restored registry would break a reference: a row of " +
                              broken.text(0) + " refers to a " + broken.text(2) +
                              " row that does not exist; nothing was changed");
      }
    }
    // The kept revocations changed entities after the backup's last row: the restore records the
    // whole state it leaves, which the log vouches for from here on.
    record_attested(actor, "registry.restore", backup_name,
                    {{"replaced_audit_head", replaced.audit_head},
                     {"replaced_audit_rows", replaced.audit_rows},
                     {"replaced_change_seq", replaced.change_seq},
                     {"revocations_kept", out.revocations_kept},
                     {"held_keys_dropped", out.held_keys_dropped}});
    db_.exec(R"sql(
      DROP TABLE temp.keep_subjects; DROP TABLE temp.keep_revoked_certificates;
      DROP TABLE temp.keep_revoked_devices; DROP TABLE temp.keep_revoked_tokens;
      DROP TABLE temp.keep_held_keys; DROP TABLE temp.keep_downloads;
      DROP TABLE temp.keep_meta; DROP TABLE temp.keep_sequence;
    )sql");
    return out;
  });
}

Result<RestoreSummary> SqlStore::restore_from(const std::filesystem::path& backup,
                                              const Actor& actor) {
  // ATTACH cannot run inside a transaction: the backup is attached around the write.
  try {
    prepare(db_, "ATTACH DATABASE ?1 AS backup", backup.string()).exec();
  } catch (...) {
    return current_exception_error("open backup " + backup.string());
  }
  struct Detach {
    Database& db;
    ~Detach() {
      try {
        db.exec("DETACH DATABASE backup");
      } catch (...) {  // the connection is closed right after anyway
      }
    }
  } detach{db_};
  ONBOARD_TRY(RestoreSummary out, restore_attached(backup.filename().string(), actor));
  ONBOARD_TRY(out.restored, summary());
  return out;
}

}  // namespace sql

namespace {

// Opens the registry as the full SQLite store, for the members only it has.
Result<std::unique_ptr<Store>> open_full(const std::filesystem::path& path, OpenMode mode,
                                         sql::SqlStore*& sqlite_store) {
  ONBOARD_TRY(auto store, open_sqlite_store(path, mode));
  sqlite_store = dynamic_cast<sql::SqlStore*>(store.get());
  if (sqlite_store == nullptr) return make_error(Errc::internal, "not an SQLite store");
  return store;
}

// Opens a backup read-only and checks its audit chain: a copy is only as good as its history.
Result<RegistrySummary> checked_summary(const std::filesystem::path& path, const char* what) {
  sql::SqlStore* sqlite_store = nullptr;
  ONBOARD_TRY(auto store, open_full(path, OpenMode::read_only, sqlite_store));
  ONBOARD_TRY(AuditCheck check, store->verify_audit());
  if (!check.ok()) {
    return make_error(Errc::corrupt, std::string(what) + " " + path.string() +
                                         ": its audit log does not verify: " + check.problem);
  }
  return sqlite_store->summary();
}

}  // namespace

Result<RegistrySummary> backup_sqlite_registry(const std::filesystem::path& registry,
                                               const std::filesystem::path& target) {
  if (std::filesystem::exists(target) || std::filesystem::is_symlink(target)) {
    return make_error(Errc::conflict,
                      target.string() + " exists already; refusing to overwrite it");
  }
  unsigned char random[8];
  if (RAND_bytes(random, sizeof random) != 1) {
    return make_error(Errc::crypto, "the random generator failed");
  }
  const std::filesystem::path dir =
      target.parent_path().empty() ? std::filesystem::path(".") : target.parent_path();
  std::string partial_name = ".";
  partial_name += target.filename().string();
  partial_name += ".partial-";
  partial_name += hex_encode(random);
  const std::filesystem::path partial = dir / partial_name;
  {
    sql::SqlStore* source = nullptr;
    ONBOARD_TRY(auto store, open_full(registry, OpenMode::read_only, source));
    (void)store;
    try {
      SQLite::Database db(registry.string(), SQLite::OPEN_READONLY);
      db.setBusyTimeout(5000);
      // One read transaction: the copy is the registry as of one commit, WAL included.
      SQLite::Statement vacuum(db, "VACUUM INTO ?1");
      vacuum.bind(1, partial.string());
      vacuum.exec();
    } catch (const SQLite::Exception& e) {
      ::unlink(partial.c_str());
      const int code = e.getExtendedErrorCode() != -1 ? e.getExtendedErrorCode() : e.getErrorCode();
      return detail::sqlite_error(code, "back up registry " + registry.string());
    } catch (...) {
      ::unlink(partial.c_str());
      return sql::current_exception_error("back up registry " + registry.string());
    }
  }
  auto summary = checked_summary(partial, "the copy");
  if (!summary.ok()) {
    ::unlink(partial.c_str());
    return summary.error();
  }
  ONBOARD_CHECK(publish_file(partial, target, 0600));
  return summary;
}

Result<RestoreSummary> restore_sqlite_registry(const std::filesystem::path& registry,
                                               const std::filesystem::path& backup,
                                               const Actor& actor) {
  // Restoring a registry from itself (or a link to it) would empty the tables it reads from.
  std::error_code same_error;
  if (std::filesystem::equivalent(registry, backup, same_error)) {
    return make_error(Errc::invalid_input,
                      backup.string() + " is the registry itself, not a backup of it");
  }
  if (auto checked = checked_summary(backup, "the backup"); !checked.ok()) return checked.error();
  sql::SqlStore* live = nullptr;
  ONBOARD_TRY(auto store, open_full(registry, OpenMode::read_write, live));
  (void)store;  // owns `live`
  return live->restore_from(backup, actor);
}

}  // namespace onboard::registry
