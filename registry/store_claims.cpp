// ClaimStore: the claims devices enroll themselves with, and their certificates.
#include "core/identity.h"
#include "registry/id_pattern.h"
#include "registry/store_internal.h"

namespace onboard::registry {

std::optional<std::string> claim_name_problem(std::string_view name) {
  auto problem = device_id_problem(name);
  if (!problem) return std::nullopt;
  constexpr std::string_view kSubject = "device id";
  if (problem->starts_with(kSubject)) return "claim name" + problem->substr(kSubject.size());
  return "claim name: " + *problem;
}

std::string_view to_string(RenewRefusal refusal) noexcept {
  switch (refusal) {
    case RenewRefusal::none:
      return "none";
    case RenewRefusal::device_unknown:
      return "device unknown";
    case RenewRefusal::device_not_active:
      return "device not active";
    case RenewRefusal::certificate_not_current:
      return "the certificate it connected with is not its active one";
    case RenewRefusal::too_many_pending:
      return "earlier renewals still wait for their certificate to connect";
  }
  return "unknown";
}

}  // namespace onboard::registry

namespace onboard::registry::sql {
namespace {

#define ONBOARD_CLAIM_COLUMNS                                                                  \
  "name, certificate_sha256, quota, quota_used, expires_at, id_pattern, device_type, status, " \
  "created_at, created_by, revoked_at"

// Columns: ONBOARD_CLAIM_COLUMNS.
Claim claim_from(const Statement& s) {
  Claim c;
  c.name = s.text(0);
  c.certificate_sha256 = s.text(1);
  c.quota = s.int64(2);
  c.quota_used = s.int64(3);
  c.expires_at = s.int64(4);
  c.id_pattern = s.text(5);
  c.device_type = s.text(6);
  const std::string status = s.text(7);
  if (status == "active") {
    c.status = ClaimStatus::active;
  } else if (status == "revoked") {
    c.status = ClaimStatus::revoked;
  } else {
    throw CorruptValue("an unknown claim status");
  }
  c.created_at = s.int64(8);
  c.created_by = s.text(9);
  if (!s.is_null(10)) c.revoked_at = s.int64(10);
  return c;
}

Status check_claim_name(std::string_view name) {
  if (auto problem = claim_name_problem(name)) return make_error(Errc::invalid_input, *problem);
  return ok_status();
}

}  // namespace

std::optional<Claim> SqlStore::load_claim(std::string_view name) {
  auto query = prepare(db_, "SELECT " ONBOARD_CLAIM_COLUMNS " FROM claims WHERE name = ?1", name);
  if (!query.step()) return std::nullopt;
  return claim_from(query);
}

void SqlStore::revoke_claim_of(std::string_view certificate_sha256, UnixTime now,
                               Touched& touched) {
  auto query =
      prepare(db_, "SELECT name FROM claims WHERE certificate_sha256 = ?1 AND status = 'active'",
              certificate_sha256);
  if (!query.step()) return;
  const std::string name = query.text(0);
  query.reset();
  touch(touched, Entity::claim, name);
  prepare(db_, "UPDATE claims SET status = 'revoked', revoked_at = ?1 WHERE name = ?2", now, name)
      .exec();
  record_change(ChangeKind::claim, name, now);
}

Result<Claim> SqlStore::create_claim(const NewClaim& input, const NewCertificate& certificate,
                                     const Actor& actor) {
  ONBOARD_CHECK(check_claim_name(input.name));
  if (input.quota < 1 || input.quota > kMaxClaimQuota) {
    return make_error(Errc::invalid_input, "quota must be 1 to " + std::to_string(kMaxClaimQuota));
  }
  if (auto problem = id_pattern_problem(input.id_pattern)) {
    return make_error(Errc::invalid_input, *problem);
  }
  if (!input.device_type.empty()) ONBOARD_CHECK(check_group_name(input.device_type));
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  if (!cert.held_key_pem.empty()) {
    return make_error(Errc::invalid_input, "the registry holds keys of devices only");
  }
  return write("create claim", actor, [&]() -> Result<Claim> {
    if (load_claim(input.name)) {
      return make_error(Errc::conflict, "claim " + input.name + " already exists");
    }
    Touched touched;
    touch(touched, Entity::certificate, cert.sha256_fingerprint);
    touch(touched, Entity::claim, input.name);
    ONBOARD_CHECK(insert_certificate(CertificateKind::claim, {}, cert));
    const Claim claim{
        input.name,       cert.sha256_fingerprint, input.quota,         0,         cert.not_after,
        input.id_pattern, input.device_type,       ClaimStatus::active, actor.now, actor.name,
        std::nullopt};
    prepare(db_,
            "INSERT INTO claims (" ONBOARD_CLAIM_COLUMNS
            ") VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, 'active', ?7, ?8, NULL)",
            claim.name, claim.certificate_sha256, claim.quota, claim.expires_at, claim.id_pattern,
            claim.device_type, claim.created_at, claim.created_by)
        .exec();
    record_change(ChangeKind::claim, claim.name, actor.now);
    record_audit(actor, "claim.create", claim.name,
                 {{"serial", cert.serial_hex},
                  {"fingerprint", cert.sha256_fingerprint},
                  {"quota", claim.quota},
                  {"expires_at", claim.expires_at},
                  {"id_pattern", claim.id_pattern},
                  {"type", claim.device_type}},
                 touched);
    return claim;
  });
}

Result<Claim> SqlStore::get_claim(std::string_view name) {
  ONBOARD_CHECK(check_claim_name(name));
  return read("get claim", [&]() -> Result<Claim> {
    if (auto claim = load_claim(name)) return *claim;
    return make_error(Errc::not_found, "claim " + std::string(name) + " does not exist");
  });
}

Result<std::vector<Claim>> SqlStore::list_claims() {
  return read("list claims", [&]() -> Result<std::vector<Claim>> {
    auto query = prepare(db_, "SELECT " ONBOARD_CLAIM_COLUMNS " FROM claims ORDER BY name");
    std::vector<Claim> claims;
    while (query.step()) claims.push_back(claim_from(query));
    return claims;
  });
}

Result<ClaimRevokeOutcome> SqlStore::revoke_claim(std::string_view name, RevocationReason reason,
                                                  const Actor& actor) {
  ONBOARD_CHECK(check_claim_name(name));
  return write("revoke claim", actor, [&]() -> Result<ClaimRevokeOutcome> {
    auto claim = load_claim(name);
    if (!claim)
      return make_error(Errc::not_found, "claim " + std::string(name) + " does not exist");
    ClaimRevokeOutcome outcome;
    auto serial = prepare(db_,
                          "SELECT serial_hex, status FROM certificates "
                          "WHERE sha256_fingerprint = ?1",
                          claim->certificate_sha256);
    if (!serial.step()) throw CorruptValue("a claim without its certificate");
    outcome.serial_hex = serial.text(0);
    const bool certificate_active = serial.text(1) == "active";
    serial.reset();
    if (claim->status == ClaimStatus::revoked && !certificate_active) {
      outcome.already_revoked = true;  // idempotent: an answer, and nothing written
      outcome.claim = std::move(*claim);
      return outcome;
    }
    Touched touched;
    touch(touched, Entity::claim, name);
    touch(touched, Entity::certificate, claim->certificate_sha256);
    if (certificate_active) {
      prepare(db_,
              "UPDATE certificates SET status = 'revoked', revoked_at = ?1, "
              "revocation_reason = ?2 WHERE sha256_fingerprint = ?3",
              actor.now, revocation_reason_name(reason), claim->certificate_sha256)
          .exec();
    }
    if (claim->status == ClaimStatus::active) {
      prepare(db_, "UPDATE claims SET status = 'revoked', revoked_at = ?1 WHERE name = ?2",
              actor.now, name)
          .exec();
      claim->status = ClaimStatus::revoked;
      claim->revoked_at = actor.now;
    }
    record_change(ChangeKind::claim, name, actor.now);
    record_audit(actor, "claim.revoke", name,
                 {{"reason", revocation_reason_name(reason)},
                  {"serial", outcome.serial_hex},
                  {"fingerprint", claim->certificate_sha256}},
                 touched);
    outcome.claim = std::move(*claim);
    return outcome;
  });
}

}  // namespace onboard::registry::sql

namespace onboard::registry {

std::string_view to_string(EnrollRefusal refusal) noexcept {
  switch (refusal) {
    case EnrollRefusal::none:
      return "enrolled";
    case EnrollRefusal::claim_unknown:
      return "claim unknown";
    case EnrollRefusal::claim_revoked:
      return "claim revoked";
    case EnrollRefusal::claim_expired:
      return "claim expired";
    case EnrollRefusal::claim_used_up:
      return "claim used up";
    case EnrollRefusal::id_not_allowed:
      return "id not allowed by the claim's id pattern";
    case EnrollRefusal::id_taken:
      return "id taken";
  }
  return "unknown";
}

}  // namespace onboard::registry

namespace onboard::registry::sql {

// Decision table (the first row that applies refuses; nothing is written then):
//  1. no such claim;  2. claim revoked;  3. actor.now at or past its expiry;
//  4. the id outside its id pattern;  5. a device of that id exists;
//  6. no unit of quota left: the conditional update changed no row.
// Otherwise the unit is spent and the device recorded, in the caller's transaction.
Result<EnrollOutcome> SqlStore::enroll_in_transaction(std::string_view claim_name,
                                                      const NewDevice& input,
                                                      const std::string& metadata,
                                                      const NewCertificate& cert,
                                                      const Actor& actor) {
  EnrollOutcome out;
  auto claim = load_claim(claim_name);
  if (!claim) {
    out.refusal = EnrollRefusal::claim_unknown;
    return out;
  }
  if (claim->status == ClaimStatus::revoked) {
    out.refusal = EnrollRefusal::claim_revoked;
    return out;
  }
  if (actor.now >= claim->expires_at) {
    out.refusal = EnrollRefusal::claim_expired;
    return out;
  }
  auto pattern = IdPattern::compile(claim->id_pattern);
  if (!pattern.ok()) throw CorruptValue("a claim's id pattern does not compile");
  if (!pattern->matches(input.id)) {
    out.refusal = EnrollRefusal::id_not_allowed;
    return out;
  }
  if (load_device(input.id)) {
    out.refusal = EnrollRefusal::id_taken;
    return out;
  }
  Touched touched;
  touch(touched, Entity::claim, claim->name);
  if (prepare(db_,
              "UPDATE claims SET quota_used = quota_used + 1 WHERE name = ?1 AND "
              "quota_used < quota",
              claim->name)
          .exec() != 1) {
    out.refusal = EnrollRefusal::claim_used_up;
    return out;
  }
  NewDevice device = input;
  device.type = claim->device_type;
  bool new_group = false;
  ONBOARD_TRY(out.device, insert_device_rows(device, metadata, cert, actor, touched, new_group));
  record_change(ChangeKind::device, out.device.id, actor.now);
  record_change(ChangeKind::claim, claim->name, actor.now);
  record_audit(actor, "device.enroll", out.device.id,
               {{"claim", claim->name},
                {"type", out.device.type},
                {"serial", cert.serial_hex},
                {"fingerprint", cert.sha256_fingerprint},
                {"created_group", new_group},
                {"quota_used", claim->quota_used + 1}},
               touched);
  return out;
}

Result<EnrollOutcome> SqlStore::enroll_device(std::string_view claim_name, const NewDevice& input,
                                              const NewCertificate& certificate,
                                              const Actor& actor) {
  ONBOARD_CHECK(check_claim_name(claim_name));
  ONBOARD_CHECK(check_device_id(input.id));
  ONBOARD_TRY(std::string metadata, compact_metadata(input.metadata));
  ONBOARD_TRY(NewCertificate cert, checked_certificate(certificate));
  return write("enroll device", actor, [&]() -> Result<EnrollOutcome> {
    return enroll_in_transaction(claim_name, input, metadata, cert, actor);
  });
}

// Each item in a savepoint of the one transaction. An item's refusal or error rolls back to its
// savepoint; a failure the whole transaction must be run again for (a serialization failure) or
// that leaves no savepoint to roll back to (SQLite rolls the whole transaction back on some I/O
// errors) ends the batch, and write() reports it for all.
std::vector<Result<EnrollOutcome>> SqlStore::enroll_devices(const std::vector<EnrollItem>& items) {
  constexpr std::string_view kWhat = "enroll devices";
  std::vector<Result<EnrollOutcome>> results;
  results.reserve(items.size());
  if (items.empty()) return results;
  if (items.size() > kMaxEnrollBatch) {
    for (std::size_t i = 0; i < items.size(); ++i) {
      results.emplace_back(make_error(
          Errc::invalid_input,
          "at most " + std::to_string(kMaxEnrollBatch) + " enrolments in one transaction"));
    }
    return results;
  }
  // The checks enroll_device makes before its transaction; an item that fails one is not in it.
  struct Prepared {
    std::string metadata;
    NewCertificate cert;
  };
  std::vector<std::optional<Prepared>> prepared(items.size());
  std::vector<std::optional<Error>> refused(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& item = items[i];
    auto check = [&]() -> Result<Prepared> {
      ONBOARD_CHECK(check_claim_name(item.claim));
      ONBOARD_CHECK(check_device_id(item.device.id));
      if (item.actor.name.empty())
        return make_error(Errc::invalid_input, "enroll device: no actor named for the audit log");
      ONBOARD_TRY(std::string metadata, compact_metadata(item.device.metadata));
      ONBOARD_TRY(NewCertificate cert, checked_certificate(item.certificate));
      return Prepared{std::move(metadata), std::move(cert)};
    };
    auto checked = check();
    if (checked.ok()) {
      prepared[i] = std::move(*checked);
    } else {
      refused[i] = std::move(checked).error();
    }
  }
  using Outcomes = std::vector<Result<EnrollOutcome>>;
  auto batch = write(kWhat, items.front().actor, [&]() -> Result<Outcomes> {
    Outcomes out;  // afresh on each attempt: write() may run this again
    out.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (!prepared[i]) {
        out.emplace_back(*refused[i]);
        continue;
      }
      const auto& item = items[i];
      db_.exec("SAVEPOINT enrol");
      bool keep = false;
      try {
        auto one = enroll_in_transaction(item.claim, item.device, prepared[i]->metadata,
                                         prepared[i]->cert, item.actor);
        keep = one.ok() && one->refusal == EnrollRefusal::none;
        out.push_back(std::move(one));
      } catch (const Failure& failure) {
        if (failure.retry) throw;
        out.emplace_back(current_exception_error("enroll device"));
      } catch (...) {
        out.emplace_back(current_exception_error("enroll device"));
      }
      // Throws when there is no savepoint left: the whole is then an error.
      if (!keep) db_.exec("ROLLBACK TO SAVEPOINT enrol");
      db_.exec("RELEASE SAVEPOINT enrol");
    }
    return out;
  });
  if (!batch.ok()) {
    for (std::size_t i = 0; i < items.size(); ++i) results.emplace_back(batch.error());
    return results;
  }
  return std::move(*batch);
}

}  // namespace onboard::registry::sql
