#include "rest/http.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iostream>

namespace onboard::rest {

using nlohmann::json;

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

Reply json_reply(int status, const json& body) {
  return Reply{status, dump(body) + "\n", "application/json", {}};
}

Reply error_reply(int status, std::string_view code, std::string_view message) {
  return json_reply(status, json{{"error", {{"code", code}, {"message", message}}}});
}

void log_line(const std::string& line) {
  // One write per line, so lines from worker threads do not interleave.
  std::string out = "onboardctl serve: " + line + "\n";
  std::cerr << out << std::flush;
}

Reply reply_for(const Error& error) {
  switch (error.code) {
    case Errc::invalid_input:
      return error_reply(400, "invalid_input", error.message);
    case Errc::not_found:
      return error_reply(404, "not_found", error.message);
    case Errc::conflict:
      return error_reply(409, "conflict", error.message);
    case Errc::io: {
      log_line("unavailable: " + error.message);
      Reply reply = error_reply(503, "unavailable", "the registry is busy or unavailable; retry");
      reply.headers.emplace_back("Retry-After", "1");
      return reply;
    }
    case Errc::bad_passphrase:
    case Errc::crypto:
    case Errc::corrupt:
    case Errc::internal:
      break;
  }
  log_line(std::string("internal error (") + errc_name(error.code) + "): " + error.message);
  return error_reply(500, "internal", "internal error; the server log has the details");
}

bool is_json_content_type(const std::string& value) {
  return is_content_type(value, "application/json");
}

bool is_content_type(const std::string& value, std::string_view wanted) {
  std::string media = value.substr(0, value.find(';'));
  media.erase(
      std::remove_if(media.begin(), media.end(), [](unsigned char c) { return std::isspace(c); }),
      media.end());
  std::transform(media.begin(), media.end(), media.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return media == wanted;
}

json body_object(const Call& call) {
  if (call.body.empty()) return json::object();
  json body = json::parse(call.body, nullptr, false);
  if (body.is_discarded()) throw BadRequest{"the body is not valid JSON"};
  if (!body.is_object()) throw BadRequest{"the body must be a JSON object"};
  return body;
}

void expect_only(const json& body, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : body.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end())
      throw BadRequest{"unknown field '" + key + "'"};
  }
}

std::optional<std::string> optional_string(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw BadRequest{std::string(key) + " must be a string"};
  return it->get<std::string>();
}

std::string required_string(const json& body, const char* key) {
  auto value = optional_string(body, key);
  if (!value) throw BadRequest{std::string(key) + " is required"};
  return *value;
}

std::optional<std::int64_t> optional_integer(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) throw BadRequest{std::string(key) + " must be a whole number"};
  return it->get<std::int64_t>();
}

std::int64_t query_integer(const httplib::Request& request, const char* key, std::int64_t fallback,
                           std::int64_t min, std::int64_t max) {
  if (!request.has_param(key)) return fallback;
  const std::string text = request.get_param_value(key);
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    throw BadRequest{std::string(key) + " must be a whole number from " + std::to_string(min) +
                     " to " + std::to_string(max)};
  }
  return value;
}

std::string query_string(const httplib::Request& request, const char* key) {
  return request.has_param(key) ? request.get_param_value(key) : std::string();
}

bool announces_body(const httplib::Request& request) {
  if (request.has_header("Transfer-Encoding")) return true;
  // Anything but digits that are all zero announces one: an unreadable length is not "none".
  const std::string length = request.get_header_value("Content-Length");
  return length.find_first_not_of('0') != std::string::npos;
}

Reply closing(Reply reply) {
  reply.headers.emplace_back("Connection", "close");
  return reply;
}

bool reply_closes(const Reply& reply) {
  return std::any_of(reply.headers.begin(), reply.headers.end(), [](const auto& header) {
    return header.first == "Connection" && header.second == "close";
  });
}

void send(httplib::Response& response, Reply reply) {
  response.status = reply.status;
  for (auto& [name, value] : reply.headers) response.set_header(name, value);
  if (reply.status == 204) return;
  response.set_content(std::move(reply.body), reply.content_type);
}

std::variant<std::string, Reply> read_body(const httplib::Request& request,
                                           httplib::Response& response,
                                           const httplib::ContentReader& reader,
                                           std::size_t max_bytes) {
  std::string body;
  if (!request.has_header("Content-Length") && !request.has_header("Transfer-Encoding"))
    return body;
  // httplib 0.11 reads no DELETE body without a Content-Length: a chunked one would stay on the
  // connection and be taken for the next request.
  if (request.method == "DELETE" && !request.has_header("Content-Length"))
    return closing(error_reply(400, "bad_request", "send a DELETE body with Content-Length"));
  // httplib refuses a Content-Length over the limit (and skips the body); this bounds a chunked
  // body, whose rest is read and dropped like that skipped one.
  bool too_large = false;
  auto append = [&](const char* data, std::size_t size) {
    too_large = too_large || body.size() + size > max_bytes;
    if (!too_large) body.append(data, size);
    return true;
  };
  // Never multipart: handle() refused any body that is not JSON before asking for it.
  const bool read = reader(append);
  if (too_large || response.status == 413)
    return error_reply(413, "payload_too_large", "the request body is too large");
  if (!read) return closing(error_reply(400, "bad_request", "the request body could not be read"));
  return body;
}

}  // namespace onboard::rest
