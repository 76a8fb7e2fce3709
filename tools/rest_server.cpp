#include "tools/rest_server.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <stop_token>
#include <thread>
#include <variant>

#include "bundle/link_token.h"
#include "bundle/manifest.h"
#include "ca/certificate.h"
#include "ca/crl.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/identity.h"
#include "tools/operations.h"
#include "tools/views.h"

namespace onboard::rest {
namespace {

using nlohmann::json;
using registry::Store;

// ---- replies and errors ----------------------------------------------------------------------

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

// Invalid UTF-8 that reached the registry some other way is replaced, never a thrown dump().
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

Reply json_reply(int status, const json& body) {
  return Reply{status, dump(body) + "\n", "application/json", {}};
}

Reply error_reply(int status, std::string_view code, std::string_view message) {
  return json_reply(status, json{{"error", {{"code", code}, {"message", message}}}});
}

// A client mistake found while reading the request: becomes a 400 with this message.
struct BadRequest {
  std::string message;
};

void log_line(const std::string& line) {
  // One write per line, so lines from worker threads do not interleave.
  std::string out = "onboardctl serve: " + line + "\n";
  std::cerr << out << std::flush;
}

// Store and CA errors to HTTP. Messages of the client's own making (invalid input, not found,
// conflict) are safe and useful to show; anything else may name files or SQLite internals, so it
// goes to the log and the client gets a generic sentence.
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

// ---- stores: one per worker thread at a time -------------------------------------------------

// A Store belongs to one thread at a time; a worker borrows one for a request and gives it back.
// At most `threads` are ever open, each a SQLite connection with its own busy timeout.
class StorePool {
 public:
  explicit StorePool(cli::Workspace workspace) : workspace_(std::move(workspace)) {}

  class Lease {
   public:
    Lease(StorePool& pool, std::unique_ptr<Store> store) : pool_(&pool), store_(std::move(store)) {}
    Lease(Lease&&) = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (store_) pool_->give_back(std::move(store_));
    }
    Store& operator*() const { return *store_; }

   private:
    StorePool* pool_;
    std::unique_ptr<Store> store_;
  };

  Result<Lease> borrow() {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        auto store = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(store));
      }
    }
    ONBOARD_TRY(auto store, cli::open_registry(workspace_));
    return Lease(*this, std::move(store));
  }

 private:
  void give_back(std::unique_ptr<Store> store) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(store));
  }
  cli::Workspace workspace_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Store>> idle_;
};

// ---- the server's state ----------------------------------------------------------------------

struct Context {
  cli::Workspace workspace;
  ca::Authority ca;
  std::optional<Secret> hold_passphrase;
  Secret link_secret;
  StorePool stores;
  // The server's writers take turns here rather than in SQLite's busy handler, whose sleeps grow
  // to 100 ms and serve waiters in no order (measured: p99 of registrations 350 ms with four
  // writers, 4 ms alone). Key generation and signing run before the turn, in parallel. The turn
  // also keeps two CRL rewrites from finishing out of order (an older CRL replacing a newer one).
  // Other processes (the CLI) still meet the server in SQLite's lock and busy timeout.
  std::mutex write_turn;
};

enum class Need { nobody, reader, operator_role };

struct Call {
  const httplib::Request& request;
  const std::string& body;  // read by read_body (routes with a body), else empty
  Store& store;
  registry::Actor actor;
  std::string param(std::size_t i) const { return request.matches[i].str(); }
};

using Handler = Reply (*)(Context&, Call&);

// ---- request reading -------------------------------------------------------------------------

bool is_json_content_type(const std::string& value) {
  std::string media = value.substr(0, value.find(';'));
  media.erase(
      std::remove_if(media.begin(), media.end(), [](unsigned char c) { return std::isspace(c); }),
      media.end());
  std::transform(media.begin(), media.end(), media.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return media == "application/json";
}

// The body as a JSON object. An empty body (none sent, or Content-Length: 0) is {}: on a route
// whose fields are all optional it means "nothing given" (POST /revoke/{id} without a reason);
// elsewhere the first missing required field is named.
json body_object(const Call& call) {
  if (call.body.empty()) return json::object();
  json body = json::parse(call.body, nullptr, false);
  if (body.is_discarded()) throw BadRequest{"the body is not valid JSON"};
  if (!body.is_object()) throw BadRequest{"the body must be a JSON object"};
  return body;
}

// Unknown fields are refused: a misspelt "csr" must not quietly become a server-made key.
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

// ops:: results: an Error becomes the matching reply, thrown to the route's wrapper.
struct ErrorReply {
  Reply reply;
};
template <class T>
T take(Result<T> result) {
  if (!result.ok()) throw ErrorReply{reply_for(result.error())};
  return std::move(result).value();
}

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
  json out = cli::device_json(details.device);
  out["certificates"] = json::array();
  for (const auto& c : details.certificates)
    out["certificates"].push_back(cli::certificate_json(c, true));
  out["rules"] = json::array();
  for (const auto& r : details.effective_rules) out["rules"].push_back(cli::rule_json(r));
  out["server_key_copy"] = cli::held_key_json(details.held_key);
  return out;
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
    if (!it->is_object()) throw BadRequest{"metadata must be a JSON object"};
    device.metadata = dump(*it);
  }
  ops::RegisterRequest request{std::move(device), key_plan(ctx, body), {}, 0};
  std::unique_lock turn(ctx.write_turn, std::defer_lock);
  auto registered = take(
      ops::register_device(call.store, ctx.ca, request, call.actor, [&turn](const ops::Issuance&) {
        turn.lock();  // issued: now the store write
        return ok_status();
      }));
  json out = cli::device_json(registered.device);
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
  auto page = take(ops::list_devices(call.store, filter));
  json devices = json::array();
  for (const auto& d : page.devices) devices.push_back(cli::device_json(d));
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
    return json_reply(200, cli::device_json(take(ops::get_device(call.store, id))));
  }
  registry::DeviceUpdate update;
  update.name = optional_string(body, "name");
  update.type = optional_string(body, "type");
  update.location = optional_string(body, "location");
  update.firmware = optional_string(body, "firmware");
  if (auto it = body.find("metadata"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) throw BadRequest{"metadata must be a JSON object"};
    update.metadata = dump(*it);
  }
  if (update.empty()) {
    throw BadRequest{
        "nothing to update: send status, or at least one of name, type, location, firmware, "
        "metadata"};
  }
  std::lock_guard turn(ctx.write_turn);
  return json_reply(200,
                    cli::device_json(take(ops::update_device(call.store, id, update, call.actor))));
}

Reply list_certificates(Context&, Call& call) {
  json out = json::array();
  for (const auto& c : take(ops::list_certificates(call.store, call.param(1))))
    out.push_back(cli::certificate_json(c, true));
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
    out.push_back(cli::rule_json(r));
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
  Reply reply = json_reply(201, cli::rule_json(record));
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
  for (const auto& e : events) out.push_back(cli::audit_json(e));
  const bool more = events.size() == static_cast<std::size_t>(limit);
  return json_reply(200, json{{"events", std::move(out)},
                              {"next_after", more ? json(events.back().seq) : json(nullptr)}});
}

bool wants_pem(const httplib::Request& request) {
  return request.path.ends_with(".pem") ||
         request.get_header_value("Accept").find("application/x-pem-file") != std::string::npos;
}

// The CRL as the last revocation wrote it: served from the file, never re-signed per request.
Reply get_crl(Context& ctx, Call& call) {
  auto pem = take(read_file(ctx.workspace.crl, 16 * 1024 * 1024));
  if (wants_pem(call.request)) return Reply{200, pem, "application/x-pem-file", {}};
  auto crl = take(ca::crl_from_pem(pem));
  return Reply{200, ca::crl_to_der(crl.get()), "application/pkix-crl", {}};
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

// ---- the route table -------------------------------------------------------------------------

struct RouteSpec {
  const char* method;
  const char* path;  // OpenAPI template: {name} is one path segment
  Need need;
  Handler handler;
};

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
    // Public: relying parties, load balancers and the holder of a one-time link.
    {"GET", "/crl", Need::nobody, get_crl},
    {"GET", "/crl.pem", Need::nobody, get_crl},
    {"GET", "/root-crl", Need::nobody, get_root_crl},
    {"GET", "/root-crl.pem", Need::nobody, get_root_crl},
    {"GET", "/healthz", Need::nobody, healthz},
    {"GET", "/v1/bundles/{token}", Need::nobody, download_bundle},
};

// "/v1/devices/{id}/acl" -> "/v1/devices/([^/]+)/acl"; everything else literal.
std::string path_regex(std::string_view path) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      i = path.find('}', i);
      out += "([^/]+)";
    } else if (std::string_view(".[]()*+?^$|\\").find(path[i]) != std::string_view::npos) {
      out += '\\';
      out += path[i];
    } else {
      out += path[i];
    }
  }
  return out;
}

void send(httplib::Response& response, Reply reply) {
  response.status = reply.status;
  for (auto& [name, value] : reply.headers) response.set_header(name, value);
  if (reply.status != 204) response.set_content(std::move(reply.body), reply.content_type);
}

Reply unauthorized(bool token_given) {
  Reply reply = error_reply(401, "unauthorized",
                            token_given ? "the bearer token is unknown or revoked"
                                        : "send Authorization: Bearer <token>");
  reply.headers.emplace_back("WWW-Authenticate",
                             token_given
                                 ? "Bearer realm=\"mosquitto-onboard\", error=\"invalid_token\""
                                 : "Bearer realm=\"mosquitto-onboard\"");
  return reply;
}

// A store that cannot answer while a certificate is checked refuses the request (fail closed).
Reply certificate_check_unavailable(const Error& error) {
  log_line("unavailable: checking a client certificate: " + error.message);
  Reply reply = error_reply(503, "unavailable", "the registry is busy or unavailable; retry");
  reply.headers.emplace_back("Retry-After", "1");
  return reply;
}

Reply certificate_refused(const std::string& message) {
  Reply reply = error_reply(401, "unauthorized", message);
  reply.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"mosquitto-onboard\"");
  return reply;
}

// The registry's record of a bound client certificate, read on every request: the handshake
// checked the chain and dates only when the connection opened and knows nothing of `ca revoke`
// or `device revoke`, so a certificate revoked since, one expired on a kept-alive connection, or
// one the CA's registry never recorded is refused here. The Reply is the refusal.
std::optional<Reply> bound_certificate_refusal(Store& store, const std::string& fingerprint) {
  auto record = store.find_certificate_by_fingerprint(fingerprint);
  if (!record.ok()) {
    if (record.error().code != Errc::not_found)
      return certificate_check_unavailable(record.error());
    return certificate_refused("the client certificate is not one the registry's CA recorded");
  }
  if (record->status == registry::CertificateStatus::revoked) {
    std::string reason = record->revocation_reason
                             ? std::string(revocation_reason_name(*record->revocation_reason))
                             : std::string("unspecified");
    return certificate_refused("the client certificate (serial " + record->serial_hex +
                               ") is revoked (" + reason + ")");
  }
  const UnixTime now = unix_now();
  if (now < record->not_before)
    return certificate_refused("the client certificate (serial " + record->serial_hex +
                               ") is not valid yet");
  if (now > record->not_after)
    return certificate_refused("the client certificate (serial " + record->serial_hex +
                               ") has expired");
  return std::nullopt;
}

// Who is calling: a client certificate the TLS handshake verified against --client-ca, that is
// bound to a credential and that the registry knows as active and in date (only when no
// Authorization header is sent), else a bearer token. The Reply is the refusal.
std::variant<registry::ApiToken, Reply> caller(Store& store, const httplib::Request& request) {
  const std::string header = request.get_header_value("Authorization");
  if (header.empty() && request.ssl != nullptr) {
    const X509* peer = SSL_get0_peer_certificate(request.ssl);
    if (peer != nullptr && SSL_get_verify_result(request.ssl) == X509_V_OK) {
      const std::string fingerprint = sha256_fingerprint(peer);
      auto credential = ops::authenticate_certificate(store, fingerprint);
      if (!credential.ok()) {
        if (credential.error().code != Errc::not_found)
          return certificate_check_unavailable(credential.error());
        return unauthorized(false);
      }
      if (auto refusal = bound_certificate_refusal(store, fingerprint)) return std::move(*refusal);
      return std::move(credential).value();
    }
    return unauthorized(false);
  }
  constexpr std::string_view kScheme = "Bearer ";  // case-insensitive (RFC 7235)
  const bool is_bearer =
      header.size() > kScheme.size() &&
      std::equal(kScheme.begin(), kScheme.end(), header.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) ==
               std::tolower(static_cast<unsigned char>(b));
      });
  if (!is_bearer) return unauthorized(!header.empty());
  auto token = ops::authenticate_token(store, std::string_view(header).substr(kScheme.size()));
  if (token.ok()) return std::move(token).value();
  if (token.error().code == Errc::not_found) return unauthorized(true);
  return reply_for(token.error());
}

// Everything around a handler: a store, authentication and authorization, the content type,
// and the guarantee that no exception leaves (any becomes a JSON 500).
Reply handle(Context& ctx, const RouteSpec& route, const httplib::Request& request,
             const std::string& body) noexcept {
  try {
    auto lease = ctx.stores.borrow();
    if (!lease.ok()) return reply_for(lease.error());
    Store& store = **lease;
    registry::Actor actor{"rest:anonymous", unix_now()};
    if (route.need != Need::nobody) {
      auto who = caller(store, request);
      if (who.index() == 1) return std::get<1>(std::move(who));
      const auto& credential = std::get<0>(who);
      if (route.need == Need::operator_role &&
          credential.role != registry::ApiRole::operator_role) {
        return error_reply(403, "forbidden", "this credential may only read");
      }
      actor.name = "rest:" + credential.name;
    } else if (std::string_view(route.path).starts_with("/v1/bundles/")) {
      actor.name = "rest:link";
    }
    if (!body.empty() && !is_json_content_type(request.get_header_value("Content-Type"))) {
      return error_reply(415, "unsupported_media_type", "send the body as application/json");
    }
    Call call{request, body, store, actor};
    return route.handler(ctx, call);
  } catch (const BadRequest& e) {
    return error_reply(400, "invalid_input", e.message);
  } catch (ErrorReply& e) {
    return std::move(e.reply);
  } catch (const std::exception& e) {
    log_line(std::string("internal error: ") + e.what());
  } catch (...) {
    log_line("internal error: unknown exception");
  }
  return error_reply(500, "internal", "internal error; the server log has the details");
}

// The body of a POST, PATCH or DELETE, read here rather than by httplib. RFC 9112 section 6.3: a
// request with neither Transfer-Encoding nor Content-Length has no body, and that is what
// `curl -X POST URL` sends. httplib 0.11 instead reads such a request until the client closes
// the connection, which a client waiting for its answer never does, and after the read timeout
// answered 400 before any handler ran. A content-reader route is handed the reader and asks it
// for the body only when the request announces one. An announced body is always read to its end,
// even when the request is then refused, so a kept-alive connection stays in step. The Reply is
// the refusal.
std::variant<std::string, Reply> read_body(const httplib::Request& request,
                                           httplib::Response& response,
                                           const httplib::ContentReader& reader,
                                           std::size_t max_bytes) {
  std::string body;
  if (!request.has_header("Content-Length") && !request.has_header("Transfer-Encoding"))
    return body;
  // httplib refuses a Content-Length over the limit (and skips the body); this bounds a chunked
  // body, whose rest is read and dropped like that skipped one.
  bool too_large = false;
  auto append = [&](const char* data, std::size_t size) {
    too_large = too_large || body.size() + size > max_bytes;
    if (!too_large) body.append(data, size);
    return true;
  };
  // A multipart body is read through httplib's multipart parser, which needs both callbacks;
  // it is refused afterwards as not JSON.
  const bool read = request.is_multipart_form_data()
                        ? reader([](const httplib::MultipartFormData&) { return true; }, append)
                        : reader(append);
  if (too_large || response.status == 413)
    return error_reply(413, "payload_too_large", "the request body is too large");
  if (!read) return error_reply(400, "bad_request", "the request body could not be read");
  return body;
}

void install_routes(httplib::Server& server, Context& ctx, std::size_t max_body_bytes) {
  for (const auto& route : kRoutes) {
    const std::string pattern = path_regex(route.path);
    const std::string_view method = route.method;
    if (method == "GET") {
      server.Get(pattern,
                 [&ctx, &route](const httplib::Request& request, httplib::Response& response) {
                   send(response, handle(ctx, route, request, request.body));
                 });
      continue;
    }
    auto handler = [&ctx, &route, max_body_bytes](const httplib::Request& request,
                                                  httplib::Response& response,
                                                  const httplib::ContentReader& reader) {
      auto body = read_body(request, response, reader, max_body_bytes);
      if (body.index() == 1) return send(response, std::get<1>(std::move(body)));
      send(response, handle(ctx, route, request, std::get<0>(body)));
    };
    if (method == "POST")
      server.Post(pattern, handler);
    else if (method == "PATCH")
      server.Patch(pattern, handler);
    else if (method == "DELETE")
      server.Delete(pattern, handler);
  }
  // Whatever httplib answers on its own (no route 404, 413 body too large, 400 unparsable
  // request) gets the same JSON error shape; replies a handler already filled are left alone.
  server.set_error_handler([](const httplib::Request&, httplib::Response& response) {
    if (!response.body.empty()) return;
    switch (response.status) {
      case 404:
        send(response, error_reply(404, "not_found", "no such resource"));
        break;
      case 413:
        send(response, error_reply(413, "payload_too_large", "the request body is too large"));
        break;
      case 405:
        send(response, error_reply(405, "method_not_allowed", "method not allowed"));
        break;
      default:
        send(response, error_reply(response.status, "bad_request", "the request was refused"));
        break;
    }
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
        send(response, error_reply(500, "internal", "internal error"));
      });
}

}  // namespace

std::vector<Route> routes() {
  std::vector<Route> out;
  for (const auto& route : kRoutes) out.push_back({route.method, route.path});
  return out;
}

// Re-issues the CRL before it expires: a broker that loads it (`crlfile`) refuses every device
// once it is past its next update, and this process holds the CA key. Checked at start and every
// `check` after; rewritten when less than half of its default lifetime is left, in the write turn
// like every other CRL rewrite. Never throws: a failure is logged once and retried.
void refresh_crl_on_schedule(Context& ctx, std::stop_token stop, std::chrono::seconds check) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  bool failing = false;
  do {
    std::string problem;
    try {
      const auto standing =
          ops::crl_standing(ctx.workspace.crl, unix_now(), ops::kDefaultCrlValidity / 2);
      if (standing.due) {
        std::lock_guard turn(ctx.write_turn);
        auto store = ctx.stores.borrow();
        auto number = store.ok() ? ops::rewrite_crl(**store, ctx.ca, ctx.workspace.crl, "",
                                                    registry::Actor{"serve:crl", unix_now()})
                                 : Result<std::uint64_t>(store.error());
        if (number.ok()) {
          log_line("CRL " + std::to_string(*number) + " written to " + ctx.workspace.crl.string() +
                   " (" + standing.why + ")");
        } else {
          problem = number.error().message;
        }
      }
    } catch (const std::exception& e) {
      problem = e.what();
    }
    if (!problem.empty() && !failing) log_line("cannot refresh the CRL (will retry): " + problem);
    failing = !problem.empty();
  } while (!cv.wait_for(lock, stop, check, [] { return false; }) && !stop.stop_requested());
}

Status serve(const cli::Workspace& workspace, ca::Authority ca,
             std::optional<Secret> hold_passphrase, const ServeOptions& options) {
  ONBOARD_TRY(Secret link_secret, bundle::load_or_create_link_secret(workspace.dir));
  {
    // Fail at start, not at the first request, when the registry cannot be opened.
    ONBOARD_TRY(auto store, cli::open_registry(workspace));
    (void)store;
  }
  Context ctx{workspace,
              std::move(ca),
              std::move(hold_passphrase),
              std::move(link_secret),
              StorePool(workspace),
              {}};

  std::unique_ptr<httplib::Server> server;
  const bool tls = !options.tls_cert.empty();
  if (tls) {
    auto ssl = std::make_unique<httplib::SSLServer>([&options](SSL_CTX& tls_ctx) {
      SSL_CTX_set_min_proto_version(&tls_ctx, TLS1_2_VERSION);
      SSL_CTX_set_options(&tls_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
      if (SSL_CTX_use_certificate_chain_file(&tls_ctx, options.tls_cert.c_str()) != 1 ||
          SSL_CTX_use_PrivateKey_file(&tls_ctx, options.tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_check_private_key(&tls_ctx) != 1) {
        return false;
      }
      if (!options.client_ca.empty()) {
        if (SSL_CTX_load_verify_locations(&tls_ctx, options.client_ca.c_str(), nullptr) != 1)
          return false;
        STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.client_ca.c_str());
        if (names == nullptr) return false;
        SSL_CTX_set_client_CA_list(&tls_ctx, names);  // takes ownership
        // Asked for, not required: token clients connect without one. A certificate that is
        // presented must verify, or the handshake fails.
        SSL_CTX_set_verify(&tls_ctx, SSL_VERIFY_PEER, nullptr);
      }
      return true;
    });
    ERR_clear_error();  // what a failed setup left; the message below says what to check
    if (!ssl->is_valid())
      return make_error(Errc::invalid_input,
                        "cannot use --tls-cert/--tls-key/--client-ca (unreadable, mismatched, not "
                        "PEM, or an encrypted key)");
    server = std::move(ssl);
  } else {
    server = std::make_unique<httplib::Server>();
  }
  const std::size_t threads = std::max<std::size_t>(options.threads, 1);
  // A keep-alive connection holds its worker while it is open; the pool bounds both.
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_tcp_nodelay(true);  // without it every response waits for the peer's delayed ACK
  server->set_keep_alive_max_count(options.keep_alive_max_requests);
  server->set_keep_alive_timeout(options.keep_alive_seconds);
  server->set_read_timeout(10, 0);
  server->set_write_timeout(10, 0);
  server->set_payload_max_length(options.max_body_bytes);
  install_routes(*server, ctx, options.max_body_bytes);

  // SIGTERM and SIGINT are taken by one thread with sigwait, which then stops the server: stop()
  // is not async-signal-safe, so it must not run in a handler. Blocked here before any worker
  // thread exists, so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0)
    return make_error(Errc::internal, "cannot block SIGTERM/SIGINT");
  // After the mask: this thread must not take SIGTERM either.
  std::jthread crl_refresher([&ctx, &options](std::stop_token stop) {
    refresh_crl_on_schedule(ctx, stop, options.crl_check_interval);
  });

  int port = options.port;
  if (port == 0) {
    port = server->bind_to_any_port(options.host);
  } else if (!server->bind_to_port(options.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return make_error(Errc::io, "cannot listen on " + options.host + ":" +
                                    std::to_string(options.port) +
                                    " (in use, not an address of this host, or not permitted)");
  }
  std::atomic<bool> listening_done{false};
  std::atomic<bool> signalled{false};
  std::thread watcher([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    if (listening_done.load()) return;
    signalled.store(true);
    log_line("stopping (signal " + std::to_string(signal_number) + ")");
    server->stop();
  });
  const bool ipv6 = options.host.find(':') != std::string::npos;
  std::cout << "serving on " << (tls ? "https" : "http") << "://"
            << (ipv6 ? "[" + options.host + "]" : options.host) << ":" << port << std::endl;
  (void)server->listen_after_bind();
  listening_done.store(true);
  if (!signalled.load()) pthread_kill(watcher.native_handle(), SIGTERM);  // wake the watcher
  watcher.join();
  if (!signalled.load()) return make_error(Errc::io, "the server stopped unexpectedly");
  return ok_status();
}

}  // namespace onboard::rest
