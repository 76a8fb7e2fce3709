// The input checks every role's writes share, and bringing a registry's schema up to date.
#include <algorithm>
#include <utility>

#include "core/identity.h"
#include "registry/store_internal.h"

namespace onboard::registry::sql {

// --- Input checks ----------------------------------------------------------------------------

RevocationReason reason_from(const std::string& text) {
  if (auto reason = parse_revocation_reason(text)) return *reason;
  throw CorruptValue("an unknown revocation reason");
}

bool is_hex(std::string_view text, bool upper) {
  return std::all_of(text.begin(), text.end(), [upper](char c) {
    return (c >= '0' && c <= '9') || (upper ? (c >= 'A' && c <= 'F') : (c >= 'a' && c <= 'f'));
  });
}

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

// --- Migrations ------------------------------------------------------------------------------

Status SqlStore::create_or_upgrade(UnixTime now) {
  const Actor system{"onboard:migration", now};
  return write("prepare registry " + where_, system, [&]() -> Status {
    // Checked again under the write lock: another process may have migrated meanwhile.
    const int version = db_.schema_version();
    if (version == kSchemaVersion) return ok_status();
    db_.migrate(version, now);
    nlohmann::json details = {{"from_version", version}, {"to_version", kSchemaVersion}};
    // The registry's state as the log starts vouching for it: a new registry's default group and
    // rule, or, from before version 4, everything the older log recorded no state for.
    record_attested(system, version == 0 ? "registry.create" : "registry.migrate", where_, details);
    return ok_status();
  });
}

}  // namespace onboard::registry::sql
