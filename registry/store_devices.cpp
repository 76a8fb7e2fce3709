// DeviceStore: devices and their certificates, and the certificates of other kinds.
#include "registry/store_internal.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/identity.h"

namespace onboard::registry::sql {

namespace {

// The record of a certificate this transaction has just inserted: active, not revoked.
Certificate just_recorded(const NewCertificate& c, std::string device_id, CertificateKind kind) {
  return Certificate{c.serial_hex,
                     c.issuer,
                     c.sha256_fingerprint,
                     std::move(device_id),
                     c.subject,
                     c.not_before,
                     c.not_after,
                     CertificateStatus::active,
                     std::nullopt,
                     std::nullopt,
                     c.pem,
                     kind,
                     {}};
}

// Columns in the order of `SELECT id, name, type, location, firmware, status, created_at,
// updated_at, metadata`.
Device device_from(const Statement& s) {
  return Device{
      s.text(0),  s.text(1),  s.text(2), s.text(3),   s.text(4), device_status_from(s.text(5)),
      s.int64(6), s.int64(7), s.text(8), std::nullopt};
}

CertificateKind certificate_kind_from(const std::string& text) {
  if (auto kind = parse_certificate_kind(text)) return *kind;
  throw CorruptValue("an unknown certificate kind");
}

// The columns certificate_from reads, in its order.
#define ONBOARD_CERTIFICATE_COLUMNS                                                     \
  "serial_hex, issuer, sha256_fingerprint, device_id, subject, not_before, not_after, " \
  "status, revoked_at, revocation_reason, pem, kind, renews"

// Columns: ONBOARD_CERTIFICATE_COLUMNS, from column `at` on.
Certificate certificate_from_at(const Statement& s, int at) {
  Certificate c;
  c.serial_hex = s.text(at + 0);
  c.issuer = s.text(at + 1);
  c.sha256_fingerprint = s.text(at + 2);
  c.device_id = s.text_or_null(at + 3).value_or("");
  c.subject = s.text(at + 4);
  c.not_before = s.int64(at + 5);
  c.not_after = s.int64(at + 6);
  c.status = s.text(at + 7) == "revoked" ? CertificateStatus::revoked : CertificateStatus::active;
  if (!s.is_null(at + 8)) c.revoked_at = s.int64(at + 8);
  if (auto reason = s.text_or_null(at + 9)) c.revocation_reason = reason_from(*reason);
  c.pem = s.text(at + 10);
  c.kind = certificate_kind_from(s.text(at + 11));
  c.renews = s.text_or_null(at + 12).value_or("");
  return c;
}
Certificate certificate_from(const Statement& s) { return certificate_from_at(s, 0); }

}  // namespace

std::optional<Device> SqlStore::load_device(std::string_view id) {
  auto query = prepare(db_,
                       "SELECT id, name, type, location, firmware, status, created_at, updated_at, "
                       "metadata FROM devices WHERE id = ?1",
                       id);
  if (!query.step()) return std::nullopt;
  return device_from(query);
}

Result<Device> SqlStore::load_unrevoked_device(std::string_view id, std::string_view refusal) {
  auto device = load_device(id);
  if (!device) return make_error(Errc::not_found, "device " + std::string(id) + " does not exist");
  if (device->status == DeviceStatus::revoked) {
    return make_error(Errc::conflict,
                      "device " + std::string(id) + " is revoked; " + std::string(refusal));
  }
  return std::move(*device);
}

Result<Device> SqlStore::insert_device_rows(const NewDevice& input, const std::string& metadata,
                                            const NewCertificate& cert, const Actor& actor,
                                            Touched& touched, bool& new_group) {
  touch(touched, Entity::device, input.id);
  const Device device{input.id,       input.name.empty() ? input.id : input.name,
                      input.type,     input.location,
                      input.firmware, DeviceStatus::active,
                      actor.now,      actor.now,
                      metadata,       std::nullopt};
  prepare(db_,
          "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
          "updated_at, metadata) VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?6, ?7)",
          device.id, device.name, device.type, device.location, device.firmware, actor.now,
          device.metadata)
      .exec();
  new_group = !device.type.empty() && !group_exists(device.type);
  if (new_group) insert_group(device.type, "devices of type " + device.type, actor.now, touched);
  touch(touched, Entity::certificate, cert.sha256_fingerprint);
  ONBOARD_CHECK(insert_certificate(CertificateKind::device, device.id, cert));
  hold_key(device.id, cert, actor.now);
  return device;
}

Result<Device> SqlStore::insert_device(const NewDevice& input, const NewCertificate& certificate,
                                       std::optional<std::string_view> batch_id, std::int64_t line,
                                       const Actor& actor) {
  ONBOARD_CHECK(check_device_id(input.id));
  if (!input.type.empty()) ONBOARD_CHECK(check_group_name(input.type));
  ONBOARD_TRY(std::string metadata, compact_metadata(input.metadata));
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));

  return write("register device", actor, [&]() -> Result<Device> {
    if (batch_id) {
      auto batch = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", *batch_id);
      if (!batch.step()) {
        return make_error(Errc::not_found, "batch " + std::string(*batch_id) + " does not exist");
      }
    }
    if (load_device(input.id)) {
      return make_error(Errc::conflict, "device " + input.id + " already exists");
    }
    Touched touched;
    bool new_group = false;
    ONBOARD_TRY(const Device device,
                insert_device_rows(input, metadata, cert, actor, touched, new_group));
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
    record_audit(actor, "device.register", device.id, details, touched);
    return device;
  });
}

Result<Device> SqlStore::register_device(const NewDevice& input, const NewCertificate& certificate,
                                         const Actor& actor) {
  return insert_device(input, certificate, std::nullopt, 0, actor);
}

Result<Device> SqlStore::get_device(std::string_view id) {
  ONBOARD_CHECK(check_device_id(id));
  return read("get device", [&]() -> Result<Device> {
    if (auto device = load_device(id)) return *device;
    return make_error(Errc::not_found, "device " + std::string(id) + " does not exist");
  });
}

// `?1 IS NULL OR ...` keeps one fixed statement for every filter combination; keyset paging on
// the primary key stays fast however deep the page.
// When a device's current certificate expires: its latest-expiring active device certificate.
#define ONBOARD_CURRENT_NOT_AFTER                                                \
  "(SELECT max(c.not_after) FROM certificates c WHERE c.device_id = devices.id " \
  "AND c.kind = 'device' AND c.status = 'active')"

Result<std::vector<Device>> SqlStore::list_devices(const DeviceFilter& filter) {
  std::optional<std::string_view> status;
  if (filter.status) status = to_string(*filter.status);
  const std::int64_t limit = filter.limit == 0 ? kNoLimit : static_cast<std::int64_t>(filter.limit);
  return read("list devices", [&]() -> Result<std::vector<Device>> {
    auto query = prepare(
        db_,
        "SELECT id, name, type, location, firmware, status, created_at, "
        "updated_at, metadata, " ONBOARD_CURRENT_NOT_AFTER
        " FROM devices "
        "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR type = ?2) "
        "AND (?5 IS NULL OR " ONBOARD_CURRENT_NOT_AFTER " <= ?5) AND id > ?3 ORDER BY id LIMIT ?4",
        status, filter.type, std::string_view(filter.after_id), limit, filter.expiring_by);
    std::vector<Device> devices;
    while (query.step()) {
      devices.push_back(device_from(query));
      if (!query.is_null(9)) devices.back().certificate_not_after = query.int64(9);
    }
    return devices;
  });
}

Result<std::int64_t> SqlStore::count_devices(const DeviceFilter& filter) {
  std::optional<std::string_view> status;
  if (filter.status) status = to_string(*filter.status);
  return read("count devices", [&]() -> Result<std::int64_t> {
    auto query = prepare(db_,
                         "SELECT count(*) FROM devices "
                         "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR type = ?2) "
                         "AND (?3 IS NULL OR " ONBOARD_CURRENT_NOT_AFTER " <= ?3)",
                         status, filter.type, filter.expiring_by);
    query.step();
    return query.int64(0);
  });
}

Result<bool> SqlStore::set_device_enabled(std::string_view id, bool enabled, const Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  return write(enabled ? "enable device" : "disable device", actor, [&]() -> Result<bool> {
    ONBOARD_TRY(const Device device,
                load_unrevoked_device(id, "it can no longer be enabled or disabled"));
    const auto target = enabled ? DeviceStatus::active : DeviceStatus::disabled;
    if (device.status == target) return false;
    Touched touched;
    touch(touched, Entity::device, id);
    set_device_status(id, target, actor.now);
    record_change(ChangeKind::device, id, actor.now);
    record_audit(actor, enabled ? "device.enable" : "device.disable", id, nlohmann::json::object(),
                 touched);
    return true;
  });
}

// The audit row names each changed field with its old and new value; fields given but equal to
// what is stored are not changes.
Result<Device> SqlStore::update_device(std::string_view id, const DeviceUpdate& update,
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
    ONBOARD_TRY(Device device, load_unrevoked_device(id, "its record can no longer be changed"));
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
    Touched touched;
    touch(touched, Entity::device, id);
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
      if (new_group) {
        insert_group(device.type, "devices of type " + device.type, actor.now, touched);
      }
      record_change(ChangeKind::device, id, actor.now);
      details["created_group"] = new_group;
    }
    record_audit(actor, "device.update", id, details, touched);
    return device;
  });
}

Result<RevokeOutcome> SqlStore::revoke_device(std::string_view id, RevocationReason reason,
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
    Touched touched;
    touch(touched, Entity::device, id);
    outcome.revoked_serials = revoke_active_certificates(id, reason, actor.now, touched);
    erase_held_key(id);  // a revoked device is never packaged: its key has no use left
    set_device_status(id, DeviceStatus::revoked, actor.now);
    record_change(ChangeKind::device, id, actor.now);
    record_audit(actor, "device.revoke", id,
                 {{"reason", revocation_reason_name(reason)}, {"serials", outcome.revoked_serials}},
                 touched);
    return outcome;
  });
}

void SqlStore::set_device_status(std::string_view id, DeviceStatus status, UnixTime now) {
  prepare(db_, "UPDATE devices SET status = ?1, updated_at = ?2 WHERE id = ?3", to_string(status),
          now, id)
      .exec();
}

// The duplicate checks come first so the operator reads which certificate clashes; the UNIQUE
// constraints stay as the backstop.
Status SqlStore::insert_certificate(CertificateKind kind, std::string_view device_id,
                                    const NewCertificate& c,
                                    std::optional<std::string_view> renews) {
  auto same_fingerprint = prepare(db_, "SELECT 1 FROM certificates WHERE sha256_fingerprint = ?1",
                                  c.sha256_fingerprint);
  if (same_fingerprint.step()) {
    return make_error(Errc::conflict,
                      "a certificate with fingerprint " + c.sha256_fingerprint + " already exists");
  }
  auto same_serial =
      prepare(db_, "SELECT 1 FROM certificates WHERE issuer = ?1 AND serial_hex = ?2", c.issuer,
              c.serial_hex);
  if (same_serial.step()) {
    return make_error(Errc::conflict, "a certificate with serial " + c.serial_hex +
                                          " from the same issuer already exists");
  }
  std::optional<std::string_view> device;
  if (kind == CertificateKind::device) device = device_id;
  prepare(db_,
          "INSERT INTO certificates (serial_hex, issuer, sha256_fingerprint, kind, device_id, "
          "subject, not_before, not_after, status, pem, renews) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?9, ?10)",
          c.serial_hex, c.issuer, c.sha256_fingerprint, to_string(kind), device, c.subject,
          c.not_before, c.not_after, c.pem, renews)
      .exec();
  return ok_status();
}

std::vector<std::string> SqlStore::revoke_active_certificates(std::string_view device_id,
                                                              RevocationReason reason, UnixTime now,
                                                              Touched& touched) {
  std::vector<std::string> serials, fingerprints;
  auto active = prepare(db_,
                        "SELECT serial_hex, sha256_fingerprint FROM certificates WHERE "
                        "device_id = ?1 AND status = 'active' ORDER BY rowid",
                        device_id);
  while (active.step()) {
    serials.push_back(active.text(0));
    fingerprints.push_back(active.text(1));
  }
  for (const auto& fingerprint : fingerprints) touch(touched, Entity::certificate, fingerprint);
  prepare(db_,
          "UPDATE certificates SET status = 'revoked', revoked_at = ?1, revocation_reason = ?2 "
          "WHERE device_id = ?3 AND status = 'active'",
          now, revocation_reason_name(reason), device_id)
      .exec();
  return serials;
}

Result<std::vector<Certificate>> SqlStore::certificates_of(std::string_view device_id) {
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
    while (query.step()) certificates.push_back(certificate_from(query));
    return certificates;
  });
}

Result<Certificate> SqlStore::find_certificate_by_fingerprint(std::string_view sha256_hex) {
  auto fingerprint = normalize_fingerprint(sha256_hex);
  if (!fingerprint) {
    return make_error(Errc::invalid_input, "a fingerprint must be 64 hex digits (SHA-256)");
  }
  return read("find certificate", [&]() -> Result<Certificate> {
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates WHERE sha256_fingerprint = ?1",
                         *fingerprint);
    if (!query.step()) {
      return make_error(Errc::not_found, "no certificate has fingerprint " + *fingerprint);
    }
    return certificate_from(query);
  });
}

Result<AddedCertificate> SqlStore::add_certificate(std::string_view device_id,
                                                   const NewCertificate& certificate,
                                                   bool supersede_active, const Actor& actor) {
  ONBOARD_CHECK(check_device_id(device_id));
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  const std::string id(device_id);
  return write("add certificate", actor, [&]() -> Result<AddedCertificate> {
    ONBOARD_CHECK(load_unrevoked_device(id, "it cannot receive a new certificate"));
    AddedCertificate added;
    Touched touched;
    if (supersede_active) {
      added.superseded_serials =
          revoke_active_certificates(id, RevocationReason::superseded, actor.now, touched);
    }
    touch(touched, Entity::certificate, cert.sha256_fingerprint);
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
                  {"superseded", added.superseded_serials}},
                 touched);
    added.certificate = just_recorded(cert, std::string(id), CertificateKind::device);
    return added;
  });
}

Result<Certificate> SqlStore::record_certificate(CertificateKind kind,
                                                 const NewCertificate& certificate,
                                                 const Actor& actor) {
  if (kind == CertificateKind::device) {
    return make_error(Errc::invalid_input,
                      "a device certificate is recorded with its device (register or renew it)");
  }
  if (kind == CertificateKind::claim) {
    return make_error(Errc::invalid_input,
                      "a claim certificate is recorded with its claim (claim create)");
  }
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  if (!cert.held_key_pem.empty()) {
    return make_error(Errc::invalid_input, "the registry holds keys of devices only");
  }
  return write("record certificate", actor, [&]() -> Result<Certificate> {
    Touched touched;
    touch(touched, Entity::certificate, cert.sha256_fingerprint);
    ONBOARD_CHECK(insert_certificate(kind, {}, cert));
    record_audit(actor, "certificate.record", cert.serial_hex,
                 {{"kind", to_string(kind)},
                  {"fingerprint", cert.sha256_fingerprint},
                  {"subject", cert.subject},
                  {"not_after", cert.not_after}},
                 touched);
    return just_recorded(cert, {}, kind);
  });
}

Result<std::vector<Certificate>> SqlStore::list_certificates(const CertificateFilter& filter) {
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
    while (query.step()) certificates.push_back(certificate_from(query));
    return certificates;
  });
}

Result<Certificate> SqlStore::find_certificate_by_serial(std::string_view serial_hex) {
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
    if (!query.step()) {
      return make_error(Errc::not_found, "no certificate has serial " + serial);
    }
    Certificate found = certificate_from(query);
    if (query.step()) {
      return make_error(Errc::conflict, "more than one issuer used serial " + serial +
                                            "; name the certificate by its fingerprint");
    }
    return found;
  });
}

Result<CertificateRevokeOutcome> SqlStore::revoke_certificate(std::string_view sha256_hex,
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
    if (!query.step()) {
      return make_error(Errc::not_found, "no certificate has fingerprint " + *fingerprint);
    }
    CertificateRevokeOutcome outcome;
    outcome.certificate = certificate_from(query);
    query.reset();
    if (outcome.certificate.status == CertificateStatus::revoked) {
      outcome.already_revoked = true;  // idempotent: an answer, and nothing written
      return outcome;
    }
    Touched touched;
    touch(touched, Entity::certificate, *fingerprint);
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
    // A claim's certificate is the claim: revoking one revokes the other, and the brokers
    // reload their claims.
    if (cert.kind == CertificateKind::claim)
      revoke_claim_of(cert.sha256_fingerprint, actor.now, touched);
    record_audit(actor, "certificate.revoke", cert.serial_hex, details, touched);
    return outcome;
  });
}

// Decision table (the first row that applies refuses; nothing is written then):
//  1. no such device → device_unknown;  2. the device not active → device_not_active;
//  3. the presented certificate not a device certificate of this device, not active, or not in
//     date at actor.now → certificate_not_current;
//  4. an active certificate renewing the presented one with the request's key → that
//     certificate, repeated (a retry);
//  5. kMaxPendingRenewals active device certificates besides the presented one → too_many_pending;
// otherwise the new certificate is recorded as renewing the presented one, which is left active.
Result<RenewOutcome> SqlStore::renew_device(std::string_view device_id,
                                            std::string_view presented_sha256,
                                            const NewCertificate& certificate,
                                            const SameKey& same_key, const Actor& actor) {
  ONBOARD_CHECK(check_device_id(device_id));
  auto presented = normalize_fingerprint(presented_sha256);
  if (!presented) {
    return make_error(Errc::invalid_input, "a fingerprint must be 64 hex digits (SHA-256)");
  }
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  const std::string id(device_id);
  return write("renew certificate", actor, [&]() -> Result<RenewOutcome> {
    RenewOutcome out;
    auto device = load_device(id);
    if (!device) {
      out.refusal = RenewRefusal::device_unknown;
      return out;
    }
    if (device->status != DeviceStatus::active) {
      out.refusal = RenewRefusal::device_not_active;
      return out;
    }
    auto query = prepare(db_,
                         "SELECT " ONBOARD_CERTIFICATE_COLUMNS
                         " FROM certificates WHERE device_id = ?1 ORDER BY rowid",
                         id);
    bool found = false;
    Certificate presented_cert;
    std::vector<Certificate> renewals;  // active renewals of the presented certificate
    std::size_t others_active = 0;
    while (query.step()) {
      Certificate c = certificate_from(query);
      const bool renews_presented = c.renews == *presented;
      const bool active =
          c.kind == CertificateKind::device && c.status == CertificateStatus::active;
      if (c.sha256_fingerprint == *presented) {
        found = true;
        presented_cert = std::move(c);
        continue;
      }
      if (active) ++others_active;
      if (renews_presented && active) renewals.push_back(std::move(c));
    }
    query.reset();
    if (!found || presented_cert.kind != CertificateKind::device ||
        presented_cert.status != CertificateStatus::active ||
        actor.now < presented_cert.not_before || actor.now >= presented_cert.not_after) {
      out.refusal = RenewRefusal::certificate_not_current;
      return out;
    }
    for (auto& c : renewals) {
      if (same_key && same_key(c)) {
        out.certificate = std::move(c);
        out.repeated = true;
        return out;
      }
    }
    if (others_active >= kMaxPendingRenewals) {
      out.refusal = RenewRefusal::too_many_pending;
      return out;
    }
    Touched touched;
    touch(touched, Entity::certificate, cert.sha256_fingerprint);
    ONBOARD_CHECK(insert_certificate(CertificateKind::device, id, cert, *presented));
    record_change(ChangeKind::device, id, actor.now);
    record_audit(actor, "certificate.renew", id,
                 {{"serial", cert.serial_hex},
                  {"fingerprint", cert.sha256_fingerprint},
                  {"renews", presented_cert.serial_hex}},
                 touched);
    out.certificate = just_recorded(cert, id, CertificateKind::device);
    out.certificate.renews = *presented;
    return out;
  });
}

// What the current certificate replaces (ClaimStore::supersede_predecessors); read inside read()
// or write().
SqlStore::Predecessors SqlStore::find_predecessors(const std::string& id,
                                                   const std::string& current) {
  Predecessors found;
  auto device = load_device(id);
  if (!device || device->status != DeviceStatus::active) return found;
  struct Row {
    std::string serial, fingerprint, renews;
    bool active = false;
  };
  std::vector<Row> rows;
  std::unordered_map<std::string, std::size_t> by_fingerprint;
  auto query = prepare(db_,
                       "SELECT serial_hex, sha256_fingerprint, status, kind, renews FROM "
                       "certificates WHERE device_id = ?1 ORDER BY rowid",
                       id);
  while (query.step()) {
    Row row{query.text(0), query.text(1), query.is_null(4) ? std::string() : query.text(4),
            query.text(2) == "active" && query.text(3) == "device"};
    by_fingerprint.emplace(row.fingerprint, rows.size());
    rows.push_back(std::move(row));
  }
  query.reset();
  const auto it = by_fingerprint.find(current);
  if (it == by_fingerprint.end() || !rows[it->second].active) return found;
  found.current_serial = rows[it->second].serial;
  // A certificate's line: itself, then what it renews, and so on (a renewal is always recorded
  // after what it renews, so the line is finite; the bound guards against a damaged table). Only
  // the device's own certificates are in `rows`: a link to another device's ends the line.
  auto line_of = [&](std::size_t at) {
    std::vector<std::size_t> line{at};
    while (line.size() <= rows.size() && !rows[line.back()].renews.empty()) {
      const auto parent = by_fingerprint.find(rows[line.back()].renews);
      if (parent == by_fingerprint.end()) break;
      line.push_back(parent->second);
    }
    return line;
  };
  const auto current_line = line_of(it->second);
  const std::unordered_set<std::size_t> ancestors(current_line.begin() + 1, current_line.end());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].active || i == it->second) continue;
    const auto line = line_of(i);
    const bool descends_from_current =
        std::find(line.begin(), line.end(), it->second) != line.end();
    const bool in_family = std::any_of(line.begin(), line.end(),
                                       [&](std::size_t at) { return ancestors.contains(at); });
    if (in_family && !descends_from_current) {
      found.serials.push_back(rows[i].serial);
      found.fingerprints.push_back(rows[i].fingerprint);
    }
  }
  return found;
}

Result<std::vector<std::string>> SqlStore::predecessors_of(std::string_view device_id,
                                                           std::string_view current_sha256) {
  ONBOARD_CHECK(check_device_id(device_id));
  auto current = normalize_fingerprint(current_sha256);
  if (!current) {
    return make_error(Errc::invalid_input, "a fingerprint must be 64 hex digits (SHA-256)");
  }
  const std::string id(device_id);
  return read("find superseded certificates", [&]() -> Result<std::vector<std::string>> {
    return find_predecessors(id, *current).serials;
  });
}

Result<std::vector<std::string>> SqlStore::supersede_predecessors(std::string_view device_id,
                                                                  std::string_view current_sha256,
                                                                  const Actor& actor) {
  // Most connects that send a notice replace nothing (the old certificate's while its renewal
  // waits, a notice repeated): looked for without the write lock first, and again under it only
  // when something is due.
  ONBOARD_TRY(const auto due, predecessors_of(device_id, current_sha256));
  if (due.empty()) return std::vector<std::string>();
  const std::string id(device_id);
  const std::string current = *normalize_fingerprint(current_sha256);
  return write("supersede certificates", actor, [&]() -> Result<std::vector<std::string>> {
    const Predecessors found = find_predecessors(id, current);
    if (found.fingerprints.empty()) return std::vector<std::string>();
    supersede_certificates(
        id, found.fingerprints,
        {{"serial", found.current_serial}, {"superseded", found.serials}, {"why", "connected"}},
        actor);
    return found.serials;
  });
}

namespace {

// The grace period's rule (ClaimStore::renewals_due), on `prev` joined with its device `d`: an
// active device certificate of an active device, renewed by an active certificate of the same
// device, none of whose active renewals of that device was issued after ?1. Only a renewal of the
// same device counts: renew_device never links across devices, and a link that does (a damaged
// or forged row) must not revoke another device's certificate, nor hold one back.
#define ONBOARD_RENEWAL_DUE                                                                      \
  "prev.kind = 'device' AND prev.status = 'active' AND d.status = 'active' "                     \
  "AND EXISTS (SELECT 1 FROM certificates succ WHERE succ.renews = prev.sha256_fingerprint "     \
  "AND succ.device_id = prev.device_id AND succ.status = 'active') "                             \
  "AND NOT EXISTS (SELECT 1 FROM certificates succ WHERE succ.renews = prev.sha256_fingerprint " \
  "AND succ.device_id = prev.device_id AND succ.status = 'active' AND succ.not_before > ?1)"

// The scan: led by the renewals (certificates_by_renews), since most certificates renew none.
constexpr const char* kRenewalsDue =
    "SELECT prev.device_id, prev.serial_hex, prev.sha256_fingerprint "
    "FROM certificates prev JOIN devices d ON d.id = prev.device_id "
    "WHERE prev.sha256_fingerprint IN (SELECT renews FROM certificates "
    "WHERE renews IS NOT NULL AND status = 'active') AND " ONBOARD_RENEWAL_DUE
    " ORDER BY prev.device_id, prev.rowid";
// The check again of one candidate (?2 its fingerprint, ?3 its device), under the write lock: a
// lookup by key, whatever the registry's size.
constexpr const char* kRenewalStillDue =
    "SELECT prev.device_id, prev.serial_hex, prev.sha256_fingerprint "
    "FROM certificates prev JOIN devices d ON d.id = prev.device_id "
    "WHERE prev.sha256_fingerprint = ?2 AND prev.device_id = ?3 AND " ONBOARD_RENEWAL_DUE;

}  // namespace

Result<std::vector<DueRenewal>> SqlStore::renewals_due(UnixTime renewed_by) {
  return read("find renewed certificates", [&]() -> Result<std::vector<DueRenewal>> {
    std::vector<DueRenewal> due;
    auto query = prepare(db_, kRenewalsDue, renewed_by);
    while (query.step()) due.push_back({query.text(0), query.text(2)});
    return due;
  });
}

// Each candidate is looked at again in the write transaction: what changed since the scan (a
// renewal of it connected and revoked it, a new renewal of it, the device disabled) leaves it.
Result<std::vector<std::string>> SqlStore::supersede_renewed(const std::vector<DueRenewal>& due,
                                                             UnixTime renewed_by,
                                                             const Actor& actor) {
  if (due.empty()) return std::vector<std::string>();
  if (due.size() > kSupersedeBatch) {
    return make_error(Errc::invalid_input, "at most " + std::to_string(kSupersedeBatch) +
                                               " renewed certificates are superseded at once");
  }
  return write("supersede renewed certificates", actor, [&]() -> Result<std::vector<std::string>> {
    struct Still {
      std::string device, serial, fingerprint;
    };
    std::vector<Still> still;
    std::unordered_set<std::string> seen;
    for (const auto& candidate : due) {
      if (!seen.insert(candidate.sha256_fingerprint).second) continue;
      auto query = prepare(db_, kRenewalStillDue, renewed_by, candidate.sha256_fingerprint,
                           candidate.device_id);
      if (query.step()) still.push_back({query.text(0), query.text(1), query.text(2)});
    }
    std::stable_sort(still.begin(), still.end(),
                     [](const Still& a, const Still& b) { return a.device < b.device; });
    std::vector<std::string> serials;
    for (std::size_t i = 0; i < still.size();) {
      std::size_t end = i;
      std::vector<std::string> fingerprints, device_serials;
      while (end < still.size() && still[end].device == still[i].device) {
        fingerprints.push_back(still[end].fingerprint);
        device_serials.push_back(still[end].serial);
        ++end;
      }
      supersede_certificates(still[i].device, fingerprints,
                             {{"superseded", device_serials}, {"why", "grace period over"}}, actor);
      serials.insert(serials.end(), device_serials.begin(), device_serials.end());
      i = end;
    }
    return serials;
  });
}

void SqlStore::supersede_certificates(const std::string& device_id,
                                      const std::vector<std::string>& fingerprints,
                                      const nlohmann::json& details, const Actor& actor) {
  Touched touched;
  for (const auto& fingerprint : fingerprints) {
    touch(touched, Entity::certificate, fingerprint);
    prepare(db_,
            "UPDATE certificates SET status = 'revoked', revoked_at = ?1, "
            "revocation_reason = ?2 WHERE sha256_fingerprint = ?3",
            actor.now, revocation_reason_name(RevocationReason::superseded), fingerprint)
        .exec();
    // A key kept for a revoked certificate has no use left.
    prepare(db_, "DELETE FROM held_keys WHERE device_id = ?1 AND certificate_sha256 = ?2",
            device_id, fingerprint)
        .exec();
  }
  record_change(ChangeKind::device, device_id, actor.now);
  record_audit(actor, "certificate.supersede", device_id, details, touched);
}

}  // namespace onboard::registry::sql
