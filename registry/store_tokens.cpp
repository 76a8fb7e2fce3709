// TokenStore: API tokens, stored by their SHA-256 only.
#include "registry/store_internal.h"

#include "core/identity.h"

namespace onboard::registry::sql {

namespace {

ApiToken api_token_from(const Statement& s) {
  ApiToken t;
  t.id = s.int64(0);
  t.name = s.text(1);
  auto role = parse_api_role(s.text(2));
  if (!role) throw CorruptValue("an unknown API role");
  t.role = *role;
  t.created_at = s.int64(3);
  if (!s.is_null(4)) t.revoked_at = s.int64(4);
  return t;
}

}  // namespace

Result<ApiToken> SqlStore::create_api_token(std::string_view name, ApiRole role,
                                            std::string_view token_sha256, const Actor& actor) {
  if (auto problem = device_id_problem(name)) {
    return make_error(Errc::invalid_input, "token name: " + *problem);
  }
  auto hash = normalize_fingerprint(token_sha256);
  if (!hash) return make_error(Errc::invalid_input, "a token hash must be 64 hex digits");
  return write("create API token", actor, [&]() -> Result<ApiToken> {
    auto existing = prepare(db_, "SELECT 1 FROM api_tokens WHERE name = ?1", name);
    if (existing.step()) {
      return make_error(Errc::conflict, "a token named " + std::string(name) + " already exists");
    }
    Touched touched;
    touch(touched, Entity::token, name);
    auto inserted = prepare(db_,
                            "INSERT INTO api_tokens (name, role, token_sha256, created_at) "
                            "VALUES (?1, ?2, ?3, ?4) RETURNING id",
                            name, to_string(role), *hash, actor.now);
    if (!inserted.step()) throw CorruptValue("no id for a new token");
    const std::int64_t id = inserted.int64(0);
    inserted.reset();
    record_audit(actor, "token.create", name, {{"role", to_string(role)}}, touched);
    return ApiToken{id, std::string(name), role, actor.now, std::nullopt};
  });
}

Result<std::vector<ApiToken>> SqlStore::list_api_tokens() {
  return read("list API tokens", [&]() -> Result<std::vector<ApiToken>> {
    auto query =
        prepare(db_, "SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY name");
    std::vector<ApiToken> tokens;
    while (query.step()) tokens.push_back(api_token_from(query));
    return tokens;
  });
}

Result<bool> SqlStore::revoke_api_token(std::string_view name, const Actor& actor) {
  if (auto problem = device_id_problem(name)) {
    return make_error(Errc::invalid_input, "token name: " + *problem);
  }
  return write("revoke API token", actor, [&]() -> Result<bool> {
    auto query = prepare(db_, "SELECT revoked_at FROM api_tokens WHERE name = ?1", name);
    if (!query.step()) {
      return make_error(Errc::not_found, "no token is named " + std::string(name));
    }
    if (!query.is_null(0)) return false;
    query.reset();
    Touched touched;
    touch(touched, Entity::token, name);
    prepare(db_, "UPDATE api_tokens SET revoked_at = ?1 WHERE name = ?2", actor.now, name).exec();
    record_audit(actor, "token.revoke", name, nlohmann::json::object(), touched);
    return true;
  });
}

Result<ApiToken> SqlStore::find_api_token(std::string_view token_sha256) {
  auto hash = normalize_fingerprint(token_sha256);
  if (!hash) return make_error(Errc::invalid_input, "a token hash must be 64 hex digits");
  return read("find API token", [&]() -> Result<ApiToken> {
    auto query = prepare(db_,
                         "SELECT id, name, role, created_at, revoked_at FROM api_tokens "
                         "WHERE token_sha256 = ?1 AND revoked_at IS NULL",
                         *hash);
    if (!query.step()) return make_error(Errc::not_found, "unknown or revoked token");
    return api_token_from(query);
  });
}

}  // namespace onboard::registry::sql
