// The REST API's routes: each a method, a path template as docs/openapi.yaml names it, who may
// call it and its handler (routes.cpp), which maps the request onto ops::.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "rest/context.h"
#include "rest/http.h"

namespace onboard::rest {

// provisioner: the broker's plugin handing over devices' enrolment requests, authenticated by the
// secret of `serve --provision-token-file` (no registry token can call it, nor it anything else).
enum class Need { nobody, reader, operator_role, provisioner };

using Handler = Reply (*)(Context&, Call&);

struct RouteSpec {
  const char* method;
  const char* path;  // OpenAPI template: {name} is one path segment
  Need need;
  Handler handler;
  const char* body_type = "application/json";  // the media type a body must have
  // The last {name} takes the rest of the path, '/' included: base64 in GET /ocsp/{request}.
  bool tail = false;
};

std::span<const RouteSpec> route_table();

// The regex a route's path template matches with: "/v1/devices/{id}/acl" ->
// "/v1/devices/([^/]+)/acl" (a parameter is one segment, captured in order); the rest literal.
// With `tail`, the last parameter matches the rest of the path ("(.+)").
std::string path_regex(std::string_view path, bool tail = false);

// Runs the route's handler: a BadRequest becomes a 400 and an ErrorReply its reply. Any other
// exception is a bug and propagates to the caller (the server answers it with a 500).
Reply call_handler(Context& ctx, const RouteSpec& route, Call& call);

}  // namespace onboard::rest
