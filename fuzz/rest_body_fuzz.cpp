// rest/routes.h: the JSON bodies of the REST API's POST, PATCH and DELETE routes, handed to the
// handlers as rest/server.cpp's handle() does after authentication (an operator), on a registry
// and P-256 CA made once in a temporary directory. The first byte chooses the route (low four
// bits) and whether its path names the registered device, group and rule or unknown ones (bit
// 4); the rest is the body. Invariants: never a 5xx reply (an internal error on bad input is a
// bug) nor an exception escaping rest::call_handler (a 500); every reply is JSON
// (204: empty); a 4xx reply has the error shape {"error": {"code", "message"}} (a refused batch
// may add "problems", a list of strings); and the audit log verifies afterwards (after each of
// the first 256 inputs, then every 128th: the check reads the whole log).
#include <httplib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "bundle/link_token.h"
#include "ca/authority.h"
#include "core/time.h"
#include "fuzz/fuzz_scratch.h"
#include "ops/operations.h"
#include "ops/workspace.h"
#include "registry/open.h"
#include "rest/context.h"
#include "rest/http.h"
#include "rest/routes.h"

namespace {

using namespace onboard;
using nlohmann::json;

constexpr const char* kKnownDevice = "fuzz-known";
constexpr const char* kUnknownDevice = "fuzz-unknown";
constexpr const char* kKnownGroup = "fuzz-group";
constexpr const char* kUnknownGroup = "fuzz-nogroup";
constexpr const char* kUnknownRule = "999999";

using fuzz::fail;
using fuzz::need;

struct Fixture {
  rest::Context* ctx = nullptr;
  std::vector<const rest::RouteSpec*> routes;  // the body-taking ones
  std::string known_rule;                      // a rule of the known device, made at start
};

// "/v1/devices/{id}/acl/{rule_id}" -> the path with the parameters filled in.
std::string fill_path(std::string_view templ, bool known, const std::string& known_rule) {
  std::string path;
  for (std::size_t i = 0; i < templ.size(); ++i) {
    if (templ[i] != '{') {
      path += templ[i];
      continue;
    }
    const std::size_t end = templ.find('}', i);
    const std::string_view name = templ.substr(i + 1, end - i - 1);
    if (name == "rule_id")
      path += known ? known_rule : kUnknownRule;
    else if (templ.starts_with("/v1/groups/"))
      path += known ? kKnownGroup : kUnknownGroup;
    else
      path += known ? kKnownDevice : kUnknownDevice;
    i = end;
  }
  return path;
}

// What handle() does around a handler once the caller is authenticated as an operator and the
// body is JSON: the path matched as the router matches it, a store from the pool, and
// call_handler. An exception that escapes call_handler would be handle()'s 500: a bug here.
rest::Reply call_route(rest::Context& ctx, const rest::RouteSpec& route, bool known,
                       const std::string& known_rule, const std::string& body) {
  httplib::Request request;
  request.method = route.method;
  request.path = fill_path(route.path, known, known_rule);
  request.set_header("Content-Type", "application/json");
  if (!std::regex_match(request.path, request.matches, std::regex(rest::path_regex(route.path))))
    fail(std::string("path does not match its route: ") + request.path);
  auto lease = ctx.stores.borrow();
  if (!lease.ok()) return rest::reply_for(lease.error());
  rest::Call call{request, body, **lease, registry::Actor{"rest:fuzz-operator", unix_now()}};
  try {
    return rest::call_handler(ctx, route, call);
  } catch (const std::exception& e) {
    fail(std::string(route.method) + " " + request.path + ": exception: " + e.what());
  } catch (...) {
    fail(std::string(route.method) + " " + request.path + ": unknown exception");
  }
}

Fixture make_fixture() {
  const ops::Workspace workspace(fuzz::scratch_directory() / "data");
  std::filesystem::create_directories(workspace.dir);
  ca::CaInitOptions options;
  options.root_key_alg = ca::KeyAlg::p256;
  (void)need(ca::Authority::create(workspace.dir, options, unix_now()), "CA");
  auto authority = need(ca::Authority::open(workspace.dir), "open CA");
  if (auto loaded = authority.load_signing_key(nullptr); !loaded.ok())
    fail("CA key: " + loaded.error().message);
  {
    auto store =
        need(registry::open_store(workspace.registry_location, registry::OpenMode::read_write),
             "registry");
    (void)need(ops::write_crl(*store, authority, workspace.crl), "CRL");
  }
  Secret link_secret = need(bundle::load_or_create_link_secret(workspace.dir), "link secret");

  Fixture f;
  f.ctx = new rest::Context{workspace,
                            std::move(authority),
                            Secret(std::string_view("kettle-orbit-7Qz-harbor-lantern")),
                            std::move(link_secret),
                            rest::StorePool(workspace),
                            {}};
  // The JSON routes only: POST /ocsp takes DER (the ocsp_request target fuzzes its parser).
  for (const auto& route : rest::route_table())
    if (std::string_view(route.method) != "GET" &&
        std::string_view(route.body_type) == "application/json")
      f.routes.push_back(&route);

  // The known device (its key held by the server), group and rule, through the handlers.
  auto setup = [&](std::string_view method, std::string_view path, const json& body) {
    for (const auto& route : rest::route_table()) {
      if (route.method != method || route.path != path) continue;
      auto reply = call_route(*f.ctx, route, true, "1", body.dump());
      if (reply.status != 201) fail(std::string(path) + " at start: " + reply.body);
      return json::parse(reply.body);
    }
    fail(std::string("no route ") + std::string(path));
  };
  setup("POST", "/v1/devices", json{{"id", kKnownDevice}, {"name", "Known device"}});
  auto rule =
      setup("POST", "/v1/devices/{id}/acl", json{{"access", "publish"}, {"topic", "fuzz/known/#"}});
  f.known_rule = std::to_string(rule["id"].get<std::int64_t>());
  {
    auto lease = need(f.ctx->stores.borrow(), "store");
    (void)need(ops::create_group(*lease, kKnownGroup, "", registry::Actor{"fuzz", unix_now()}),
               "group");
  }
  return f;
}

void check_reply(const rest::Reply& reply, const std::string& what) {
  if (reply.status >= 500 || reply.status < 200)
    fail(what + ": status " + std::to_string(reply.status) + ": " + reply.body);
  if (reply.content_type != "application/json") fail(what + ": content type " + reply.content_type);
  if (reply.status == 204) {
    if (!reply.body.empty()) fail(what + ": a body with 204");
    return;
  }
  const json body = json::parse(reply.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) fail(what + ": not a JSON object: " + reply.body);
  if (reply.status < 400) return;
  const auto error = body.find("error");
  if (error == body.end() || !error->is_object() || error->size() != 2)
    fail(what + ": no error object: " + reply.body);
  const auto code = error->find("code"), message = error->find("message");
  if (code == error->end() || !code->is_string() || code->get_ref<const std::string&>().empty() ||
      message == error->end() || !message->is_string() ||
      message->get_ref<const std::string&>().empty())
    fail(what + ": error without code and message: " + reply.body);
  for (const auto& [key, value] : body.items()) {
    if (key == "error") continue;
    if (key != "problems" || !value.is_array() || value.empty())
      fail(what + ": extra field " + key);
    for (const auto& problem : value)
      if (!problem.is_string()) fail(what + ": a problem that is not a string");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture fixture = make_fixture();
  static std::uint64_t inputs = 0;
  if (size == 0) return 0;
  const auto& route = *fixture.routes[(data[0] & 0x0f) % fixture.routes.size()];
  const bool known = (data[0] & 0x10) == 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto reply = call_route(*fixture.ctx, route, known, fixture.known_rule, body);
  check_reply(reply, std::string(route.method) + " " + route.path);
  ++inputs;
  if (inputs <= 256 || inputs % 128 == 0) {
    auto lease = need(fixture.ctx->stores.borrow(), "store");
    auto audit = need((*lease).verify_audit(), "audit verify");
    if (!audit.ok()) fail("audit verify: " + audit.problem);
  }
  return 0;
}
