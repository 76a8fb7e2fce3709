#include "registry/location.h"

#include <catch2/catch.hpp>
#include <string>
#include <string_view>

namespace {

using onboard::Errc;
using onboard::registry::Backend;
using onboard::registry::Location;
using onboard::registry::parse_location;

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

Location accepted(std::string_view text) {
  auto location = parse_location(text);
  INFO("location: " << text);
  REQUIRE(location.ok());
  return location.value();
}

std::string refused(std::string_view text) {
  auto location = parse_location(text);
  INFO("location: " << text);
  REQUIRE_FALSE(location.ok());
  CHECK(location.error().code == Errc::invalid_input);
  return location.error().message;
}

}  // namespace

TEST_CASE("an absolute path is an SQLite registry shown as its path") {
  const auto location = accepted("/var/lib/mosquitto-onboard/registry.db");
  CHECK(location.backend == Backend::sqlite);
  CHECK(location.target == "/var/lib/mosquitto-onboard/registry.db");
  CHECK(location.display() == "/var/lib/mosquitto-onboard/registry.db");
}

TEST_CASE("an sqlite URL with three slashes names the same file") {
  const auto location = accepted("sqlite:///srv/onboard/registry.db");
  CHECK(location.backend == Backend::sqlite);
  CHECK(location.target == "/srv/onboard/registry.db");
  CHECK(location.display() == "/srv/onboard/registry.db");
  CHECK(accepted("SQLite:///srv/r.db").target == "/srv/r.db");
}

TEST_CASE("sqlite URLs with a host or a relative path or a query or a fragment are refused") {
  CHECK(contains(refused("sqlite://dbhost/srv/registry.db"), "no host"));
  CHECK(contains(refused("sqlite://registry.db"), "absolute path"));
  CHECK(contains(refused("sqlite://"), "absolute path"));
  CHECK(contains(refused("sqlite:registry.db"), "sqlite:///ABS/PATH"));
  CHECK(contains(refused("sqlite:/srv/registry.db"), "three slashes"));
  CHECK(contains(refused("sqlite:///srv/registry.db?mode=ro"), "no query or fragment"));
  CHECK(contains(refused("sqlite:///srv/registry.db#x"), "no query or fragment"));
  CHECK(contains(refused("sqlite:///srv/my%20registry.db"), "not percent-decoded"));
}

TEST_CASE("relative paths and empty or unknown locations are refused naming the accepted forms") {
  CHECK(contains(refused("registry.db"), "relative path"));
  CHECK(contains(refused("./data/registry.db"), "relative path"));
  CHECK(contains(refused("~/registry.db"), "relative path"));
  CHECK(contains(refused(""), "empty"));
  const auto unknown = refused("mysql://db.example/registry");
  CHECK(contains(unknown, "unknown registry location scheme 'mysql'"));
  CHECK(contains(unknown, "postgresql://"));
  CHECK(contains(refused(std::string("/srv/reg\0istry.db", 17)), "NUL"));
  CHECK(contains(refused("/" + std::string(5000, 'a')), "longer than"));
}

TEST_CASE("postgresql and postgres URIs are PostgreSQL registries kept as given") {
  const auto uri = accepted("postgresql://onboard@db.example:5433/registry?sslmode=verify-full");
  CHECK(uri.backend == Backend::postgresql);
  CHECK(uri.target == "postgresql://onboard@db.example:5433/registry?sslmode=verify-full");
  CHECK(uri.display() ==
        "host=db.example port=5433 dbname=registry user=onboard "
        "sslmode=verify-full");

  const auto short_scheme = accepted("postgres://db.example/registry");
  CHECK(short_scheme.backend == Backend::postgresql);
  CHECK(short_scheme.display() == "host=db.example dbname=registry");

  // An empty password ("user:@") is no password.
  CHECK(accepted("postgresql://onboard:@localhost/registry").display() ==
        "host=localhost dbname=registry user=onboard");
  CHECK(accepted("postgresql://").display() == "(PostgreSQL, libpq's defaults)");
}

TEST_CASE("a libpq keyword string is a PostgreSQL registry shown without quoting trouble") {
  const auto location = accepted("dbname=registry host=/run/postgresql user=broker");
  CHECK(location.backend == Backend::postgresql);
  CHECK(location.target == "dbname=registry host=/run/postgresql user=broker");
  CHECK(location.display() == "host=/run/postgresql dbname=registry user=broker");

  CHECK(accepted("service=onboard").display() == "service=onboard");
  CHECK(accepted("host = h  application_name='onboard ctl'").display() ==
        "host=h application_name='onboard ctl'");
}

TEST_CASE("libpq's parse errors are reported for PostgreSQL strings without a password") {
  CHECK(contains(refused("host=db.example colour=blue"),
                 "libpq cannot parse the PostgreSQL connection string: invalid connection option "
                 "\"colour\""));
  CHECK(contains(refused("postgresql://db.example/registry?sslmode"), "separator"));
  // A word that is not written as a keyword may be a secret: libpq's quote of it is hidden.
  CHECK(refused("host=db.example hunter2") ==
        "libpq cannot parse the PostgreSQL connection string: missing \"=\" after \"...\" in "
        "connection info string");
  CHECK(contains(refused("postgresql://[::1/registry"), "\"...\""));
  CHECK(contains(refused("postgresql://db.example/registry?sslmode%3"),
                 "libpq cannot parse the PostgreSQL connection string (its message is not shown"));
  CHECK(contains(refused("host='db.example"), "unterminated quoted string"));
  CHECK(contains(refused("postgresql://db.example/registry?nonsense=1"), "nonsense"));
}

TEST_CASE("a password in a PostgreSQL location is refused naming where it belongs") {
  for (std::string_view text : {
           "postgresql://onboard:secret@db.example/registry",
           "postgres://onboard:secret@db.example/registry",
           "postgresql://db.example/registry?password=secret",
           "postgresql://db.example/registry?pass%77ord=secret",
           "host=db.example dbname=registry password=secret",
           "password = secret host=db.example",
           "host=db.example password='secret'",
       }) {
    const auto message = refused(text);
    CHECK(contains(message, "must not contain a password"));
    CHECK(contains(message, "PGPASSFILE"));
    CHECK(contains(message, ".pgpass"));
    CHECK(contains(message, "service file"));
  }
  // The positive control: the same locations without the password are accepted.
  CHECK(accepted("postgresql://onboard@db.example/registry").backend == Backend::postgresql);
  CHECK(accepted("host=db.example dbname=registry").backend == Backend::postgresql);
  CHECK(accepted("host=db.example dbname=password_db").backend == Backend::postgresql);
}

TEST_CASE("no message or display ever shows a password even from a malformed location") {
  // Each holds "secret" where libpq would take it for a password, or where a message quoting
  // the text would show it. Some are malformed in ways whose libpq message quotes the text.
  for (std::string_view text : {
           "postgresql://u:secret@h/db",
           "postgresql://u:secret@[::1/db",
           "postgresql://u:secret@h:port/db",
           "postgresql://u:secret@h/db?colour=blue",
           "postgresql://[::1/db?password=secret",
           "postgresql://[::1/db?pass%77ord=secret",
           "postgresql://h:p%6Frt/db?pass%77ord=secret",
           "postgresql://h/db?pass%77ord=secret&x",
           "password=secret",
           "host=h password=secret colour=blue",
           "host=h password='secret",
           "host='h password=secret",
           "host=h password",
           "host=h secret",
           "host=h secret dbname=x",
           "postgresql://h/db?secret",
           "postgresql://h/db?secret&",
           "postgresql://[::1/secret",
           "u:secret@h/db",
           "postgresql:/u:secret@h/db",
           "mysql://u:secret@h/db",
           "sqlite://u:secret@h/db",
           "sqlite:///srv/r.db?password=secret",
       }) {
    INFO("location: " << text);
    auto location = parse_location(text);
    REQUIRE_FALSE(location.ok());
    CHECK_FALSE(contains(location.error().message, "secret"));
  }
  // A Location built by hand, never parsed: display() still hides the password.
  for (std::string_view target : {"postgresql://u:secret@h/db", "host=h password=secret",
                                  "host=h password='secret", "postgresql://u:secret@[::1/db"}) {
    INFO("target: " << target);
    const Location location{Backend::postgresql, std::string(target)};
    CHECK_FALSE(contains(location.display(), "secret"));
  }
  CHECK(Location{Backend::postgresql, "postgresql://u:secret@h/db"}.display() ==
        "host=h dbname=db user=u");
}
