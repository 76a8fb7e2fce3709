// CrlStore: the revoked certificates a CRL lists and the CRL numbers kept in meta.
#include "registry/store_internal.h"

namespace onboard::registry::sql {

Result<std::vector<RevokedEntry>> SqlStore::revoked_certificates(std::string_view issuer) {
  return read("list revoked certificates", [&]() -> Result<std::vector<RevokedEntry>> {
    auto query = prepare(db_,
                         "SELECT serial_hex, revoked_at, revocation_reason FROM certificates "
                         "WHERE status = 'revoked' AND issuer = ?1 ORDER BY serial_hex",
                         issuer);
    std::vector<RevokedEntry> entries;
    while (query.step()) {
      entries.push_back(RevokedEntry{query.text(0), query.int64(1), reason_from(query.text(2))});
    }
    return entries;
  });
}

Result<std::uint64_t> SqlStore::next_crl_number(const Actor& actor) {
  return write("next CRL number", actor, [&]() -> Result<std::uint64_t> {
    prepare(db_,
            "UPDATE meta SET crl_number = crl_number + 1, crl_last_issued_at = ?1 WHERE id = 1",
            actor.now)
        .exec();
    const auto number = query_int64(db_, "SELECT crl_number FROM meta WHERE id = 1");
    record_change(ChangeKind::crl, "", actor.now);
    record_audit(actor, "crl.issue", std::to_string(number), nlohmann::json::object());
    return static_cast<std::uint64_t>(number);
  });
}

Result<std::uint64_t> SqlStore::next_root_crl_number(const Actor& actor) {
  return write("next root CRL number", actor, [&]() -> Result<std::uint64_t> {
    db_.exec("UPDATE meta SET root_crl_number = root_crl_number + 1 WHERE id = 1");
    const auto number = query_int64(db_, "SELECT root_crl_number FROM meta WHERE id = 1");
    record_audit(actor, "crl.issue_root", std::to_string(number), nlohmann::json::object());
    return static_cast<std::uint64_t>(number);
  });
}

Result<CrlState> SqlStore::crl_state() {
  return read("read CRL state", [&]() -> Result<CrlState> {
    auto query = prepare(db_, "SELECT crl_number, crl_last_issued_at FROM meta WHERE id = 1");
    if (!query.step()) throw CorruptValue("no meta row");
    CrlState state{static_cast<std::uint64_t>(query.int64(0)), std::nullopt};
    if (!query.is_null(1)) state.last_issued_at = query.int64(1);
    return state;
  });
}

}  // namespace onboard::registry::sql
