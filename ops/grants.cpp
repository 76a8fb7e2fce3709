#include "ops/grants.h"

#include <algorithm>

namespace onboard::ops {
namespace {

// Tables as `public.a, public.b`.
template <std::size_t N>
std::string table_list(const std::array<std::string_view, N>& tables) {
  std::string out;
  for (std::string_view table : tables) {
    if (!out.empty()) out += ", ";
    out += "public.";
    out += table;
  }
  return out;
}

// A quoted identifier, so that a role named like a keyword (user) still works. Built by appending:
// GCC 12 warns falsely (-Wrestrict, at -O3) about `"\"" + std::string(name) + "\""`.
std::string quoted(std::string_view identifier) {
  std::string out;
  out.reserve(identifier.size() + 2);
  out += '"';
  out += identifier;
  out += '"';
  return out;
}

}  // namespace

std::string role_problem(std::string_view role) {
  if (role.empty()) return "is empty";
  if (role.size() > 63) return "is longer than 63 characters";
  const bool plain = (role.front() == '_' || (role.front() >= 'a' && role.front() <= 'z')) &&
                     std::all_of(role.begin(), role.end(), [](char c) {
                       return c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                     });
  if (!plain) return "must be a plain lower-case identifier: [a-z_][a-z0-9_]*";
  if (role == "public") return "must not be public (that is every role)";
  if (role.substr(0, 3) == "pg_") return "must not start with pg_ (reserved by PostgreSQL)";
  return {};
}

Result<std::string> postgresql_grants(std::string_view broker_role, std::string_view writer_role) {
  if (auto problem = role_problem(broker_role); !problem.empty())
    return make_error(Errc::invalid_input, "the broker role " + problem);
  if (auto problem = role_problem(writer_role); !problem.empty())
    return make_error(Errc::invalid_input, "the writer role " + problem);
  if (broker_role == writer_role) {
    return make_error(Errc::invalid_input,
                      "the broker and writer roles must differ: the broker only reads");
  }
  // Quoted although plain.
  const std::string broker = quoted(broker_role);
  const std::string writer = quoted(writer_role);
  const std::string all_tables = table_list(kRegistryTables);

  std::string sql;
  sql += "-- mosquitto-onboard registry: the rights of the broker role " + broker +
         " and the writer role " + writer + ".\n";
  sql +=
      "-- Run by the owner of the registry's tables, in its database, once 'onboardctl init' made\n"
      "-- the schema (and again after an upgrade): psql -v ON_ERROR_STOP=1 -d DBNAME -f FILE\n";
  sql += "BEGIN;\n\n";
  sql +=
      "-- Nobody has rights on the tables but their owner and what is granted below; nobody else\n"
      "-- may create objects in schema public.\n";
  sql += "REVOKE ALL ON TABLE " + all_tables + " FROM PUBLIC, " + broker + ", " + writer + ";\n";
  sql += "REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n\n";
  sql += "-- Both roles connect to this database and see schema public.\n";
  sql +=
      "DO $grants$\nBEGIN\n"
      "  EXECUTE format('GRANT CONNECT ON DATABASE %I TO " +
      broker + ", " + writer + "', current_database());\nEND\n$grants$;\n";
  sql += "GRANT USAGE ON SCHEMA public TO " + broker + ", " + writer + ";\n\n";
  sql += "-- The broker reads what it decides from, and nothing else.\n";
  sql += "GRANT SELECT ON TABLE " + table_list(kBrokerTables) + " TO " + broker + ";\n\n";
  sql +=
      "-- The writer reads and writes the rows of every table and draws identity values; it\n"
      "-- cannot change the schema.\n";
  sql += "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE " + all_tables + " TO " + writer + ";\n";
  sql +=
      "DO $grants$\nDECLARE\n  seq text;\nBEGIN\n"
      "  FOREACH seq IN ARRAY ARRAY[pg_get_serial_sequence('public.acl_rules', 'id'),\n"
      "                             pg_get_serial_sequence('public.api_tokens', 'id'),\n"
      "                             pg_get_serial_sequence('public.certificates', 'rowid')] LOOP\n"
      "    IF seq IS NULL THEN\n"
      "      RAISE EXCEPTION 'the registry schema lacks an identity sequence: run onboardctl "
      "init first';\n"
      "    END IF;\n"
      "    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO " +
      writer +
      "', seq);\n"
      "  END LOOP;\nEND\n$grants$;\n\n";
  sql += "COMMIT;\n";
  return sql;
}

}  // namespace onboard::ops
