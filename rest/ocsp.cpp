#include "rest/ocsp.h"

#include <memory>
#include <mutex>
#include <string>

#include "core/time.h"
#include "core/x509.h"
#include "ops/ocsp.h"

namespace onboard::rest {
namespace {

constexpr UnixTime kRenewRetrySeconds = 60;

// The responder to sign with for `issuer` (position `index` in ops::ocsp_issuers()): the one in
// memory while it has time left, else the one on disk, else a new one (recorded in the registry in
// the write turn). A failed renewal is logged and retried after a minute; meanwhile a responder
// that has not expired is still used, and without one the answer is tryLater.
std::shared_ptr<const ca::OcspResponder> current_responder(Context& ctx, registry::Store& store,
                                                           const ops::OcspIssuer& issuer,
                                                           std::size_t index) {
  const UnixTime now = unix_now();
  std::lock_guard lock(ctx.ocsp.mutex);
  if (ctx.ocsp.by_issuer.size() <= index) ctx.ocsp.by_issuer.resize(index + 1);
  auto& state = ctx.ocsp.by_issuer[index];
  const bool fresh = state.responder && state.not_after - now > ops::kOcspResponderRenewBefore;
  if (fresh || (state.responder && now < state.retry_at)) {
    return state.not_after > now ? state.responder : nullptr;
  }
  if (now < state.retry_at) return nullptr;
  auto use = [&](ca::OcspResponder responder) {
    state.not_after = to_unix_time(X509_get0_notAfter(responder.cert.get())).value_or(0);
    state.responder = std::make_shared<const ca::OcspResponder>(std::move(responder));
    return state.responder;
  };
  auto loaded = ops::load_ocsp_responder(issuer, now);
  if (loaded.ok() && *loaded) return use(std::move(**loaded));
  std::string problem;
  if (loaded.ok()) {
    std::lock_guard turn(ctx.write_turn);
    auto renewed =
        ops::renew_ocsp_responder(store, issuer, registry::Actor{"serve:ocsp", unix_now()});
    if (renewed.ok()) {
      log_line("OCSP responder certificate " + serial_hex(renewed->cert.get()) + " for " +
               subject_common_name(issuer.cert) + " issued");
      return use(std::move(renewed).value());
    }
    problem = renewed.error().message;
  } else {
    problem = loaded.error().message;
  }
  log_line("cannot renew the OCSP responder certificate (will retry): " + problem);
  state.retry_at = now + kRenewRetrySeconds;
  return state.responder && state.not_after > now ? state.responder : nullptr;
}

Reply ocsp_reply(std::string der) {
  // An answer is signed fresh for each request; shared caches must not keep one past a
  // revocation.
  return Reply{200, std::move(der), "application/ocsp-response", {{"Cache-Control", "no-store"}}};
}

Reply answer(Context& ctx, Call& call, std::string_view der) {
  auto request = ca::parse_ocsp_request(der);
  if (!request.ok()) return ocsp_reply(ca::ocsp_error_response(ca::OcspError::malformed_request));
  const auto issuers = ops::ocsp_issuers(ctx.ca);
  const std::size_t index = ops::ocsp_request_issuer(issuers, *request);
  auto responder = current_responder(ctx, call.store, issuers[index], index);
  if (!responder) return ocsp_reply(ca::ocsp_error_response(ca::OcspError::try_later));
  return ocsp_reply(ops::answer_ocsp(call.store, issuers[index], *responder, *request, unix_now()));
}

}  // namespace

Reply post_ocsp(Context& ctx, Call& call) { return answer(ctx, call, call.body); }

Reply get_ocsp(Context& ctx, Call& call) {
  const auto der = ca::decode_ocsp_get_path(call.param(1));
  if (!der) return ocsp_reply(ca::ocsp_error_response(ca::OcspError::malformed_request));
  return answer(ctx, call, *der);
}

}  // namespace onboard::rest
