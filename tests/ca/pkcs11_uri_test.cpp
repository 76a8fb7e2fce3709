// The RFC 7512 URIs that name a CA key in a PKCS#11 token: what is read from them, what is refused
// (a PIN above all), and the canonical form ca.json keeps.
#include <catch2/catch.hpp>

#include "ca/pkcs11.h"

using namespace onboard;
using namespace onboard::ca;

TEST_CASE("A PKCS#11 URI names the token and the key") {
  auto uri = parse_pkcs11_uri("pkcs11:token=My%20CA;object=root;id=%01%ff?module-path=/m.so");
  REQUIRE(uri.ok());
  CHECK(uri->token == "My CA");
  CHECK(uri->object == "root");
  CHECK(uri->id == std::string("\x01\xff", 2));
  CHECK(uri->module_path == "/m.so");
  // The canonical form percent-encodes what is not plain, every byte of the id, and leaves the
  // module out (ca.json keeps it beside the URI); it reads back the same.
  const auto text = format_pkcs11_uri(*uri);
  CHECK(text == "pkcs11:token=My%20CA;object=root;id=%01%FF");
  auto again = parse_pkcs11_uri(text);
  REQUIRE(again.ok());
  CHECK(again->token == uri->token);
  CHECK(again->id == uri->id);
  CHECK(parse_pkcs11_uri("pkcs11:serial=0123;id=%2a;type=private").ok());
}

TEST_CASE("A PKCS#11 URI with a PIN or what it cannot honour is refused") {
  auto pin = parse_pkcs11_uri("pkcs11:token=ca;object=root?pin-value=1234");
  REQUIRE_FALSE(pin.ok());
  CHECK(pin.error().code == Errc::invalid_input);
  CHECK(pin.error().message.find("1234") == std::string::npos);  // the PIN is not echoed
  for (const char* bad :
       {"token=ca;object=root", "pkcs11:object=root", "pkcs11:token=ca",
        "pkcs11:token=ca;object=r%4", "pkcs11:token=ca;object=root;type=public",
        "pkcs11:token=ca;object=root;colour=red", "pkcs11:token=ca;object=root?pin-source=file:/p",
        "pkcs11:token=ca;object"}) {
    INFO(bad);
    auto parsed = parse_pkcs11_uri(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error().code == Errc::invalid_input);
  }
}
