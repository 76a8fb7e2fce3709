// Catch2 helpers for Result<T>: take the value or fail the test with the error's message, and
// require a particular error.
#pragma once

#include <catch2/catch.hpp>
#include <string>

#include "core/error.h"

namespace onboard::test {

template <class T>
T must(Result<T> result) {
  if (!result.ok()) FAIL(errc_name(result.error().code) << ": " << result.error().message);
  return std::move(result).value();
}

template <class T>
void require_error(const Result<T>& result, Errc code, const std::string& message_part = "") {
  REQUIRE_FALSE(result.ok());
  INFO(result.error().message);
  CHECK(errc_name(result.error().code) == std::string(errc_name(code)));
  if (!message_part.empty()) CHECK(result.error().message.find(message_part) != std::string::npos);
}

}  // namespace onboard::test
