// The PostgreSQL rights of a registry's two roles, as SQL for its owner to run (`psql -f`):
// nothing here connects to a database.
//   broker  what the plugin decides from, read only: meta, groups, devices, certificates,
//           acl_rules, changes, claims. Never held keys, API tokens, audit, batches or bundles.
//   writer  onboardctl and `onboardctl serve`: reads and writes the rows of every table and draws
//           from the identity sequences; neither role may change the schema.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "core/error.h"

namespace onboard::ops {

// Every table of the registry's schema, and those the broker reads.
inline constexpr std::array<std::string_view, 14> kRegistryTables = {
    "meta",         "groups",         "devices",    "certificates", "acl_rules",
    "audit_events", "changes",        "held_keys",  "batches",      "batch_devices",
    "bundles",      "bundle_devices", "api_tokens", "claims"};
inline constexpr std::array<std::string_view, 7> kBrokerTables = {
    "meta", "groups", "devices", "certificates", "acl_rules", "changes", "claims"};

// A role name as this tool writes it: a plain lower-case identifier ([a-z_][a-z0-9_]{0,62}), not
// `public` and not PostgreSQL's reserved pg_ prefix. Empty when acceptable, else the problem.
std::string role_problem(std::string_view role);

// The SQL script: REVOKE ALL on the tables from PUBLIC (and CREATE on schema public), then the
// grants. Errc::invalid_input for a role that role_problem refuses, or one role given twice.
Result<std::string> postgresql_grants(std::string_view broker_role, std::string_view writer_role);

}  // namespace onboard::ops
