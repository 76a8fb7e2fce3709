// RuleStore: ACL rules and groups.
#include "registry/store_internal.h"

#include <string>

namespace onboard::registry::sql {

namespace {

// Columns: id, device_id, group_name, access, pattern, effect, priority, created_at.
RuleRecord rule_from(const Statement& s) {
  RuleRecord r;
  r.id = s.int64(0);
  if (auto device = s.text_or_null(1)) {
    r.subject_kind = SubjectKind::device;
    r.subject = *device;
  } else {
    r.subject_kind = SubjectKind::group;
    r.subject = s.text(2);
  }
  const auto access = s.int32(3);
  if (access < 1 || access > kAccessReadWrite) throw CorruptValue("an invalid access mask");
  r.access = static_cast<std::uint8_t>(access);
  r.pattern = s.text(4);
  r.effect = s.text(5) == "deny" ? RuleEffect::deny : RuleEffect::allow;
  r.priority = s.int32(6);
  r.created_at = s.int64(7);
  return r;
}

}  // namespace

bool SqlStore::group_exists(std::string_view name) {
  auto query = prepare(db_, "SELECT 1 FROM groups WHERE name = ?1", name);
  return query.step();
}

bool SqlStore::subject_exists(SubjectKind kind, std::string_view name) {
  if (kind == SubjectKind::group) return group_exists(name);
  auto query = prepare(db_, "SELECT 1 FROM devices WHERE id = ?1", name);
  return query.step();
}

void SqlStore::insert_group(std::string_view name, std::string_view description, UnixTime now,
                            Touched& touched) {
  touch(touched, Entity::group, name);
  prepare(db_, "INSERT INTO groups (name, description, created_at) VALUES (?1, ?2, ?3)", name,
          description, now)
      .exec();
  record_change(ChangeKind::group, name, now);
}

std::vector<RuleRecord> SqlStore::query_rules(Statement& statement) {
  std::vector<RuleRecord> rules;
  while (statement.step()) rules.push_back(rule_from(statement));
  return rules;
}

Result<RuleRecord> SqlStore::add_rule(const NewRule& rule, const Actor& actor) {
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
    auto inserted = prepare(db_,
                            "INSERT INTO acl_rules (device_id, group_name, access, pattern, "
                            "effect, priority, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                            "RETURNING id",
                            device_id, group_name, static_cast<int>(rule.access), rule.pattern,
                            to_string(rule.effect), rule.priority, actor.now);
    if (!inserted.step()) throw CorruptValue("no id for a new rule");
    const std::int64_t id = inserted.int64(0);
    inserted.reset();
    Touched touched;
    touched.created(Entity::rule, std::to_string(id));  // ids are never reused
    const RuleRecord record{id,          rule.subject_kind, rule.subject,  rule.pattern,
                            rule.access, rule.effect,       rule.priority, actor.now};
    record_change(device ? ChangeKind::device : ChangeKind::group, rule.subject, actor.now);
    record_audit(actor, rule.effect == RuleEffect::allow ? "acl.grant" : "acl.deny",
                 std::to_string(record.id),
                 {{std::string(to_string(rule.subject_kind)), rule.subject},
                  {"access", rule.access},
                  {"pattern", rule.pattern},
                  {"priority", rule.priority}},
                 touched);
    return record;
  });
}

Status SqlStore::remove_rule(std::int64_t rule_id, const Actor& actor) {
  return write("remove rule", actor, [&]() -> Status {
    auto query = prepare(db_,
                         "SELECT id, device_id, group_name, access, pattern, effect, priority, "
                         "created_at FROM acl_rules WHERE id = ?1",
                         rule_id);
    if (!query.step()) {
      return make_error(Errc::not_found, "rule " + std::to_string(rule_id) + " does not exist");
    }
    const RuleRecord rule = rule_from(query);
    query.reset();
    Touched touched;
    touch(touched, Entity::rule, std::to_string(rule_id));
    prepare(db_, "DELETE FROM acl_rules WHERE id = ?1", rule_id).exec();
    const bool device = rule.subject_kind == SubjectKind::device;
    record_change(device ? ChangeKind::device : ChangeKind::group, rule.subject, actor.now);
    record_audit(actor, "acl.remove", std::to_string(rule_id),
                 {{std::string(to_string(rule.subject_kind)), rule.subject},
                  {"access", rule.access},
                  {"pattern", rule.pattern},
                  {"effect", to_string(rule.effect)},
                  {"priority", rule.priority}},
                 touched);
    return ok_status();
  });
}

Result<std::vector<RuleRecord>> SqlStore::rules_for_subject(SubjectKind kind,
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

Result<std::vector<RuleRecord>> SqlStore::rules_for_device(std::string_view device_id) {
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

Result<Group> SqlStore::create_group(std::string_view name, std::string_view description,
                                     const Actor& actor) {
  ONBOARD_CHECK(check_group_name(name));
  return write("create group", actor, [&]() -> Result<Group> {
    if (group_exists(name)) {
      return make_error(Errc::conflict, "group " + std::string(name) + " already exists");
    }
    Touched touched;
    insert_group(name, description, actor.now, touched);
    record_audit(actor, "group.create", name, {{"description", description}}, touched);
    return Group{std::string(name), std::string(description), actor.now};
  });
}

Result<std::vector<Group>> SqlStore::list_groups() {
  return read("list groups", [&]() -> Result<std::vector<Group>> {
    auto query = prepare(db_, "SELECT name, description, created_at FROM groups ORDER BY name");
    std::vector<Group> groups;
    while (query.step()) {
      groups.push_back(Group{query.text(0), query.text(1), query.int64(2)});
    }
    return groups;
  });
}

}  // namespace onboard::registry::sql
