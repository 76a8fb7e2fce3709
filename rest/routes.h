// The REST API's routes: each a method, a path template as docs/openapi.yaml names it, who may
// call it and its handler (routes.cpp), which maps the request onto ops::.
#pragma once

#include <span>

#include "rest/context.h"
#include "rest/http.h"

namespace onboard::rest {

enum class Need { nobody, reader, operator_role };

using Handler = Reply (*)(Context&, Call&);

struct RouteSpec {
  const char* method;
  const char* path;  // OpenAPI template: {name} is one path segment
  Need need;
  Handler handler;
};

std::span<const RouteSpec> route_table();

}  // namespace onboard::rest
