// Where the registry is: one setting names it everywhere (`onboardctl --registry`,
// $ONBOARD_REGISTRY, plugin_opt_registry).
//
//   /abs/path/registry.db            an SQLite file (as before)
//   sqlite:///abs/path/registry.db   the same, as a URL
//   postgresql://host:port/db?...    a PostgreSQL database: any URI libpq accepts (postgres:// too)
//   host=... dbname=... sslmode=...  the same as a libpq keyword string
//
// A password never belongs here: libpq reads it from PGPASSFILE, ~/.pgpass or a service file. A
// location that carries one is refused, and display() never shows one.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace onboard::registry {

enum class Backend { sqlite, postgresql };

struct Location {
  Backend backend = Backend::sqlite;
  // The SQLite file's absolute path, or the libpq connection string exactly as given.
  std::string target;

  // For messages and logs: the path, or the PostgreSQL options rebuilt as a keyword string
  // (host= port= dbname= user= first) without the password, whatever `target` holds.
  std::string display() const;
};

// Errc::invalid_input, naming what is wrong, for: an empty, over-long (4096) or NUL-holding text,
// a relative path, an sqlite:// URL with a host, a query, a fragment or a '%', an unknown scheme, a
// PostgreSQL location with a password in it (URI userinfo, a password= keyword or query parameter,
// percent-encoded or not), or one libpq's PQconninfoParse refuses. No message quotes the text:
// of libpq's message only the keywords the text names are kept.
Result<Location> parse_location(std::string_view text);

}  // namespace onboard::registry
