#include "core/encoding.h"

#include <catch2/catch.hpp>
#include <string>

namespace onboard {
namespace {

// Bytes whose encodings use every special digit: 0xfb 0xff 0xbf is "+/+/" in base64 and "-_-_" in
// base64url.
const std::string kSpecial("\xfb\xff\xbf", 3);

TEST_CASE("base64 is standard and padded as openssl base64 writes it") {
  CHECK(base64_encode(std::string()).empty());
  CHECK(base64_encode(std::string("A")) == "QQ==");
  CHECK(base64_encode(std::string("AB")) == "QUI=");
  CHECK(base64_encode(std::string("ABC")) == "QUJD");
  CHECK(base64_encode(kSpecial) == "+/+/");
  CHECK(base64url_encode(kSpecial) == "-_-_");
  CHECK(base64url_encode(std::string("A")) == "QQ");  // base64url stays unpadded
}

TEST_CASE("base64 decodes what it encodes for every length and byte") {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    INFO("length " << bytes.size());
    REQUIRE(base64_decode(base64_encode(bytes)) == bytes);
    REQUIRE(base64url_decode(base64url_encode(bytes)) == bytes);
    bytes.push_back(static_cast<char>((i * 37 + 11) & 0xff));
  }
}

TEST_CASE("base64 decoding refuses every other spelling") {
  REQUIRE(base64_decode("QUJD") == std::string("ABC"));  // the control
  REQUIRE(base64_decode("QQ==") == std::string("A"));
  CHECK_FALSE(base64_decode("QQ"));          // padding left out
  CHECK_FALSE(base64_decode("QQ="));         // padding cut short
  CHECK_FALSE(base64_decode("QUI=="));       // padding where none belongs
  CHECK_FALSE(base64_decode("QUJD===="));    // a block of padding
  CHECK_FALSE(base64_decode("Q==="));        // a lone digit
  CHECK_FALSE(base64_decode("QR=="));        // unused low bits set: another spelling of "A"
  CHECK_FALSE(base64_decode("-_-_"));        // the base64url alphabet
  CHECK_FALSE(base64_decode("QUJD\n"));      // a line break
  CHECK_FALSE(base64_decode("QU JD"));       // a space
  CHECK_FALSE(base64_decode("QQ=A"));        // padding inside
  CHECK(base64_decode("+/+/") == kSpecial);  // the standard alphabet's own digits
  CHECK_FALSE(base64url_decode("+/+/"));     // which base64url refuses
}

}  // namespace
}  // namespace onboard
