#include "registry/schema.h"

#include <SQLiteCpp/Statement.h>

namespace onboard::registry::schema {
namespace {

// Version 1. Notes on choices:
// - meta is a single typed row: the schema version, the change-feed counter, the audit chain's
//   head and the CRL state are all updated in the transaction that changes them.
// - Certificates are keyed by issuer + serial as X.509 identifies them; the fingerprint is unique
//   too because the plugin looks certificates up by it.
// - A rule's subject is a device or a group through two nullable foreign keys (exactly one set),
//   so the database itself refuses a rule for a subject that does not exist.
// - AUTOINCREMENT on rules so that a removed rule's id, which the audit log names, is never reused.
// - Times are unix seconds; statuses and reasons are text the CHECKs pin down.
constexpr const char* kVersion1 = R"sql(
CREATE TABLE meta (
  id                 INTEGER PRIMARY KEY CHECK (id = 1),
  schema_version     INTEGER NOT NULL,
  change_seq         INTEGER NOT NULL,
  audit_head_seq     INTEGER NOT NULL,
  audit_head_hash    TEXT    NOT NULL,
  crl_number         INTEGER NOT NULL,
  crl_last_issued_at INTEGER
);

CREATE TABLE groups (
  name        TEXT    PRIMARY KEY,
  description TEXT    NOT NULL,
  created_at  INTEGER NOT NULL
);

CREATE TABLE devices (
  id         TEXT    PRIMARY KEY,
  name       TEXT    NOT NULL,
  type       TEXT    NOT NULL,
  location   TEXT    NOT NULL,
  firmware   TEXT    NOT NULL,
  status     TEXT    NOT NULL CHECK (status IN ('active', 'disabled', 'revoked')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  metadata   TEXT    NOT NULL CHECK (json_valid(metadata))
);
CREATE INDEX devices_by_status ON devices (status, id);
CREATE INDEX devices_by_type ON devices (type, id);

CREATE TABLE certificates (
  serial_hex         TEXT    NOT NULL,
  issuer             TEXT    NOT NULL,
  sha256_fingerprint TEXT    NOT NULL UNIQUE,
  device_id          TEXT    NOT NULL REFERENCES devices (id),
  subject            TEXT    NOT NULL,
  not_before         INTEGER NOT NULL,
  not_after          INTEGER NOT NULL,
  status             TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  revoked_at         INTEGER,
  revocation_reason  TEXT,
  pem                TEXT    NOT NULL,
  PRIMARY KEY (issuer, serial_hex),
  CHECK ((status = 'revoked') = (revoked_at IS NOT NULL AND revocation_reason IS NOT NULL))
);
CREATE INDEX certificates_by_device ON certificates (device_id);
-- Every revocation rebuilds the CRL from the revoked certificates: without this covering index
-- that read scans the whole table, PEMs included (130 MiB at 100k devices).
CREATE INDEX certificates_revoked ON certificates (serial_hex, revoked_at, revocation_reason)
  WHERE status = 'revoked';

CREATE TABLE acl_rules (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  device_id  TEXT    REFERENCES devices (id),
  group_name TEXT    REFERENCES groups (name),
  access     INTEGER NOT NULL CHECK (access BETWEEN 1 AND 7),
  pattern    TEXT    NOT NULL CHECK (pattern <> ''),
  effect     TEXT    NOT NULL CHECK (effect IN ('allow', 'deny')),
  priority   INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  CHECK ((device_id IS NULL) <> (group_name IS NULL))
);
CREATE INDEX acl_rules_by_device ON acl_rules (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX acl_rules_by_group ON acl_rules (group_name) WHERE group_name IS NOT NULL;

CREATE TABLE audit_events (
  seq       INTEGER PRIMARY KEY,
  at        INTEGER NOT NULL,
  actor     TEXT    NOT NULL,
  action    TEXT    NOT NULL,
  subject   TEXT    NOT NULL,
  details   TEXT    NOT NULL,
  prev_hash TEXT    NOT NULL,
  hash      TEXT    NOT NULL
);

CREATE TABLE changes (
  seq     INTEGER PRIMARY KEY,
  at      INTEGER NOT NULL,
  kind    TEXT    NOT NULL CHECK (kind IN ('device', 'group', 'crl')),
  subject TEXT    NOT NULL
);
)sql";

// Version 2: credential delivery and API access. Notes on choices:
// - held_keys keeps a key the tool made, encrypted (PKCS#8, AES-256-CBC under a PBKDF2 key from
//   the operator's passphrase), only until it is packaged: the row is deleted in the transaction
//   that records the bundle, and when the device is revoked or its certificate replaced. It is
//   tied to one certificate, so a key can never be packaged beside another key's certificate.
// - A bundle row records what was packaged and the zip's SHA-256, never the password. The
//   download columns make a one-time link single-use: the UPDATE that sets them is conditional
//   on their being NULL, so two concurrent downloads cannot both win.
// - api_tokens stores only a SHA-256 of each bearer token: a copy of the registry grants nothing.
constexpr const char* kVersion2 = R"sql(
CREATE TABLE held_keys (
  device_id          TEXT    PRIMARY KEY REFERENCES devices (id),
  certificate_sha256 TEXT    NOT NULL REFERENCES certificates (sha256_fingerprint),
  encrypted_pem      TEXT    NOT NULL CHECK (substr(encrypted_pem, 12, 9) = 'ENCRYPTED'),
  created_at         INTEGER NOT NULL
);

CREATE TABLE batches (
  id         TEXT    PRIMARY KEY,
  source     TEXT    NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE batch_devices (
  batch_id  TEXT    NOT NULL REFERENCES batches (id),
  device_id TEXT    NOT NULL REFERENCES devices (id),
  line      INTEGER NOT NULL,
  PRIMARY KEY (batch_id, device_id)
);

CREATE TABLE bundles (
  id            TEXT    PRIMARY KEY,
  batch_id      TEXT    REFERENCES batches (id),
  path          TEXT    NOT NULL,
  sha256        TEXT    NOT NULL,
  size          INTEGER NOT NULL,
  with_keys     INTEGER NOT NULL CHECK (with_keys IN (0, 1)),
  created_at    INTEGER NOT NULL,
  downloaded_at INTEGER,
  downloaded_by TEXT,
  CHECK ((downloaded_at IS NULL) = (downloaded_by IS NULL))
);

CREATE TABLE bundle_devices (
  bundle_id          TEXT NOT NULL REFERENCES bundles (id),
  device_id          TEXT NOT NULL REFERENCES devices (id),
  certificate_sha256 TEXT NOT NULL,
  PRIMARY KEY (bundle_id, device_id)
);
CREATE INDEX bundle_devices_by_device ON bundle_devices (device_id);

CREATE TABLE api_tokens (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  name         TEXT    NOT NULL UNIQUE,
  role         TEXT    NOT NULL CHECK (role IN ('operator', 'reader')),
  token_sha256 TEXT    NOT NULL UNIQUE,
  created_at   INTEGER NOT NULL,
  revoked_at   INTEGER
);
)sql";

// Version 3: every certificate the CA signs is recorded, not only devices' (issue 11). Notes:
// - kind says what a certificate is for; only a `device` certificate names a device, and the CHECK
//   ties the two together, so a server or other certificate can never be attached to a device.
//   The broker's loader reads `kind = 'device'` rows only (a certificate whose CN equals a device
//   id but that was signed with `ca issue` is an `other` row and is refused at connect). kind
//   defaults to device, as every row before version 3 was: an INSERT written for version 2 still
//   records a device's certificate (the benchmark's bulk fill does), and one without a device
//   fails the CHECK.
// - SQLite cannot change a column's constraints in place, so the table is rebuilt. held_keys
//   refers to certificates, and a table that is referred to cannot be dropped while foreign keys
//   are enforced (which they are, and PRAGMA foreign_keys cannot change inside the migration's
//   transaction): held_keys is saved, dropped and rebuilt around the certificates table, in the
//   same transaction, with the same definition as in version 2.
// - The root CA's CRL (published when an issuing intermediate signs the certificates) has a CRL
//   number of its own, a sequence apart from the issuing CA's: meta.root_crl_number.
// - rowids are kept: certificates are listed in insertion order by rowid.
// - The revoked-certificates index now leads with the issuer: each CRL (the issuing CA's, the
//   root's) lists only the certificates its CA issued.
constexpr const char* kVersion3 = R"sql(
CREATE TEMP TABLE held_keys_v2 AS SELECT * FROM held_keys;
DROP TABLE held_keys;

CREATE TABLE certificates_v3 (
  serial_hex         TEXT    NOT NULL,
  issuer             TEXT    NOT NULL,
  sha256_fingerprint TEXT    NOT NULL UNIQUE,
  kind               TEXT    NOT NULL DEFAULT 'device'
                             CHECK (kind IN ('device', 'server', 'other')),
  device_id          TEXT    REFERENCES devices (id),
  subject            TEXT    NOT NULL,
  not_before         INTEGER NOT NULL,
  not_after          INTEGER NOT NULL,
  status             TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  revoked_at         INTEGER,
  revocation_reason  TEXT,
  pem                TEXT    NOT NULL,
  PRIMARY KEY (issuer, serial_hex),
  CHECK ((status = 'revoked') = (revoked_at IS NOT NULL AND revocation_reason IS NOT NULL)),
  CHECK ((kind = 'device') = (device_id IS NOT NULL))
);
INSERT INTO certificates_v3 (rowid, serial_hex, issuer, sha256_fingerprint, kind, device_id,
                             subject, not_before, not_after, status, revoked_at,
                             revocation_reason, pem)
  SELECT rowid, serial_hex, issuer, sha256_fingerprint, 'device', device_id, subject, not_before,
         not_after, status, revoked_at, revocation_reason, pem
  FROM certificates;
DROP TABLE certificates;
ALTER TABLE certificates_v3 RENAME TO certificates;
CREATE INDEX certificates_by_device ON certificates (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX certificates_by_kind ON certificates (kind);
CREATE INDEX certificates_by_serial ON certificates (serial_hex);
CREATE INDEX certificates_revoked ON certificates (issuer, serial_hex, revoked_at,
                                                   revocation_reason)
  WHERE status = 'revoked';

CREATE TABLE held_keys (
  device_id          TEXT    PRIMARY KEY REFERENCES devices (id),
  certificate_sha256 TEXT    NOT NULL REFERENCES certificates (sha256_fingerprint),
  encrypted_pem      TEXT    NOT NULL CHECK (substr(encrypted_pem, 12, 9) = 'ENCRYPTED'),
  created_at         INTEGER NOT NULL
);
INSERT INTO held_keys SELECT * FROM held_keys_v2;
DROP TABLE held_keys_v2;

ALTER TABLE meta ADD COLUMN root_crl_number INTEGER NOT NULL DEFAULT 0;
)sql";

// Version 4: the audit rows record the state of what they change (entity_state.h). No table
// changes; the migration's audit row, written by the store after this, records the state of every
// entity as the log's starting point, since the older rows record none.

// Version 5: claims (issue 16; docs/provisioning.md). Notes on choices:
// - A claim's certificate is recorded like every certificate the CA signs, as kind `claim` (no
//   device); certificates and changes get their wider CHECKs by being rebuilt, as in version 3
//   (held_keys saved and rebuilt around certificates, rowids kept).
// - The change feed gets kind `claim`: the broker reloads its (few) claims whole on one.
// - claims.quota_used <= quota is a CHECK, so that the enrolment that spends a unit can be one
//   conditional UPDATE (`... WHERE quota_used < quota`) and the quota holds exactly however many
//   enrolments race for it; the registry refuses the one too many, not the caller.
// - expires_at is the claim certificate's not_after: the certificate stops working when the
//   claim does, whatever the broker last read.
// - created_by is the actor, for `claim show` without reading the audit log.
constexpr const char* kVersion5 = R"sql(
CREATE TEMP TABLE held_keys_v4 AS SELECT * FROM held_keys;
DROP TABLE held_keys;

CREATE TABLE certificates_v5 (
  serial_hex         TEXT    NOT NULL,
  issuer             TEXT    NOT NULL,
  sha256_fingerprint TEXT    NOT NULL UNIQUE,
  kind               TEXT    NOT NULL DEFAULT 'device'
                             CHECK (kind IN ('device', 'server', 'other', 'claim')),
  device_id          TEXT    REFERENCES devices (id),
  subject            TEXT    NOT NULL,
  not_before         INTEGER NOT NULL,
  not_after          INTEGER NOT NULL,
  status             TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  revoked_at         INTEGER,
  revocation_reason  TEXT,
  pem                TEXT    NOT NULL,
  PRIMARY KEY (issuer, serial_hex),
  CHECK ((status = 'revoked') = (revoked_at IS NOT NULL AND revocation_reason IS NOT NULL)),
  CHECK ((kind = 'device') = (device_id IS NOT NULL))
);
INSERT INTO certificates_v5 (rowid, serial_hex, issuer, sha256_fingerprint, kind, device_id,
                             subject, not_before, not_after, status, revoked_at,
                             revocation_reason, pem)
  SELECT rowid, serial_hex, issuer, sha256_fingerprint, kind, device_id, subject, not_before,
         not_after, status, revoked_at, revocation_reason, pem
  FROM certificates;
DROP TABLE certificates;
ALTER TABLE certificates_v5 RENAME TO certificates;
CREATE INDEX certificates_by_device ON certificates (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX certificates_by_kind ON certificates (kind);
CREATE INDEX certificates_by_serial ON certificates (serial_hex);
CREATE INDEX certificates_revoked ON certificates (issuer, serial_hex, revoked_at,
                                                   revocation_reason)
  WHERE status = 'revoked';

CREATE TABLE held_keys (
  device_id          TEXT    PRIMARY KEY REFERENCES devices (id),
  certificate_sha256 TEXT    NOT NULL REFERENCES certificates (sha256_fingerprint),
  encrypted_pem      TEXT    NOT NULL CHECK (substr(encrypted_pem, 12, 9) = 'ENCRYPTED'),
  created_at         INTEGER NOT NULL
);
INSERT INTO held_keys SELECT * FROM held_keys_v4;
DROP TABLE held_keys_v4;

CREATE TABLE changes_v5 (
  seq     INTEGER PRIMARY KEY,
  at      INTEGER NOT NULL,
  kind    TEXT    NOT NULL CHECK (kind IN ('device', 'group', 'crl', 'claim')),
  subject TEXT    NOT NULL
);
INSERT INTO changes_v5 (seq, at, kind, subject) SELECT seq, at, kind, subject FROM changes;
DROP TABLE changes;
ALTER TABLE changes_v5 RENAME TO changes;

CREATE TABLE claims (
  name               TEXT    PRIMARY KEY,
  certificate_sha256 TEXT    NOT NULL UNIQUE REFERENCES certificates (sha256_fingerprint),
  quota              INTEGER NOT NULL CHECK (quota > 0),
  quota_used         INTEGER NOT NULL CHECK (quota_used >= 0 AND quota_used <= quota),
  expires_at         INTEGER NOT NULL,
  id_pattern         TEXT    NOT NULL CHECK (id_pattern <> ''),
  device_type        TEXT    NOT NULL,
  status             TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  created_at         INTEGER NOT NULL,
  created_by         TEXT    NOT NULL,
  revoked_at         INTEGER,
  CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
)sql";

// Version 6: which certificate a renewal over MQTT renews (docs/provisioning.md, "Renewal").
// Notes on choices:
// - certificates.renews names, by fingerprint, the certificate the device presented when it
//   asked for this one; NULL for every other certificate. The connect of a renewed certificate
//   supersedes what it renews and its waiting siblings, and the grace period ends only what was
//   renewed, never a sibling the device may hold (ClaimStore::supersede_predecessors,
//   supersede_renewed). A column added with a REFERENCES clause must default to NULL, as this one
//   does.
// - Renewals recorded before this version are linked from their certificate.renew audit rows
//   (details: the new certificate's fingerprint, the renewed one's serial, the device as
//   subject), so that renewals waiting while the registry is upgraded keep their deadline. The
//   audit log is read once, into a temporary table: a lookup per certificate into the log would
//   take as long as the log times the certificates. A link is made only between two
//   certificates of the device the row names: a damaged or forged row can never make one
//   device's certificate renew another's (whose grace period would then revoke it).
// - The index serves the per-device lookups and the grace period's sweep.
constexpr const char* kVersion6 = R"sql(
ALTER TABLE certificates ADD COLUMN renews TEXT REFERENCES certificates (sha256_fingerprint);
CREATE TEMP TABLE renewals_v5 AS
  SELECT json_extract(details, '$.fingerprint') AS fingerprint,
         json_extract(details, '$.renews') AS serial, subject AS device
  FROM audit_events WHERE action = 'certificate.renew';
CREATE INDEX temp.renewals_v5_by_fingerprint ON renewals_v5 (fingerprint);
UPDATE certificates SET renews = (
  SELECT prev.sha256_fingerprint
  FROM temp.renewals_v5 r JOIN certificates prev
    ON prev.device_id = r.device AND prev.kind = 'device' AND prev.serial_hex = r.serial
  WHERE r.fingerprint = certificates.sha256_fingerprint
    AND r.device = certificates.device_id
    AND prev.sha256_fingerprint <> certificates.sha256_fingerprint
  ORDER BY prev.rowid DESC LIMIT 1)
WHERE kind = 'device' AND sha256_fingerprint IN (SELECT fingerprint FROM temp.renewals_v5);
DROP TABLE temp.renewals_v5;
CREATE INDEX certificates_by_renews ON certificates (renews, status, not_before)
  WHERE renews IS NOT NULL;
)sql";

void migrate_to_1(SQLite::Database& db, UnixTime now) {
  db.exec(kVersion1);
  db.exec("PRAGMA application_id = " + std::to_string(kApplicationId));  // a constant, not input
  SQLite::Statement meta(db,
                         "INSERT INTO meta (id, schema_version, change_seq, audit_head_seq, "
                         "audit_head_hash, crl_number) VALUES (1, 1, 0, 0, ?, 0)");
  meta.bind(1, std::string(64, '0'));
  meta.exec();
  SQLite::Statement group(db,
                          "INSERT INTO groups (name, description, created_at) "
                          "VALUES ('default', 'every device is a member', ?)");
  group.bind(1, now);
  group.exec();
  // The documented default: each device may publish, subscribe and read below its own subtree.
  SQLite::Statement rule(db,
                         "INSERT INTO acl_rules (group_name, access, pattern, effect, priority, "
                         "created_at) VALUES ('default', 7, 'devices/%d/#', 'allow', 0, ?)");
  rule.bind(1, now);
  rule.exec();
}

}  // namespace

Result<int> stored_version(SQLite::Database& db, const std::string& path) {
  // Reading sqlite_schema is the first real read: SQLITE_NOTADB surfaces here as an exception.
  const auto tables = db.execAndGet("SELECT count(*) FROM sqlite_schema").getInt64();
  const auto app_id = db.execAndGet("PRAGMA application_id").getInt64();
  if (tables == 0 && app_id == 0) return 0;
  if (app_id != kApplicationId) {
    return make_error(Errc::corrupt,
                      path + " is an SQLite database but not a mosquitto-onboard registry");
  }
  if (!db.tableExists("meta")) {
    return make_error(Errc::corrupt, path + " is damaged: its meta table is missing");
  }
  SQLite::Statement query(db, "SELECT schema_version FROM meta WHERE id = 1");
  if (!query.executeStep()) {
    return make_error(Errc::corrupt, path + " is damaged: its meta row is missing");
  }
  const auto version = query.getColumn(0).getInt64();
  query.reset();
  if (version > kCurrentVersion) {
    return make_error(Errc::corrupt, path + " has schema version " + std::to_string(version) +
                                         ", newer than this build understands (" +
                                         std::to_string(kCurrentVersion) + "); upgrade onboardctl");
  }
  if (version < 1) {
    return make_error(Errc::corrupt,
                      path + " has an unknown schema version " + std::to_string(version));
  }
  return static_cast<int>(version);
}

void migrate(SQLite::Database& db, int from_version, UnixTime now, int to_version) {
  // One step per version; each later step goes here as `if (from_version < N) migrate_to_N(...)`.
  if (from_version < 1 && to_version >= 1) migrate_to_1(db, now);
  if (from_version < 2 && to_version >= 2) db.exec(kVersion2);
  if (from_version < 3 && to_version >= 3) db.exec(kVersion3);
  // Version 4 changes no table (see above): the version bump below is all of it.
  if (from_version < 5 && to_version >= 5) db.exec(kVersion5);
  if (from_version < 6 && to_version >= 6) db.exec(kVersion6);
  if (from_version < to_version) {
    SQLite::Statement bump(db, "UPDATE meta SET schema_version = ?");
    bump.bind(1, to_version);
    bump.exec();
  }
}

}  // namespace onboard::registry::schema
