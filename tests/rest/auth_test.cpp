// The one reading of `Authorization: Bearer <token>` (rest/auth.h): API tokens and the
// provisioning secret both go through it.
#include "rest/auth.h"

#include <catch2/catch.hpp>

using onboard::rest::bearer_token;

TEST_CASE("a bearer header gives its token whatever the scheme's case") {
  CHECK(bearer_token("Bearer abc.def") == std::optional<std::string_view>("abc.def"));
  CHECK(bearer_token("bearer abc") == std::optional<std::string_view>("abc"));
  CHECK(bearer_token("BEARER abc") == std::optional<std::string_view>("abc"));
  // The token is taken as sent: a space inside it stays (and no token matches it).
  CHECK(bearer_token("Bearer a b") == std::optional<std::string_view>("a b"));
}

TEST_CASE("no header another scheme or no token is no bearer token") {
  CHECK_FALSE(bearer_token("").has_value());
  CHECK_FALSE(bearer_token("Bearer").has_value());
  CHECK_FALSE(bearer_token("Bearer ").has_value());
  CHECK_FALSE(bearer_token("Basic b3BzOm9wcw==").has_value());
  CHECK_FALSE(bearer_token("Bearerabc").has_value());
  CHECK_FALSE(bearer_token(" Bearer abc").has_value());
  CHECK_FALSE(bearer_token("Bearer\tabc").has_value());
}
