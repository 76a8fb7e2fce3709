#include "rest/routes.h"

#include <openssl/rand.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "bundle/link_token.h"
#include "bundle/package.h"
#include "ca/crl.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/identity.h"
#include "core/x509.h"
#include "ops/batches.h"
#include "ops/bundles.h"
#include "ops/claims.h"
#include "ops/duration.h"
#include "ops/operations.h"
#include "ops/provisioning.h"
#include "ops/views.h"
#include "registry/device_store.h"
#include "registry/id_pattern.h"
#include "rest/ocsp.h"

namespace onboard::rest {
namespace {

using nlohmann::json;

// ---- JSON shapes -----------------------------------------------------------------------------

json issued_json(const ops::Issuance& issuance) {
  const auto& info = issuance.certificate.info;
  return json{{"serial", info.serial_hex},
              {"sha256_fingerprint", info.sha256_fingerprint},
              {"issuer", info.issuer},
              {"subject", info.subject},
              {"not_before", iso_time(info.not_before)},
              {"not_after", iso_time(info.not_after)},
              {"key", info.key},
              {"pem", issuance.certificate.pem}};
}

// Where the device's private key is: never in a response.
const char* key_custody(const ops::Issuance& issuance) {
  return issuance.key_held ? "held_by_server_encrypted" : "held_by_device";
}

json details_json(const ops::DeviceDetails& details) {
  json out = ops::device_json(details.device);
  out["certificates"] = json::array();
  for (const auto& c : details.certificates)
    out["certificates"].push_back(ops::certificate_json(c, true));
  out["rules"] = json::array();
  for (const auto& r : details.effective_rules) out["rules"].push_back(ops::rule_json(r));
  out["server_key_copy"] = ops::held_key_json(details.held_key);
  return out;
}

// ---- metadata --------------------------------------------------------------------------------

// The "metadata" object of a request as the text the registry checks and stores. Its depth is
// checked first: a body within the size limit (256 KiB by default) can nest about 120,000 arrays,
// and dump() overflowed the worker's stack on them before the registry's own check could refuse
// it (ops::nested_deeper_than).
std::string metadata_text(const json& metadata) {
  if (!metadata.is_object()) throw BadRequest{"metadata must be a JSON object"};
  if (ops::nested_deeper_than(metadata, registry::kMaxMetadataDepth))
    throw BadRequest{"metadata is nested more than " + std::to_string(registry::kMaxMetadataDepth) +
                     " levels deep"};
  return dump(metadata);
}

// ---- key plans -------------------------------------------------------------------------------

// csr present: the device keeps its key. Otherwise the server makes one and must hold it, which it
// can only do with a hold passphrase.
ops::KeyPlan key_plan(Context& ctx, const json& body) {
  ops::KeyPlan plan;
  if (auto days = optional_integer(body, "days")) {
    if (*days < 1 || *days > 3650) throw BadRequest{"days must be 1 to 3650"};
    plan.days = static_cast<int>(*days);
  }
  auto csr = optional_string(body, "csr");
  auto key_alg = optional_string(body, "key_alg");
  if (csr) {
    if (key_alg) throw BadRequest{"key_alg is for a key made by the server; a csr brings its own"};
    plan.csr_pem = *csr;
    return plan;
  }
  if (!ctx.hold_passphrase) {
    throw ErrorReply{error_reply(
        409, "cannot_hold_keys",
        "this server cannot hold device keys (it was started without --hold-passphrase-env or "
        "--hold-passphrase-file); send a csr so the device keeps its own key")};
  }
  plan.hold_passphrase = &*ctx.hold_passphrase;
  if (key_alg) {
    auto alg = ca::parse_key_alg(*key_alg);
    if (!alg) throw BadRequest{"key_alg must be one of " + std::string(ca::kKeyAlgNames)};
    plan.key_alg = *alg;
  }
  return plan;
}

// The id rule of POST /register and POST /v1/devices: "id" if given (it must be valid); else
// "name" when it is itself a valid device id; else a generated "dev-" + 16 hex digits.
std::string choose_device_id(const std::optional<std::string>& id,
                             const std::optional<std::string>& name) {
  if (id) {
    if (auto problem = device_id_problem(*id)) throw BadRequest{"id: " + *problem};
    return *id;
  }
  if (name && is_valid_device_id(*name)) return *name;
  unsigned char random[8];
  if (RAND_bytes(random, sizeof random) != 1)
    throw ErrorReply{reply_for(make_error(Errc::crypto, "RAND_bytes failed"))};
  return "dev-" + hex_encode(random);
}

// ---- handlers --------------------------------------------------------------------------------

Reply register_device(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body,
              {"id", "name", "type", "location", "firmware", "metadata", "csr", "key_alg", "days"});
  registry::NewDevice device;
  auto name = optional_string(body, "name");
  device.id = choose_device_id(optional_string(body, "id"), name);
  device.name = name.value_or("");
  device.type = optional_string(body, "type").value_or("");
  device.location = optional_string(body, "location").value_or("");
  device.firmware = optional_string(body, "firmware").value_or("");
  if (auto it = body.find("metadata"); it != body.end() && !it->is_null()) {
    device.metadata = metadata_text(*it);
  }
  ops::RegisterRequest request{std::move(device), key_plan(ctx, body), {}, 0};
  std::unique_lock turn(ctx.write_turn, std::defer_lock);
  auto registered = take(
      ops::register_device(call.store, ctx.ca, request, call.actor, [&turn](const ops::Issuance&) {
        turn.lock();  // issued: now the store write
        return ok_status();
      }));
  json out = ops::device_json(registered.device);
  out["certificate"] = issued_json(registered.issuance);
  out["key"] = key_custody(registered.issuance);
  Reply reply = json_reply(201, out);
  reply.headers.emplace_back("Location", "/v1/devices/" + registered.device.id);
  return reply;
}

Reply get_device(Context&, Call& call) {
  return json_reply(200, details_json(take(ops::device_details(call.store, call.param(1)))));
}

Reply revoke_device(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"reason"});
  auto reason_name = optional_string(body, "reason").value_or("unspecified");
  auto reason = parse_revocation_reason(reason_name);
  if (!reason) throw BadRequest{"reason must be one of " + std::string(kRevocationReasonNames)};
  const std::string id = call.param(1);
  std::lock_guard turn(ctx.write_turn);
  auto revoked =
      take(ops::revoke_device(call.store, ctx.ca, ctx.workspace.crl, id, *reason, call.actor));
  return json_reply(
      200, json{{"id", id},
                {"status", "revoked"},
                {"already_revoked", revoked.outcome.already_revoked},
                {"revoked_serials", revoked.outcome.revoked_serials},
                {"crl_number", revoked.crl_number ? json(*revoked.crl_number) : json(nullptr)}});
}

Reply list_devices(Context&, Call& call) {
  const auto& r = call.request;
  const auto limit = query_integer(r, "limit", 100, 1, 1000);
  auto filter = take(ops::device_filter(query_string(r, "status"), query_string(r, "type"),
                                        static_cast<std::size_t>(limit), query_string(r, "after")));
  const UnixTime now = unix_now();
  (void)take(ops::filter_expiring(filter, query_string(r, "expiring"), "expiring", now));
  auto page = take(ops::list_devices(call.store, filter));
  json devices = json::array();
  for (const auto& d : page.devices) devices.push_back(ops::listed_device_json(d, now));
  return json_reply(200,
                    json{{"devices", std::move(devices)},
                         {"next_after", page.next_after ? json(*page.next_after) : json(nullptr)}});
}

// PATCH /v1/devices/{id}: either "status" (enable or disable) or the descriptive fields, each
// its own audited change. Both in one request are refused: half of it could succeed.
Reply patch_device(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"status", "name", "type", "location", "firmware", "metadata"});
  const std::string id = call.param(1);
  if (body.contains("status")) {
    if (body.size() > 1)
      throw BadRequest{"status cannot be changed together with other fields; send two requests"};
    const std::string status = required_string(body, "status");
    if (status != "active" && status != "disabled") {
      throw BadRequest{status == "revoked" ? "status: revoke with POST /v1/devices/{id}/revoke"
                                           : "status must be active or disabled"};
    }
    {
      std::lock_guard turn(ctx.write_turn);
      (void)take(ops::set_device_enabled(call.store, id, status == "active", call.actor));
    }
    return json_reply(200, ops::device_json(take(ops::get_device(call.store, id))));
  }
  registry::DeviceUpdate update;
  update.name = optional_string(body, "name");
  update.type = optional_string(body, "type");
  update.location = optional_string(body, "location");
  update.firmware = optional_string(body, "firmware");
  if (auto it = body.find("metadata"); it != body.end() && !it->is_null()) {
    update.metadata = metadata_text(*it);
  }
  if (update.empty()) {
    throw BadRequest{
        "nothing to update: send status, or at least one of name, type, location, firmware, "
        "metadata"};
  }
  std::lock_guard turn(ctx.write_turn);
  return json_reply(200,
                    ops::device_json(take(ops::update_device(call.store, id, update, call.actor))));
}

Reply list_certificates(Context&, Call& call) {
  json out = json::array();
  for (const auto& c : take(ops::list_certificates(call.store, call.param(1))))
    out.push_back(ops::certificate_json(c, true));
  return json_reply(200, json{{"certificates", std::move(out)}});
}

Reply renew_certificate(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"csr", "key_alg", "days"});
  const std::string id = call.param(1);
  // Unknown or revoked devices are answered before a key is made.
  auto device = take(ops::get_device(call.store, id));
  if (device.status == registry::DeviceStatus::revoked)
    throw ErrorReply{reply_for(make_error(Errc::conflict, "device " + id + " is revoked"))};
  ops::KeyPlan plan = key_plan(ctx, body);
  std::unique_lock turn(ctx.write_turn, std::defer_lock);
  auto renewed = take(ops::renew_certificate(call.store, ctx.ca, ctx.workspace.crl, id, plan,
                                             call.actor, [&turn](const ops::Issuance&) {
                                               turn.lock();  // the store write and the CRL
                                               return ok_status();
                                             }));
  json out{{"device_id", id},
           {"certificate", issued_json(renewed.issuance)},
           {"key", key_custody(renewed.issuance)},
           {"superseded_serials", renewed.added.superseded_serials},
           {"crl_number", renewed.crl_error ? json(nullptr) : json(renewed.crl_number)}};
  if (renewed.crl_error) {
    log_line("renewed " + id + " but the CRL was not rewritten: " + renewed.crl_error->message);
    out["warning"] = "the CRL was not rewritten; an operator must run 'onboardctl crl'";
  }
  return json_reply(201, out);
}

registry::SubjectKind subject_kind_of(const Call& call) {
  return call.request.path.starts_with("/v1/groups/") ? registry::SubjectKind::group
                                                      : registry::SubjectKind::device;
}

Reply list_rules(Context&, Call& call) {
  json out = json::array();
  for (const auto& r : take(ops::list_rules(call.store, subject_kind_of(call), call.param(1))))
    out.push_back(ops::rule_json(r));
  return json_reply(200, json{{"rules", std::move(out)}});
}

Reply add_rule(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"effect", "access", "topic", "priority"});
  ops::RuleRequest rule;
  rule.subject_kind = subject_kind_of(call);
  rule.subject = call.param(1);
  const std::string effect = optional_string(body, "effect").value_or("allow");
  if (effect != "allow" && effect != "deny") throw BadRequest{"effect must be allow or deny"};
  rule.effect = effect == "allow" ? registry::RuleEffect::allow : registry::RuleEffect::deny;
  rule.access = required_string(body, "access");
  rule.topic = required_string(body, "topic");
  const auto priority = optional_integer(body, "priority").value_or(0);
  if (priority < -ops::kMaxRulePriority || priority > ops::kMaxRulePriority)
    throw BadRequest{"priority must be within ±1000000"};
  rule.priority = static_cast<int>(priority);
  std::unique_lock turn(ctx.write_turn);
  auto record = take(ops::add_rule(call.store, rule, call.actor));
  turn.unlock();
  Reply reply = json_reply(201, ops::rule_json(record));
  reply.headers.emplace_back("Location", call.request.path + "/" + std::to_string(record.id));
  return reply;
}

Reply delete_rule(Context& ctx, Call& call) {
  const auto rule_id = take(ops::parse_rule_id(call.param(2)));
  std::lock_guard turn(ctx.write_turn);
  (void)take(
      ops::remove_rule_of(call.store, subject_kind_of(call), call.param(1), rule_id, call.actor));
  return Reply{204, "", "application/json", {}};
}

Reply check_access(Context&, Call& call) {
  const auto& r = call.request;
  for (const char* key : {"device", "access", "topic"})
    if (!r.has_param(key)) throw BadRequest{std::string(key) + " is required"};
  auto explained =
      take(ops::explain_access(call.store, r.get_param_value("device"), r.get_param_value("access"),
                               r.get_param_value("topic")));
  json out{{"device", explained.device},
           {"access", explained.access},
           {"topic", explained.topic},
           {"decision", explained.allowed ? "allow" : "deny"},
           {"reason", explained.reason},
           {"rule_id", explained.rule_id ? json(*explained.rule_id) : json(nullptr)}};
  return json_reply(200, out);
}

Reply list_audit(Context&, Call& call) {
  const auto& r = call.request;
  const auto limit = query_integer(r, "limit", 100, 1, 1000);
  const auto after = query_integer(r, "after", 0, 0, std::numeric_limits<std::int64_t>::max());
  auto events = take(ops::list_audit(call.store, static_cast<std::size_t>(limit), after));
  json out = json::array();
  for (const auto& e : events) out.push_back(ops::audit_json(e));
  const bool more = events.size() == static_cast<std::size_t>(limit);
  return json_reply(200, json{{"events", std::move(out)},
                              {"next_after", more ? json(events.back().seq) : json(nullptr)}});
}

bool wants_pem(const httplib::Request& request) {
  return request.path.ends_with(".pem") ||
         request.get_header_value("Accept").find("application/x-pem-file") != std::string::npos;
}

// One issuer's CRL from the CRL file, which holds one per issuing CA after 'ca rotate'.
Reply issuer_crl_reply(const std::string& pem, const X509* issuer, bool as_pem) {
  for (auto& crl : take(ca::crls_from_pem(pem))) {
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(issuer)) != 0) continue;
    if (as_pem) return Reply{200, ca::crl_to_pem(crl.get()), "application/x-pem-file", {}};
    return Reply{200, ca::crl_to_der(crl.get()), "application/pkix-crl", {}};
  }
  return error_reply(
      404, "not_found",
      "the CRL file has no CRL of " + subject_common_name(issuer) + " yet; run 'onboardctl crl'");
}

// The CRL as the last revocation wrote it: served from the file, never re-signed per request. In
// DER a response holds one CRL: the oldest issuing CA's, whose certificates name this URL (those
// of issuers made by 'ca rotate' while it was kept name /crl/<ISSUER SERIAL>, see
// Authority::issuing_crl_url()). The PEM is the whole file.
Reply get_crl(Context& ctx, Call& call) {
  auto pem = take(read_file(ctx.workspace.crl, 16 * 1024 * 1024));
  if (wants_pem(call.request)) return Reply{200, pem, "application/x-pem-file", {}};
  const auto& kept = ctx.ca.retired();
  return issuer_crl_reply(pem, kept.empty() ? ctx.ca.issuer() : kept.back().cert.get(), false);
}

// The CRL of the issuing CA of that serial (upper-case hex, as in its kept file name): current
// or kept by 'ca rotate'. 404 for any other serial.
Reply get_issuer_crl(Context& ctx, Call& call) {
  const std::string serial = call.param(1);
  const X509* issuer = nullptr;
  if (ctx.ca.has_intermediate() && serial_hex(ctx.ca.issuer()) == serial) issuer = ctx.ca.issuer();
  for (const auto& kept : ctx.ca.retired()) {
    if (serial_hex(kept.cert.get()) == serial) issuer = kept.cert.get();
  }
  if (issuer == nullptr)
    return error_reply(404, "not_found", "no issuing CA of this CA has serial " + serial);
  auto pem = take(read_file(ctx.workspace.crl, 16 * 1024 * 1024));
  return issuer_crl_reply(pem, issuer, wants_pem(call.request));
}

// The root CA's own CRL (only with an issuing intermediate; 404 otherwise), likewise from the
// file 'onboardctl crl' writes where the root key is.
Reply get_root_crl(Context& ctx, Call& call) {
  std::error_code ec;
  if (!std::filesystem::exists(ctx.workspace.root_crl, ec) && !ec) {
    return error_reply(404, "not_found",
                       "no root CRL: only a CA with an issuing intermediate publishes one");
  }
  auto pem = take(read_file(ctx.workspace.root_crl, 16 * 1024 * 1024));
  if (wants_pem(call.request)) return Reply{200, pem, "application/x-pem-file", {}};
  auto crl = take(ca::crl_from_pem(pem));
  return Reply{200, ca::crl_to_der(crl.get()), "application/pkix-crl", {}};
}

Reply healthz(Context&, Call& call) {
  (void)take(call.store.change_seq());  // the registry answers a read
  return json_reply(200, json{{"status", "ok"}});
}

// A refused download: audited (without the token, only its first characters) and answered.
Reply refuse_download(Context& ctx, Call& call, int status, std::string_view code,
                      std::string_view reason, std::string_view bundle_id) {
  const std::string token = call.param(1);
  json details{{"reason", reason},
               {"token_prefix", token.substr(0, 8)},
               {"remote_addr", call.request.remote_addr}};
  std::unique_lock turn(ctx.write_turn);
  auto recorded = call.store.record_event(
      "bundle.download_refused", bundle_id.empty() ? "-" : bundle_id, dump(details), call.actor);
  turn.unlock();
  if (!recorded.ok()) log_line("could not audit a refused download: " + recorded.error().message);
  return error_reply(
      status, code, status == 410 ? "this link has expired or was used already" : "no such bundle");
}

// GET /v1/bundles/{token}: the one-time link. Authentic and unexpired, a known bundle whose file
// still matches its recorded SHA-256, claimed in the registry before a byte is sent.
Reply download_bundle(Context& ctx, Call& call) {
  const std::string token = call.param(1);
  auto check = bundle::verify_link_token(token, ctx.link_secret, call.actor.now);
  if (!check.ok()) {
    switch (check.failure()) {
      case bundle::LinkFailure::malformed:
      case bundle::LinkFailure::bad_signature:
        return refuse_download(ctx, call, 404, "not_found",
                               bundle::link_failure_name(check.failure()), "");
      case bundle::LinkFailure::expired:
        return refuse_download(ctx, call, 410, "gone", "expired", "");
      case bundle::LinkFailure::internal:
        break;
    }
    throw ErrorReply{reply_for(make_error(Errc::internal, "the link check could not run"))};
  }
  const std::string& id = check.token().bundle_id;
  auto record = call.store.get_bundle(id);
  if (!record.ok()) {
    if (record.error().code == Errc::not_found)
      return refuse_download(ctx, call, 404, "not_found", "unknown_bundle", id);
    throw ErrorReply{reply_for(record.error())};
  }
  if (record->downloaded_at)
    return refuse_download(ctx, call, 410, "gone", "already_downloaded", id);
  auto zip = read_file(record->path, 1024L * 1024 * 1024);
  auto digest = zip.ok() ? sha256_hex(*zip) : Result<std::string>(zip.error());
  if (!digest.ok() || *digest != record->sha256) {
    log_line("bundle " + id + ": the file is missing or does not match its recorded SHA-256");
    (void)refuse_download(ctx, call, 500, "internal", "file_mismatch", id);
    return error_reply(500, "internal", "the bundle cannot be served; an operator must check it");
  }
  std::unique_lock turn(ctx.write_turn);
  auto claimed = call.store.claim_bundle_download(id, call.request.remote_addr, call.actor);
  turn.unlock();
  if (!claimed.ok()) {
    if (claimed.error().code == Errc::conflict)
      return refuse_download(ctx, call, 410, "gone", "already_downloaded", id);
    throw ErrorReply{reply_for(claimed.error())};
  }
  Reply reply{200, std::move(*zip), "application/zip", {}};
  reply.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + id + ".zip\"");
  reply.headers.emplace_back("Cache-Control", "no-store");
  return reply;
}

// ---- bundles ---------------------------------------------------------------------------------

constexpr std::size_t kMaxBundleDevices = 1000;
constexpr std::size_t kMaxPasswordBytes = 1024;

std::vector<std::string> device_list(const json& body) {
  auto it = body.find("devices");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_array()) throw BadRequest{"devices must be an array of device ids"};
  if (it->size() > kMaxBundleDevices)
    throw BadRequest{"devices: at most " + std::to_string(kMaxBundleDevices) + " per request"};
  std::vector<std::string> ids;
  for (const auto& id : *it) {
    if (!id.is_string()) throw BadRequest{"devices must be an array of device ids"};
    ids.push_back(id.get<std::string>());
  }
  return ids;
}

// A one-time download link (GET /v1/bundles/{token}) for a recorded bundle, audited as
// bundle.link, into out's "link" and "link_expires_at". The bundle is recorded (and for devices
// their held keys erased): a link that cannot be made must not cost the caller the password, so
// it is left null and logged (`onboardctl bundle link` makes one). The caller holds the write turn.
void add_link(Context& ctx, Call& call, const std::string& bundle_id, UnixTime ttl, json& out) {
  const UnixTime expires_at = call.actor.now + ttl;
  auto token = bundle::make_link_token(bundle_id, expires_at, ctx.link_secret);
  auto audited = token.ok() ? call.store.record_event(
                                  "bundle.link", bundle_id,
                                  dump(json{{"expires_at", iso_time(expires_at)}}), call.actor)
                            : Status(token.error());
  if (audited.ok()) {
    out["link"] = "/v1/bundles/" + *token;
    out["link_expires_at"] = iso_time(expires_at);
  } else {
    log_line("bundle " + bundle_id + ": no link made: " + audited.error().message);
  }
}

// POST /v1/bundles: what `onboardctl bundle create` does, through the same operation. The
// archives go to DATA_DIR/bundles/BUNDLE-ID.zip (a request names no path). The answer carries
// each bundle's password only when the server generated it (a password sent in the request is
// not echoed), and, with link_ttl, the path of a one-time download link.
Reply create_bundles(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"devices", "batch", "split", "broker", "password", "link_ttl"});
  ops::BundleRequest request;
  request.device_ids = device_list(body);
  request.batch_id = optional_string(body, "batch").value_or("");
  if (request.device_ids.empty() == request.batch_id.empty())
    throw BadRequest{"give either devices (a non-empty array) or batch"};
  if (auto it = body.find("split"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) throw BadRequest{"split must be true or false"};
    request.split = it->get<bool>();
  }
  request.broker = take(
      bundle::parse_broker_address(optional_string(body, "broker").value_or("localhost:8883")));
  std::optional<UnixTime> link_ttl;
  if (auto ttl = optional_string(body, "link_ttl"))
    link_ttl = take(ops::parse_duration(*ttl, "link_ttl", 60, 30 * ops::kDay));
  std::optional<Secret> password;
  if (auto it = body.find("password"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) throw BadRequest{"password must be a string"};
    const auto& text = it->get_ref<const std::string&>();
    if (text.size() > kMaxPasswordBytes)
      throw BadRequest{"password: at most " + std::to_string(kMaxPasswordBytes) + " bytes"};
    password.emplace(text);
    request.password = &*password;
  }
  request.out = ctx.workspace.dir / "bundles";
  request.name_by_id = true;
  request.hold_passphrase = [&ctx]() -> Result<const Secret*> {
    if (!ctx.hold_passphrase) {
      return make_error(Errc::conflict,
                        "a device's key is held encrypted, and this server was started without "
                        "the hold passphrase that opens it (--hold-passphrase-env or "
                        "--hold-passphrase-file)");
    }
    return &*ctx.hold_passphrase;
  };

  auto plan = take(ops::plan_bundles(call.store, request));
  // The archives are written (the slow part) before the write turn; the records after it.
  std::unique_lock turn(ctx.write_turn, std::defer_lock);
  auto written = take(
      ops::write_bundles(call.store, ctx.ca, plan, call.actor, [&turn](const ops::BundlePlan&) {
        turn.lock();
        return ok_status();
      }));
  if (written.recorded.empty()) throw ErrorReply{reply_for(*written.failure)};
  json bundles = json::array();
  for (std::size_t i : written.recorded) {
    const auto& b = plan.bundles[i];
    json devices = json::array();
    for (std::size_t index : b.devices) devices.push_back(plan.devices[index].device.id);
    json out{{"id", b.id},
             {"devices", std::move(devices)},
             {"keys", b.keys},
             {"sha256", b.sha256},
             {"size", b.size},
             {"link", nullptr},
             {"link_expires_at", nullptr}};
    out["password"] = b.password_generated ? json(std::string(b.password.view())) : json(nullptr);
    if (link_ttl) add_link(ctx, call, b.id, *link_ttl, out);
    bundles.push_back(std::move(out));
  }
  json reply{{"bundles", std::move(bundles)}};
  if (written.failure) {
    log_line("bundle create: " + written.failure->message);
    reply["warning"] =
        "not every bundle could be recorded; the ones listed were recorded and stay valid";
  }
  return json_reply(201, reply);
}

// ---- claims ----------------------------------------------------------------------------------

Reply list_claims(Context&, Call& call) {
  const auto limit = query_integer(call.request, "limit", 100, 1, 1000);
  auto page = take(ops::list_claims(call.store, static_cast<std::size_t>(limit),
                                    query_string(call.request, "after")));
  const UnixTime now = unix_now();
  json claims = json::array();
  for (const auto& c : page.claims) claims.push_back(ops::claim_json(c, now));
  return json_reply(200,
                    json{{"claims", std::move(claims)},
                         {"next_after", page.next_after ? json(*page.next_after) : json(nullptr)}});
}

Reply get_claim(Context&, Call& call) {
  return json_reply(200, ops::claim_json(take(call.store.get_claim(call.param(1))), unix_now()));
}

// POST /v1/claims: what `onboardctl claim create` does, through the same operation. The claim's
// certificate and key never appear in a reply or a log: the zip goes to DATA_DIR/bundles/
// BUNDLE-ID.zip, recorded as a bundle of the claim, and the reply carries its generated password
// (once) and a one-time download link, as POST /v1/bundles does.
Reply create_claim(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body,
              {"name", "quota", "expires", "type", "id_pattern", "key_alg", "broker", "link_ttl"});
  ops::ClaimRequest request;
  request.claim.name = required_string(body, "name");
  if (auto problem = registry::claim_name_problem(request.claim.name))
    throw BadRequest{"name: " + *problem};
  const auto quota = optional_integer(body, "quota");
  if (!quota) throw BadRequest{"quota is required"};
  if (*quota < 1 || *quota > registry::kMaxClaimQuota)
    throw BadRequest{"quota must be 1 to " + std::to_string(registry::kMaxClaimQuota)};
  request.claim.quota = *quota;
  request.lifetime = take(
      ops::parse_duration(required_string(body, "expires"), "expires", 60, ops::kMaxClaimLifetime));
  request.claim.device_type = optional_string(body, "type").value_or("");
  if (!request.claim.device_type.empty()) {
    if (auto problem = registry::group_name_problem(request.claim.device_type))
      throw BadRequest{"type: " + *problem};
  }
  request.claim.id_pattern = optional_string(body, "id_pattern").value_or("");
  if (!request.claim.id_pattern.empty()) {
    if (auto problem = registry::id_pattern_problem(request.claim.id_pattern))
      throw BadRequest{"id_pattern: " + *problem};
  }
  if (auto key_alg = optional_string(body, "key_alg")) {
    auto alg = ca::parse_key_alg(*key_alg);
    if (!alg) throw BadRequest{"key_alg must be one of " + std::string(ca::kKeyAlgNames)};
    request.key_alg = *alg;
  }
  request.broker = take(
      bundle::parse_broker_address(optional_string(body, "broker").value_or("localhost:8883")));
  const UnixTime link_ttl = take(ops::parse_duration(
      optional_string(body, "link_ttl").value_or("24h"), "link_ttl", 60, 30 * ops::kDay));
  request.out = ctx.workspace.dir / "bundles";
  request.as_bundle = true;

  // The key and the certificate are made and the zip written before the write turn; the claim,
  // its bundle and the link are recorded in it.
  std::unique_lock turn(ctx.write_turn, std::defer_lock);
  auto created = take(
      ops::create_claim(call.store, ctx.ca, request, call.actor, [&turn](const ops::ClaimCreated&) {
        turn.lock();
        return ok_status();
      }));
  json bundle{{"id", created.bundle_id},  {"sha256", created.zip_sha256},
              {"size", created.zip_size}, {"password", std::string(created.password.view())},
              {"link", nullptr},          {"link_expires_at", nullptr}};
  add_link(ctx, call, created.bundle_id, link_ttl, bundle);
  turn.unlock();
  json out = ops::claim_json(created.claim, call.actor.now);
  out["serial"] = created.serial_hex;
  out["bundle"] = std::move(bundle);
  Reply reply = json_reply(201, out);
  reply.headers.emplace_back("Location", "/v1/claims/" + created.claim.name);
  reply.headers.emplace_back("Cache-Control", "no-store");
  return reply;
}

// POST /v1/claims/{name}/revoke: final. Again on a revoked claim: 200 with already_revoked, and
// nothing written (no audit row, no CRL).
Reply revoke_claim(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"reason"});
  auto reason_name = optional_string(body, "reason").value_or("cessationOfOperation");
  auto reason = parse_revocation_reason(reason_name);
  if (!reason) throw BadRequest{"reason must be one of " + std::string(kRevocationReasonNames)};
  const std::string name = call.param(1);
  std::lock_guard turn(ctx.write_turn);
  auto revoked =
      take(ops::revoke_claim(call.store, ctx.ca, ctx.workspace.crl, name, *reason, call.actor));
  json out = ops::claim_json(revoked.outcome.claim, call.actor.now);
  out["already_revoked"] = revoked.outcome.already_revoked;
  out["serial"] = revoked.outcome.serial_hex;
  out["crl_number"] = revoked.crl_number ? json(*revoked.crl_number) : json(nullptr);
  return json_reply(200, out);
}

// ---- batches ---------------------------------------------------------------------------------

constexpr std::size_t kMaxBatchDevices = 1000;

// POST /v1/batches: what `onboardctl batch register` does with a CSV file, through the same
// operation, with the rows as JSON. Every row is checked first and every problem reported at
// once (400, nothing registered); then each row is registered in its own transaction.
Reply register_batch(Context& ctx, Call& call) {
  json body = body_object(call);
  expect_only(body, {"batch", "skip_existing", "key_alg", "days", "devices"});
  ops::BatchRequest request;
  request.batch_id = optional_string(body, "batch").value_or("");
  if (!request.batch_id.empty()) {
    if (auto problem = device_id_problem(request.batch_id)) throw BadRequest{"batch: " + *problem};
  }
  request.source = "rest";
  bool skip_existing = false;
  if (auto it = body.find("skip_existing"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) throw BadRequest{"skip_existing must be true or false"};
    skip_existing = it->get<bool>();
  }
  if (auto key_alg = optional_string(body, "key_alg")) {
    auto alg = ca::parse_key_alg(*key_alg);
    if (!alg) throw BadRequest{"key_alg must be one of " + std::string(ca::kKeyAlgNames)};
    request.key_alg = *alg;
  }
  if (auto days = optional_integer(body, "days")) {
    if (*days < 1 || *days > 3650) throw BadRequest{"days must be 1 to 3650"};
    request.days = static_cast<int>(*days);
  }
  auto devices = body.find("devices");
  if (devices == body.end() || !devices->is_array() || devices->empty())
    throw BadRequest{"devices must be a non-empty array of objects"};
  if (devices->size() > kMaxBatchDevices)
    throw BadRequest{"devices: at most " + std::to_string(kMaxBatchDevices) + " per request"};
  ops::CheckedBatch rows;
  for (std::size_t i = 0; i < devices->size(); ++i) {
    const json& item = (*devices)[i];
    const std::string where = "devices[" + std::to_string(i) + "]";
    if (!item.is_object()) throw BadRequest{where + " must be an object"};
    for (const auto& [key, value] : item.items()) {
      static constexpr std::string_view kKnown[] = {"id",       "name",     "type",
                                                    "location", "firmware", "csr"};
      if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown))
        throw BadRequest{where + ": unknown field '" + key + "'"};
      if (!value.is_string() && !value.is_null())
        throw BadRequest{where + ": " + key + " must be a string"};
    }
    ops::BatchRow row;
    row.line = static_cast<int>(i) + 1;
    row.where = where;
    row.id = optional_string(item, "id").value_or("");
    row.name = optional_string(item, "name").value_or("");
    row.type = optional_string(item, "type").value_or("");
    row.location = optional_string(item, "location").value_or("");
    row.firmware = optional_string(item, "firmware").value_or("");
    row.csr_pem = optional_string(item, "csr").value_or("");
    rows.rows.push_back(std::move(row));
  }
  // No csr_path in a request: the server reads no file a client names.
  auto checked = take(ops::check_batch_rows(std::move(rows), call.store, skip_existing, {}));
  if (!checked.problems.empty()) {
    Reply reply = json_reply(
        400, json{{"error",
                   {{"code", "invalid_input"},
                    {"message", std::to_string(checked.problems.size()) +
                                    " problem(s) in the request; nothing was registered"}}},
                  {"problems", checked.problems}});
    return reply;
  }
  const bool needs_hold =
      std::any_of(checked.rows.begin(), checked.rows.end(),
                  [](const ops::BatchRow& r) { return !r.skip && r.csr_pem.empty(); });
  if (needs_hold && !ctx.hold_passphrase) {
    throw ErrorReply{error_reply(
        409, "cannot_hold_keys",
        "this server cannot hold device keys (it was started without --hold-passphrase-env or "
        "--hold-passphrase-file); send a csr for every device so each keeps its own key")};
  }
  request.hold_passphrase = ctx.hold_passphrase ? &*ctx.hold_passphrase : nullptr;
  // One batch is one writer: its rows go in one after another, in the turn.
  std::lock_guard turn(ctx.write_turn);
  auto registered =
      take(ops::register_batch(call.store, ctx.ca, request, checked.rows, call.actor));
  if (registered.failure) {
    const auto& row = *registered.failed_row;
    const std::size_t done = registered.registered.size();
    std::string done_text = done == 0 ? std::string("no device was registered")
                                      : std::to_string(done) +
                                            " device(s) before it are registered in batch " +
                                            registered.batch_id;
    throw ErrorReply{reply_for(make_error(
        registered.failure->code, row.where + " (device " + row.id +
                                      "): " + registered.failure->message + "; " + done_text +
                                      "; the rest are not; fix the cause and retry with batch " +
                                      registered.batch_id + " and skip_existing"))};
  }
  return json_reply(201, json{{"batch", registered.batch_id},
                              {"extended", registered.extended},
                              {"registered", registered.registered},
                              {"keys_held", registered.keys_held},
                              {"skipped", registered.skipped}});
}

// ---- enrolment over MQTT --------------------------------------------------------------------

// The broker's plugin hands over what a device published on $provision/<client id>/csr, as
// published (the body); the reply's body is what the plugin publishes back, on the topic the
// X-Provision-Result header names (accepted or rejected). A refusal is a 200 too: the request
// was handled, and the device is told why.
Reply provision_enroll(Context& ctx, Call& call) {
  ops::EnrollRequest request{call.param(1), call.param(2), call.body};
  // Recorded in a group commit with the enrolments that wait for the write turn meanwhile.
  const auto answer = ops::enroll(
      call.store, ctx.ca, request, call.actor,
      [&ctx, &call](const registry::EnrollItem& item) {
        return ctx.enrolments.record(call.store, ctx.write_turn, item);
      },
      [](const std::string& line) { log_line(line); });
  Reply reply;
  reply.body = ops::answer_payload(answer);
  reply.headers.emplace_back("X-Provision-Result", std::string(ops::answer_topic_suffix(answer)));
  if (answer.refused)
    reply.headers.emplace_back("X-Provision-Code", std::string(to_string(*answer.refused)));
  return reply;
}

// The broker's plugin hands over what a device connected with its own certificate published on
// $provision/<device id>/renew, and in X-Client-Certificate the fingerprint of that certificate.
// Answered as provision_enroll; an acceptance also names the new certificate's fingerprint, so
// that the plugin can hold the answer until its snapshot knows the certificate.
Reply provision_renew(Context& ctx, Call& call) {
  ops::RenewRequest request{call.param(1), call.request.get_header_value("X-Client-Certificate"),
                            call.body, ctx.renewal_min_age};
  std::unique_lock turn(ctx.write_turn, std::defer_lock);
  const auto answer = ops::renew(
      call.store, ctx.ca, request, call.actor, [&turn] { turn.lock(); },
      [](const std::string& line) { log_line(line); });
  Reply reply;
  reply.body = ops::answer_payload(answer);
  reply.headers.emplace_back("X-Provision-Result", std::string(ops::answer_topic_suffix(answer)));
  if (answer.refused) {
    reply.headers.emplace_back("X-Provision-Code", std::string(to_string(*answer.refused)));
  } else {
    reply.headers.emplace_back("X-Provision-Certificate", answer.certificate_sha256);
  }
  return reply;
}

// The broker's plugin: device {device_id} connected with the certificate in
// X-Client-Certificate, so the active certificates it replaces are superseded (what it renews and
// the renewals waiting beside it: ClaimStore::supersede_predecessors).
Reply provision_connected(Context& ctx, Call& call) {
  const std::string id = call.param(1);
  const std::string fingerprint = call.request.get_header_value("X-Client-Certificate");
  // Most notices revoke nothing (the old certificate's connect while its renewal waits, a
  // notice repeated): found by reads, answered without the write turn and without the CRL. A bad
  // id or fingerprint is refused here too (400), before anything could be written.
  const bool due = take(ops::supersede_due(call.store, ctx.ca, ctx.workspace.crl, id, fingerprint));
  ops::Superseded superseded;
  if (due) {
    std::lock_guard turn(ctx.write_turn);
    auto result =
        ops::supersede(call.store, ctx.ca, ctx.workspace.crl, id, fingerprint, call.actor);
    // The supersession may be committed with the CRL not rewritten: the CRL refresher retries
    // it (the plugin asks again only at the device's next connect).
    if (!result.ok()) ctx.crl_stale = true;
    superseded = take(std::move(result));
  }
  if (!superseded.serials.empty()) {
    log_line("device '" + id + "' connected with a renewed certificate: superseded " +
             std::to_string(superseded.serials.size()) + " certificate(s) it replaces");
  }
  return json_reply(200, json{{"superseded", superseded.serials},
                              {"crl_number", superseded.crl_number ? json(*superseded.crl_number)
                                                                   : json(nullptr)}});
}

// ---- the route table -------------------------------------------------------------------------

constexpr RouteSpec kRoutes[] = {
    // The original three, as the first prototype named them.
    {"POST", "/register", Need::operator_role, register_device},
    {"GET", "/device/{id}", Need::reader, get_device},
    {"POST", "/revoke/{id}", Need::operator_role, revoke_device},
    // The versioned API.
    {"GET", "/v1/devices", Need::reader, list_devices},
    {"POST", "/v1/devices", Need::operator_role, register_device},
    {"GET", "/v1/devices/{id}", Need::reader, get_device},
    {"PATCH", "/v1/devices/{id}", Need::operator_role, patch_device},
    {"POST", "/v1/devices/{id}/revoke", Need::operator_role, revoke_device},
    {"GET", "/v1/devices/{id}/certificates", Need::reader, list_certificates},
    {"POST", "/v1/devices/{id}/certificates", Need::operator_role, renew_certificate},
    {"GET", "/v1/devices/{id}/acl", Need::reader, list_rules},
    {"POST", "/v1/devices/{id}/acl", Need::operator_role, add_rule},
    {"DELETE", "/v1/devices/{id}/acl/{rule_id}", Need::operator_role, delete_rule},
    {"GET", "/v1/groups/{name}/acl", Need::reader, list_rules},
    {"POST", "/v1/groups/{name}/acl", Need::operator_role, add_rule},
    {"DELETE", "/v1/groups/{name}/acl/{rule_id}", Need::operator_role, delete_rule},
    {"GET", "/v1/acl/check", Need::reader, check_access},
    {"GET", "/v1/audit", Need::reader, list_audit},
    {"POST", "/v1/batches", Need::operator_role, register_batch},
    {"POST", "/v1/bundles", Need::operator_role, create_bundles},
    {"GET", "/v1/claims", Need::reader, list_claims},
    {"POST", "/v1/claims", Need::operator_role, create_claim},
    {"GET", "/v1/claims/{name}", Need::reader, get_claim},
    {"POST", "/v1/claims/{name}/revoke", Need::operator_role, revoke_claim},
    // Public: relying parties, load balancers and the holder of a one-time link.
    {"GET", "/crl", Need::nobody, get_crl},
    {"GET", "/crl.pem", Need::nobody, get_crl},
    {"GET", "/crl/{issuer}", Need::nobody, get_issuer_crl},
    {"GET", "/root-crl", Need::nobody, get_root_crl},
    {"GET", "/root-crl.pem", Need::nobody, get_root_crl},
    {"POST", "/ocsp", Need::nobody, post_ocsp, "application/ocsp-request"},
    {"GET", "/ocsp/{request}", Need::nobody, get_ocsp, "application/json", true},
    {"GET", "/healthz", Need::nobody, healthz},
    {"GET", "/v1/bundles/{token}", Need::nobody, download_bundle},
    // The broker's plugin only (serve --provision-token-file).
    {"POST", "/v1/provision/{claim}/{client_id}", Need::provisioner, provision_enroll,
     "application/octet-stream"},
    {"POST", "/v1/renew/{device_id}", Need::provisioner, provision_renew,
     "application/octet-stream"},
    {"POST", "/v1/renew/{device_id}/connected", Need::provisioner, provision_connected},
};

}  // namespace

std::span<const RouteSpec> route_table() { return kRoutes; }

std::string path_regex(std::string_view path, bool tail) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      i = path.find('}', i);
      out += tail && path.find('{', i) == std::string_view::npos ? "(.+)" : "([^/]+)";
    } else if (std::string_view(".[]()*+?^$|\\").find(path[i]) != std::string_view::npos) {
      out += '\\';
      out += path[i];
    } else {
      out += path[i];
    }
  }
  return out;
}

Reply call_handler(Context& ctx, const RouteSpec& route, Call& call) {
  try {
    return route.handler(ctx, call);
  } catch (const BadRequest& e) {
    return error_reply(400, "invalid_input", e.message);
  } catch (ErrorReply& e) {
    return std::move(e.reply);
  }
}

}  // namespace onboard::rest
