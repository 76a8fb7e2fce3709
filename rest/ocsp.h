// The OCSP routes (RFC 6960 appendix A): POST /ocsp with a DER request, GET /ocsp/{base64}. Public
// like /crl. Every reply is an OCSPResponse with HTTP 200, a malformed request included
// (malformedRequest), as OCSP clients expect; ops/ocsp.h answers.
#pragma once

#include "rest/context.h"
#include "rest/http.h"

namespace onboard::rest {

Reply post_ocsp(Context& ctx, Call& call);
Reply get_ocsp(Context& ctx, Call& call);

}  // namespace onboard::rest
