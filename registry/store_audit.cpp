// AuditStore, and the audit and change rows every write appends.
#include "registry/store_internal.h"

#include "registry/audit.h"

namespace onboard::registry::sql {

namespace {

AuditEvent audit_event_from(const Statement& s) {
  return AuditEvent{s.int64(0), s.int64(1), s.text(2), s.text(3),
                    s.text(4),  s.text(5),  s.text(6), s.text(7)};
}

}  // namespace

// The change counter lives in meta and is bumped in the caller's transaction; a reader that saw
// seq N loads exactly the rows after N.
void SqlStore::record_change(ChangeKind kind, std::string_view subject, UnixTime now) {
  db_.exec("UPDATE meta SET change_seq = change_seq + 1 WHERE id = 1");
  prepare(db_,
          "INSERT INTO changes (seq, at, kind, subject) "
          "SELECT change_seq, ?1, ?2, ?3 FROM meta WHERE id = 1",
          now, to_string(kind), subject)
      .exec();
}

std::optional<std::string> SqlStore::stored_digest(Entity entity, std::string_view key) {
  const EntityTable& table = entity_table(entity);
  // Built from the constant table list only; the key is bound.
  const std::string sql = std::string("SELECT ") + table.columns + " FROM " + table.table +
                          " WHERE " + table.key + " = ?1";
  auto query = table.integer_columns.front()
                   ? prepare(db_, sql, static_cast<std::int64_t>(std::stoll(std::string(key))))
                   : prepare(db_, sql, key);
  if (!query.step()) return std::nullopt;
  return entity_digest(table, query);
}

void SqlStore::touch(Touched& touched, Entity entity, std::string_view key) {
  if (touched.contains(entity, key)) return;  // the first state is the one before the write
  touched.entries.push_back(Touched::Entry{entity, std::string(key), stored_digest(entity, key)});
}

void SqlStore::record_audit(const Actor& actor, std::string_view action, std::string_view subject,
                            const nlohmann::json& recorded, const Touched& touched) {
  nlohmann::json details = recorded;
  if (!touched.entries.empty()) {
    nlohmann::json state = nlohmann::json::object();
    for (const auto& e : touched.entries) {
      const auto after = stored_digest(e.entity, e.key);
      state[entity_ref(e.entity, e.key)] = {e.before ? nlohmann::json(*e.before) : nullptr,
                                            after ? nlohmann::json(*after) : nullptr};
    }
    details["state"] = std::move(state);
  }
  auto head = prepare(db_, "SELECT audit_head_seq, audit_head_hash FROM meta WHERE id = 1");
  if (!head.step()) throw CorruptValue("no meta row");
  AuditEvent event;
  event.seq = head.int64(0) + 1;
  event.prev_hash = head.text(1);
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

Result<std::vector<AuditEvent>> SqlStore::audit_list(std::size_t limit, std::int64_t after_seq) {
  const std::int64_t sql_limit = limit == 0 ? kNoLimit : static_cast<std::int64_t>(limit);
  return read("list audit events", [&]() -> Result<std::vector<AuditEvent>> {
    auto query = prepare(db_,
                         "SELECT seq, at, actor, action, subject, details, prev_hash, hash "
                         "FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                         after_seq, sql_limit);
    std::vector<AuditEvent> events;
    while (query.step()) events.push_back(audit_event_from(query));
    return events;
  });
}

void SqlStore::record_attested(const Actor& actor, std::string_view action,
                               std::string_view subject, nlohmann::json details) {
  std::uint64_t part = 1;
  nlohmann::json entities = nlohmann::json::object();
  auto flush = [&] {
    nlohmann::json attest = {{"part", part}, {"entities", std::move(entities)}};
    entities = nlohmann::json::object();
    if (part == 1) {
      details["attest"] = std::move(attest);
      record_audit(actor, action, subject, details);
    } else {
      record_audit(actor, "state.attest", subject, {{"attest", std::move(attest)}});
    }
    ++part;
  };
  for (const auto& table : entity_tables()) {
    auto rows = scan(db_, std::string("SELECT ") + table.columns + " FROM " + table.table +
                              " ORDER BY " + table.order_by);
    while (rows.step()) {
      entities[entity_ref(table.entity, entity_key(table, rows))] = entity_digest(table, rows);
      if (entities.size() == kAttestChunk) flush();
    }
  }
  if (part == 1 || !entities.empty()) flush();
}

// One read transaction: the rows, the head and the entities come from the same snapshot, so a
// concurrent write cannot look like tampering. The chain first: the state is only compared with
// rows known to be genuine.
Result<AuditCheck> SqlStore::verify_audit() {
  return read("verify audit log", [&]() -> Result<AuditCheck> {
    AuditChainVerifier verifier;
    StateLedger ledger;
    auto rows = scan(db_,
                     "SELECT seq, at, actor, action, subject, details, prev_hash, hash "
                     "FROM audit_events ORDER BY seq");
    while (rows.step()) {
      const AuditEvent row = audit_event_from(rows);
      if (!verifier.add(row)) break;  // the first problem of the chain is the answer
      ledger.add_row(row);            // after its first problem the ledger only waits
    }
    rows.reset();
    auto head_query = prepare(db_, "SELECT audit_head_seq, audit_head_hash FROM meta WHERE id = 1");
    if (!head_query.step()) throw CorruptValue("no meta row");
    const AuditHead head{head_query.int64(0), head_query.text(1)};
    head_query.reset();
    AuditCheck check = verifier.finish(head);
    if (!check.ok()) return check;
    for (const auto& table : entity_tables()) {
      if (!ledger.ok()) break;
      auto entities = scan(db_, std::string("SELECT ") + table.columns + " FROM " + table.table +
                                    " ORDER BY " + table.order_by);
      while (entities.step()) {
        if (!ledger.add_current(table, entity_key(table, entities),
                                entity_digest(table, entities))) {
          break;
        }
      }
      entities.reset();
    }
    if (ledger.ok()) {
      if (const auto seq = ledger.first_missing()) {
        auto row_query = prepare(db_,
                                 "SELECT seq, at, actor, action, subject, details, prev_hash, "
                                 "hash FROM audit_events WHERE seq = ?1",
                                 *seq);
        if (!row_query.step()) throw CorruptValue("an audit row that vanished");
        const auto ref = ledger.missing_in(audit_event_from(row_query));
        ledger.report_missing(*seq, ref.value_or("entity:?"));
      }
    }
    ledger.finish(check);
    return check;
  });
}

Status SqlStore::record_event(std::string_view action, std::string_view subject,
                              std::string_view details, const Actor& actor) {
  auto parsed = nlohmann::json::parse(details, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return make_error(Errc::invalid_input, "audit details must be a JSON object");
  }
  if (parsed.contains("state") || parsed.contains("attest") || action == "state.attest") {
    return make_error(Errc::invalid_input,
                      "audit details may not use the keys the registry records state under");
  }
  if (action.empty()) return make_error(Errc::invalid_input, "an audit row needs an action");
  return write("record event", actor, [&]() -> Status {
    record_audit(actor, action, subject, parsed);
    return ok_status();
  });
}

Result<std::int64_t> SqlStore::change_seq() {
  return read("read change sequence", [&]() -> Result<std::int64_t> {
    return query_int64(db_, "SELECT change_seq FROM meta WHERE id = 1");
  });
}

Result<std::vector<Change>> SqlStore::changes_since(std::int64_t seq) {
  return read("read changes", [&]() -> Result<std::vector<Change>> {
    auto query =
        prepare(db_, "SELECT seq, at, kind, subject FROM changes WHERE seq > ?1 ORDER BY seq", seq);
    std::vector<Change> changes;
    while (query.step()) {
      changes.push_back(
          Change{query.int64(0), query.int64(1), change_kind_from(query.text(2)), query.text(3)});
    }
    return changes;
  });
}

}  // namespace onboard::registry::sql
