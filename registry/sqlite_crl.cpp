// CrlStore on SQLite: the revoked certificates a CRL lists and the CRL numbers kept in meta.
#include "registry/sqlite_store_internal.h"

namespace onboard::registry::sqlite {

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

}  // namespace onboard::registry::sqlite
