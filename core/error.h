// Typed errors for the whole project. Library functions return Result<T>; callers must look at it.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace onboard {

enum class Errc {
  invalid_input,   // the caller's input is malformed or not allowed (bad CSR, bad device id, ...)
  not_found,       // a named thing does not exist (CA not initialised, unknown device)
  conflict,        // the thing exists already, or the state forbids the change
  io,              // a file or directory could not be read or written
  bad_passphrase,  // a key could not be decrypted with the passphrase given
  crypto,          // OpenSSL failed where it should not have
  corrupt,         // stored data is damaged or of an unknown version
  internal,        // a bug or an impossible state
};

const char* errc_name(Errc code) noexcept;

struct Error {
  Errc code;
  std::string message;  // one line, safe to show to the operator (no secrets)
};

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

// A value or an Error. [[nodiscard]] so that a failure cannot be dropped silently.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value)
      : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

  const Error& error() const& { return std::get<1>(state_); }
  Error&& error() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, Error> state_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() { return Ok{}; }

}  // namespace onboard

// Propagates an Error out of the enclosing function returning a Result:
//   ONBOARD_TRY(auto key, load_key(path));
#define ONBOARD_CONCAT_INNER(a, b) a##b
#define ONBOARD_CONCAT(a, b) ONBOARD_CONCAT_INNER(a, b)
#define ONBOARD_TRY_IMPL(tmp, decl, expr)       \
  auto tmp = (expr);                            \
  if (!tmp.ok()) return std::move(tmp).error(); \
  decl = std::move(tmp).value()
#define ONBOARD_TRY(decl, expr) ONBOARD_TRY_IMPL(ONBOARD_CONCAT(onboard_try_, __LINE__), decl, expr)
#define ONBOARD_CHECK(expr)                                               \
  do {                                                                    \
    auto onboard_status_ = (expr);                                        \
    if (!onboard_status_.ok()) return std::move(onboard_status_).error(); \
  } while (0)
