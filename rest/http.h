// The HTTP plumbing of the REST server: replies and their JSON error shape, how Errors map to
// statuses, reading a request's body and fields within bounds. Handlers (routes.cpp) throw
// BadRequest or ErrorReply; handle() in server.cpp turns both into replies.
#pragma once

#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.h"
#include "registry/store.h"

namespace onboard::rest {

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

// Invalid UTF-8 that reached the registry some other way is replaced, never a thrown dump().
std::string dump(const nlohmann::json& value);
Reply json_reply(int status, const nlohmann::json& body);
// {"error": {"code": code, "message": message}}
Reply error_reply(int status, std::string_view code, std::string_view message);

// A client mistake found while reading the request: becomes a 400 with this message.
struct BadRequest {
  std::string message;
};

// One line on stderr, prefixed "onboardctl serve: ".
void log_line(const std::string& line);

// Store and CA errors to HTTP. Messages of the client's own making (invalid input, not found,
// conflict) are safe and useful to show; anything else may name files or SQLite internals, so it
// goes to the log and the client gets a generic sentence.
Reply reply_for(const Error& error);

// ops:: results: an Error becomes the matching reply, thrown to the route's wrapper.
struct ErrorReply {
  Reply reply;
};
template <class T>
T take(Result<T> result) {
  if (!result.ok()) throw ErrorReply{reply_for(result.error())};
  return std::move(result).value();
}

// One request as a handler sees it: authenticated, with a store borrowed for it.
struct Call {
  const httplib::Request& request;
  const std::string& body;  // read by read_body (routes with a body), else empty
  registry::Store& store;
  registry::Actor actor;
  std::string param(std::size_t i) const { return request.matches[i].str(); }
};

bool is_json_content_type(const std::string& value);
// Whether a Content-Type header names `media` (parameters, case and blanks aside).
bool is_content_type(const std::string& value, std::string_view media);

// Whether the headers announce a body: Content-Length other than 0, or any Transfer-Encoding.
bool announces_body(const httplib::Request& request);

// The body as a JSON object. An empty body (none sent, or Content-Length: 0) is {}: on a route
// whose fields are all optional it means "nothing given" (POST /revoke/{id} without a reason);
// elsewhere the first missing required field is named.
nlohmann::json body_object(const Call& call);
// Unknown fields are refused: a misspelt "csr" must not quietly become a server-made key.
void expect_only(const nlohmann::json& body, std::initializer_list<std::string_view> known);
std::optional<std::string> optional_string(const nlohmann::json& body, const char* key);
std::string required_string(const nlohmann::json& body, const char* key);
std::optional<std::int64_t> optional_integer(const nlohmann::json& body, const char* key);
std::int64_t query_integer(const httplib::Request& request, const char* key, std::int64_t fallback,
                           std::int64_t min, std::int64_t max);
std::string query_string(const httplib::Request& request, const char* key);

// A reply whose headers say `Connection: close` ends the connection once it is written: one
// sent before the request's body was read, so that the unread body is never taken for the next
// request. httplib 0.11 would keep the connection open after it; the server's post-routing
// handler sees the header and the connection front (front.h) closes the connection after the
// reply (rest/server.cpp).
void send(httplib::Response& response, Reply reply);
// The same reply, marked to end the connection.
Reply closing(Reply reply);
// Whether the reply is marked to end the connection.
bool reply_closes(const Reply& reply);

// The body of a POST, PATCH or DELETE, read here rather than by httplib. RFC 9112 section 6.3: a
// request with neither Transfer-Encoding nor Content-Length has no body, and that is what
// `curl -X POST URL` sends. httplib 0.11 instead reads such a request until the client closes
// the connection, which a client waiting for its answer never does, and after the read timeout
// answered 400 before any handler ran. A content-reader route is handed the reader and asks it
// for the body only when the request announces one, and only after the request passed every
// check its headers allow (authentication first). A body over `max_bytes` is read to its end and
// refused 413, so a kept-alive connection stays in step; a body that could not be read is refused
// 400 and ends the connection. The Reply is the refusal.
std::variant<std::string, Reply> read_body(const httplib::Request& request,
                                           httplib::Response& response,
                                           const httplib::ContentReader& reader,
                                           std::size_t max_bytes);

}  // namespace onboard::rest
