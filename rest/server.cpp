#include "rest/server.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string_view>
#include <thread>

#include "bundle/link_token.h"
#include "ca/certificate.h"
#include "core/files.h"
#include "core/x509.h"
#include "ops/crl_refresh.h"
#include "ops/operations.h"
#include "ops/provisioning.h"
#include "rest/auth.h"
#include "rest/context.h"
#include "rest/front.h"
#include "rest/http.h"
#include "rest/routes.h"

namespace onboard::rest {
namespace {

using registry::Store;

// Who may call the route, from the headers alone: the actor the audit names, or the refusal
// (401 unknown caller, 403 a reader on an operator route).
std::variant<registry::Actor, Reply> authorize(const Context& ctx, Store& store,
                                               const RouteSpec& route,
                                               const httplib::Request& request) {
  registry::Actor actor{"rest:anonymous", unix_now()};
  if (route.need == Need::provisioner) {
    // The broker's plugin (rest/auth.h): the provisioning secret or its client certificate,
    // named in the audit by which of them (and which certificate) it was.
    auto who =
        provisioning_caller(store, request, ctx.provision_token, ctx.provision_client_sha256);
    if (who.index() == 1) return std::get<1>(std::move(who));
    actor.name = std::get<0>(std::move(who));
  } else if (route.need != Need::nobody) {
    auto who = caller(store, request);
    if (who.index() == 1) return std::get<1>(std::move(who));
    const auto& credential = std::get<0>(who);
    if (route.need == Need::operator_role && credential.role != registry::ApiRole::operator_role)
      return error_reply(403, "forbidden", "this credential may only read");
    actor.name = "rest:" + credential.name;
  } else if (std::string_view(route.path).starts_with("/v1/bundles/")) {
    actor.name = "rest:link";
  }
  return actor;
}

// The request up to its handler's reply. Every check the headers allow comes before the body is
// read, so an unknown caller makes the server read nothing but headers: a store, then who may
// call (401, 403), then the type of an announced body (415), then the body (`reader`, routes with
// a body; a GET has none: the pre-routing handler refuses one), bounded (413), then the handler.
// `body_unread` is cleared once read_body has run: until then the body is still on the
// connection.
Reply respond(Context& ctx, const RouteSpec& route, const httplib::Request& request,
              httplib::Response& response, const httplib::ContentReader* reader,
              std::size_t max_body_bytes, bool& body_unread) {
  auto lease = ctx.stores.borrow();
  if (!lease.ok()) return reply_for(lease.error());
  Store& store = **lease;
  auto actor = authorize(ctx, store, route, request);
  if (actor.index() == 1) return std::get<1>(std::move(actor));
  if (announces_body(request) &&
      !is_content_type(request.get_header_value("Content-Type"), route.body_type))
    return error_reply(415, "unsupported_media_type",
                       std::string("send the body as ") + route.body_type);
  std::string body;
  if (reader != nullptr) {
    auto read = read_body(request, response, *reader, max_body_bytes);
    body_unread = false;  // read, or refused by read_body, whose reply says whether to close
    if (read.index() == 1) return std::get<1>(std::move(read));
    body = std::get<0>(std::move(read));
  }
  Call call{request, reader != nullptr ? body : request.body, store, std::get<0>(actor)};
  return call_handler(ctx, route, call);
}

// Everything around a handler: respond(), the guarantee that no exception leaves (what
// call_handler does not turn into a reply becomes a JSON 500), and the end of the connection when
// the reply goes out before the body was read.
void handle(Context& ctx, const RouteSpec& route, const httplib::Request& request,
            httplib::Response& response, const httplib::ContentReader* reader,
            std::size_t max_body_bytes) noexcept {
  bool body_unread = reader != nullptr && announces_body(request);
  Reply reply = error_reply(500, "internal", "internal error; the server log has the details");
  try {
    reply = respond(ctx, route, request, response, reader, max_body_bytes, body_unread);
  } catch (const std::exception& e) {
    log_line(std::string("internal error: ") + e.what());
  } catch (...) {
    log_line("internal error: unknown exception");
  }
  try {
    if (body_unread && !reply_closes(reply)) reply = closing(std::move(reply));
    send(response, std::move(reply));
  } catch (...) {
    response.status = 500;  // out of memory: the error handler below makes it a JSON 500
  }
}

// Set by the post-routing handler when the reply says `Connection: close`, on the worker thread
// that runs the request; read by that thread once httplib has written the reply (serve()), since
// httplib itself keeps a connection open after any reply the request did not ask to close.
thread_local bool reply_closes_connection = false;

void install_routes(httplib::Server& server, Context& ctx, std::size_t max_body_bytes) {
  for (const auto& route : route_table()) {
    const std::string pattern = path_regex(route.path, route.tail);
    const std::string_view method = route.method;
    if (method == "GET") {
      server.Get(pattern, [&ctx, &route, max_body_bytes](const httplib::Request& request,
                                                         httplib::Response& response) {
        handle(ctx, route, request, response, nullptr, max_body_bytes);
      });
      continue;
    }
    auto handler = [&ctx, &route, max_body_bytes](const httplib::Request& request,
                                                  httplib::Response& response,
                                                  const httplib::ContentReader& reader) {
      handle(ctx, route, request, response, &reader, max_body_bytes);
    };
    if (method == "POST")
      server.Post(pattern, handler);
    else if (method == "PATCH")
      server.Patch(pattern, handler);
    else if (method == "DELETE")
      server.Delete(pattern, handler);
  }
  // A body no content-reader route takes is either read by httplib before any handler runs,
  // whoever sends it (PUT, a POST to an unknown path), or left on the connection to be taken for
  // the next request (GET, HEAD, OPTIONS: httplib 0.11 reads no body for them). No route of this
  // API takes such a body, so it is refused from the headers and the connection ends.
  server.set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
    const std::string& method = request.method;
    if (!announces_body(request) || method == "POST" || method == "PATCH" || method == "DELETE")
      return httplib::Server::HandlerResponse::Unhandled;
    send(response,
         closing(error_reply(400, "bad_request", "a " + method + " request takes no body")));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Registered after every route: a POST, PATCH or DELETE that no route matched.
  auto no_route = [](const httplib::Request& request, httplib::Response& response,
                     const httplib::ContentReader&) {
    Reply reply = error_reply(404, "not_found", "no such resource");
    send(response, announces_body(request) ? closing(std::move(reply)) : std::move(reply));
  };
  server.Post(".*", no_route);
  server.Patch(".*", no_route);
  server.Delete(".*", no_route);
  // Whatever httplib answers on its own (no route 404, 413 body too large, 400 unparsable
  // request) gets the same JSON error shape; replies a handler already filled (a body, or one
  // that closes the connection written by a content provider) are left alone.
  server.set_error_handler([](const httplib::Request&, httplib::Response& response) {
    if (!response.body.empty() || response.content_length_ > 0) return;
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
  // httplib adds its Keep-Alive header to every reply the request did not ask to close, and its
  // own Connection header when it did: a reply that closes says so once, and the connection ends
  // after it (see serve()).
  server.set_post_routing_handler([](const httplib::Request&, httplib::Response& response) {
    if (response.get_header_value("Connection") != "close") return;
    reply_closes_connection = true;
    response.headers.erase("Keep-Alive");
    response.headers.erase("Connection");
    response.set_header("Connection", "close");
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
        send(response, error_reply(500, "internal", "internal error"));
      });
}

}  // namespace

std::vector<Route> routes() {
  std::vector<Route> out;
  for (const auto& route : route_table()) out.push_back({route.method, route.path});
  return out;
}

namespace {

// The shape of serve's scheduled work: `once` at start and then every `every` until `stop`. `once`
// returns a problem ("" for none); what it throws is a problem too. A problem is logged once, as
// `failing` followed by it, and not again until `once` has succeeded.
void on_schedule(std::stop_token stop, std::chrono::seconds every, std::string_view failing,
                 const std::function<std::string()>& once) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  bool was_failing = false;
  do {
    std::string problem;
    try {
      problem = once();
    } catch (const std::exception& e) {
      problem = e.what();
    } catch (...) {
      problem = "unknown exception";
    }
    if (!problem.empty() && !was_failing) log_line(std::string(failing) + problem);
    was_failing = !problem.empty();
  } while (!cv.wait_for(lock, stop, every, [] { return false; }) && !stop.stop_requested());
}

}  // namespace

// Re-issues the CRL before it expires: a broker that loads it (`crlfile`) refuses every device
// once it is past its next update, and this process holds the CA key. Checked at start and every
// `check` after; rewritten when less than half of its default lifetime is left, in the write turn
// like every other CRL rewrite, and also when a committed revocation's own rewrite failed
// (Context::crl_stale). Never throws: a failure is logged once and retried.
void refresh_crl_on_schedule(Context& ctx, std::stop_token stop, std::chrono::seconds check) {
  on_schedule(stop, check, "cannot refresh the CRL (will retry): ", [&]() -> std::string {
    auto standing = ops::crl_standing(ctx.workspace.crl, unix_now(), ops::kDefaultCrlValidity / 2);
    // A revocation whose rewrite failed (Context::crl_stale) is written now; the flag is set again
    // if this rewrite fails too.
    const bool stale = ctx.crl_stale.exchange(false);
    if (stale && !standing.due) standing.why = "a revocation's earlier rewrite failed";
    if (!standing.due && !stale) return {};
    try {
      std::lock_guard turn(ctx.write_turn);
      auto store = ctx.stores.borrow();
      auto number = store.ok() ? ops::rewrite_crl(**store, ctx.ca, ctx.workspace.crl, "",
                                                  registry::Actor{"serve:crl", unix_now()})
                               : Result<std::uint64_t>(store.error());
      if (number.ok()) {
        log_line("CRL " + std::to_string(*number) + " written to " + ctx.workspace.crl.string() +
                 " (" + standing.why + ")");
        return {};
      }
      if (stale) ctx.crl_stale = true;
      return number.error().message;
    } catch (...) {
      if (stale) ctx.crl_stale = true;
      throw;
    }
  });
}

// Ends renewals' grace periods (docs/provisioning.md, "Renewal"): a device that renewed over MQTT
// and whose new certificate has not connected within `grace` has the certificate it renewed
// revoked as superseded, and the CRL rewritten. The scan for what is due is a read outside the
// write turn (enrolments, renewals and revocations do not wait for it); the write turn is taken
// only when something is due, and the store looks at each certificate again under its write lock.
// Looked at every quarter of the grace period, at least every second and at most every 10 minutes.
// Never throws: a failure is logged once and retried.
void supersede_on_schedule(Context& ctx, std::stop_token stop, std::chrono::seconds grace) {
  const auto check = std::clamp<std::chrono::seconds>(grace / 4, std::chrono::seconds(1),
                                                      std::chrono::minutes(10));
  on_schedule(stop, check,
              "cannot end renewals' grace periods (will retry): ", [&]() -> std::string {
                auto store = ctx.stores.borrow();
                if (!store.ok()) return store.error().message;
                auto due = ops::renewals_due(**store, grace.count(), unix_now());
                if (!due.ok()) return due.error().message;  // the scan writes nothing
                if (due->empty()) return {};
                try {
                  // The write turn for each batch (ClaimStore::kSupersedeBatch) and for the CRL
                  // apart: enrolments and renewals get in between the batches of a fleet's sweep.
                  auto superseded = ops::supersede_expired(
                      **store, ctx.ca, ctx.workspace.crl, *due, grace.count(),
                      registry::Actor{"serve:renewal", unix_now()},
                      [&ctx] { return std::unique_lock<std::mutex>(ctx.write_turn); });
                  if (superseded.ok()) {
                    if (!superseded->serials.empty()) {
                      log_line("superseded " + std::to_string(superseded->serials.size()) +
                               " certificate(s) whose renewal's grace period is over");
                    }
                    if (superseded->first_failure) {
                      return std::to_string(superseded->failed_batches) +
                             " batch(es) failed, their certificates stay due: " +
                             superseded->first_failure->message;
                    }
                    return {};
                  }
                  // The revocations may be committed with the CRL not rewritten: the next sweep
                  // finds nothing due, so the CRL refresher retries the rewrite.
                  ctx.crl_stale = true;
                  return superseded.error().message;
                } catch (...) {
                  ctx.crl_stale = true;
                  throw;
                }
              });
}

namespace {

// process_request (one request on a stream) is protected in httplib::Server. The server is never
// started (the front listens), so httplib's is_running() stays false and a content provider
// would write no body at all: replies are set whole (send() in http.cpp).
class RequestServer : public httplib::Server {
 public:
  using httplib::Server::process_request;
};

// With --client-ca: client certificates are asked for and verified against these CAs.
bool use_client_ca(SSL_CTX& tls_ctx, const std::string& client_ca) {
  if (client_ca.empty()) return true;
  if (SSL_CTX_load_verify_locations(&tls_ctx, client_ca.c_str(), nullptr) != 1) return false;
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(client_ca.c_str());
  if (names == nullptr) return false;
  SSL_CTX_set_client_CA_list(&tls_ctx, names);  // takes ownership
  SSL_CTX_set_verify(&tls_ctx, SSL_VERIFY_PEER, nullptr);
  return true;
}

}  // namespace

Status serve(const ops::Workspace& workspace, ca::Authority ca,
             std::optional<Secret> hold_passphrase, const ServeOptions& options) {
  ONBOARD_TRY(Secret link_secret, bundle::load_or_create_link_secret(workspace.dir));
  {
    // Fail at start, not at the first request, when the registry cannot be opened.
    ONBOARD_TRY(auto store, ops::open_registry(workspace));
    (void)store;
  }
  Context ctx{workspace,
              std::move(ca),
              std::move(hold_passphrase),
              std::move(link_secret),
              StorePool(workspace),
              {}};
  ctx.renewal_min_age = options.renewal_min_age.count();
  if (!options.provision_token_file.empty()) {
    ONBOARD_TRY(ctx.provision_token, read_secret_file(options.provision_token_file));
    if (ctx.provision_token->view().size() < 32) {
      return make_error(Errc::invalid_input,
                        "--provision-token-file: the secret must be at least 32 characters");
    }
  }
  if (!options.provision_client_certs.empty() && options.client_ca.empty()) {
    return make_error(Errc::invalid_input,
                      "--provision-client-cert needs --client-ca (what the handshake verifies it "
                      "against)");
  }
  for (const auto& file : options.provision_client_certs) {
    ONBOARD_TRY(std::string pem, read_file(file, 1 << 20));
    auto cert = ca::certificate_from_pem(pem);
    if (!cert.ok()) {
      return make_error(Errc::invalid_input,
                        "--provision-client-cert " + file + ": " + cert.error().message);
    }
    std::string fingerprint = sha256_fingerprint(cert->get());
    if (fingerprint.empty()) {
      return make_error(Errc::invalid_input,
                        "--provision-client-cert " + file + ": cannot fingerprint the certificate");
    }
    ctx.provision_client_sha256.push_back(std::move(fingerprint));
  }

  // The TLS context the front's connections are made from. A client certificate is asked for,
  // not required: token clients connect without one. A certificate that is presented must
  // verify, or the handshake fails.
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> tls_ctx(nullptr, &SSL_CTX_free);
  const bool tls = !options.tls_cert.empty();
  if (tls) {
    tls_ctx.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX* c = tls_ctx.get();
    // An encrypted --tls-key is refused, never asked for: without a callback OpenSSL prompts for
    // its passphrase on the terminal. This one answers none and notes it was asked.
    bool passphrase_asked = false;
    if (c != nullptr) {
      SSL_CTX_set_default_passwd_cb(c, [](char*, int, int, void* asked) {
        *static_cast<bool*>(asked) = true;
        return -1;
      });
      SSL_CTX_set_default_passwd_cb_userdata(c, &passphrase_asked);
    }
    const bool usable =
        c != nullptr && SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) == 1 &&
        (SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION), true) &&
        SSL_CTX_use_certificate_chain_file(c, options.tls_cert.c_str()) == 1 &&
        SSL_CTX_use_PrivateKey_file(c, options.tls_key.c_str(), SSL_FILETYPE_PEM) == 1 &&
        SSL_CTX_check_private_key(c) == 1 && use_client_ca(*c, options.client_ca);
    if (c != nullptr) {
      SSL_CTX_set_default_passwd_cb(c, nullptr);
      SSL_CTX_set_default_passwd_cb_userdata(c, nullptr);
    }
    ERR_clear_error();  // what a failed setup left; the message below says what to check
    if (!usable && passphrase_asked)
      return make_error(Errc::invalid_input,
                        "--tls-key " + options.tls_key +
                            " is an encrypted key: serve cannot ask for its passphrase; give it "
                            "the key unencrypted, readable by serve's user alone");
    if (!usable)
      return make_error(Errc::invalid_input,
                        "cannot use --tls-cert/--tls-key/--client-ca (unreadable, mismatched, or "
                        "not PEM)");
  }
  // httplib parses, routes and answers one request at a time on a connection the front hands
  // over with its head complete; the front owns sockets, timeouts and connection caps.
  RequestServer server;
  server.set_keep_alive_max_count(options.keep_alive_max_requests);
  server.set_keep_alive_timeout(options.keep_alive_seconds);  // what its Keep-Alive header says
  server.set_payload_max_length(options.max_body_bytes);
  install_routes(server, ctx, options.max_body_bytes);

  FrontOptions front_options;
  front_options.workers = std::max<std::size_t>(options.threads, 1);
  front_options.max_connections = options.max_connections;
  front_options.max_connections_per_peer = options.max_connections_per_peer;
  front_options.header_timeout = options.header_timeout;
  front_options.body_timeout = options.body_timeout;
  front_options.keep_alive = std::chrono::seconds(options.keep_alive_seconds);
  front_options.keep_alive_max_requests = options.keep_alive_max_requests;
  ONBOARD_TRY(auto front,
              Front::bind(options.host, options.port, tls_ctx.get(), front_options,
                          [&server](httplib::Stream& stream, bool close_connection,
                                    bool& connection_closed, SSL* ssl) {
                            reply_closes_connection = false;
                            const bool ok =
                                ssl == nullptr
                                    ? server.process_request(stream, close_connection,
                                                             connection_closed, nullptr)
                                    : server.process_request(
                                          stream, close_connection, connection_closed,
                                          [ssl](httplib::Request& request) { request.ssl = ssl; });
                            if (reply_closes_connection) connection_closed = true;
                            return ok;
                          }));

  // SIGTERM and SIGINT are taken by one thread with sigwait, which then stops the front. Blocked
  // here before any worker thread exists, so every thread inherits the mask.
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
  // Renewals come only through the provisioning route.
  std::jthread renewal_sweeper;
  if (ctx.provision_token || !ctx.provision_client_sha256.empty()) {
    renewal_sweeper = std::jthread([&ctx, &options](std::stop_token stop) {
      supersede_on_schedule(ctx, stop, options.renewal_grace);
    });
  }

  std::atomic<bool> serving_done{false};
  std::atomic<bool> signalled{false};
  std::thread watcher([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    if (serving_done.load()) return;
    signalled.store(true);
    log_line("stopping (signal " + std::to_string(signal_number) + ")");
    front->stop();  // a signal that comes before run() is kept by the eventfd
  });
  const bool ipv6 = options.host.find(':') != std::string::npos;
  std::cout << "serving on " << (tls ? "https" : "http") << "://"
            << (ipv6 ? "[" + options.host + "]" : options.host) << ":" << front->port()
            << std::endl;
  front->run();
  serving_done.store(true);
  if (!signalled.load()) pthread_kill(watcher.native_handle(), SIGTERM);  // wake the watcher
  watcher.join();
  if (const auto group = ctx.enrolments.stats(); group.batches > 0) {
    log_line("enrolments over MQTT: " + std::to_string(group.enrolments) + " recorded in " +
             std::to_string(group.batches) + " commit(s), the largest of " +
             std::to_string(group.largest));
  }
  if (!signalled.load()) return make_error(Errc::io, "the server stopped unexpectedly");
  return ok_status();
}

}  // namespace onboard::rest
