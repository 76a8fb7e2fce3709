// mosquitto_onboard: a Mosquitto v5 plugin that takes every connect and topic decision from the
// device registry, live.
//
// Threads: every callback runs on the broker's single thread and reads an immutable Snapshot, with
// no lock and no I/O. A watcher thread polls the registry's change feed, builds the next Snapshot
// and hands it over, with the devices to disconnect and the lines to log; the broker thread takes
// them on its tick (~10 Hz idle, faster under load), because broker functions must not be called
// from other threads and a client must not be kicked from inside its own callback.
//
// Nothing throws across the C boundary: every callback catches everything and denies.
#include <dlfcn.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/x509.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/files.h"
#include "core/ossl.h"
#include "core/x509.h"
#include "plugin/accepted_clients.h"
#include "plugin/broker_config.h"
#include "plugin/broker_snapshot.h"
#include "plugin/broker_version.h"
#include "plugin/claim_rate.h"
#include "plugin/config.h"
#include "plugin/crl_guard.h"
#include "plugin/handover.h"
#include "plugin/provisioner.h"
#include "plugin/recovery_guard.h"
#include "plugin/watcher.h"
#include "registry/claim_recovery.h"
#include "registry/snapshot_cache.h"

// Mosquitto 2.0's broker does not export it (libmosquitto does); weak, so that the plugin still
// loads where it is absent.
#pragma weak mosquitto_lib_version

namespace {

using namespace onboard;
using plugin::Clock;
using plugin::Handover;
using plugin::LogLevel;
using registry::Snapshot;

constexpr const char* kPrefix = "onboard: ";
// The largest enrolment request (docs/provisioning.md); larger ones are answered here.
constexpr std::uint32_t kMaxProvisionRequestBytes = 16 * 1024;
constexpr std::string_view kProvisionTopicPrefix = "$provision/";
// How long an acceptance may wait for the snapshot to know the new device.
constexpr std::chrono::seconds kHoldAcceptance{2};
// One request of each kind (enrolment, renewal) per client id at a time: another one while its
// first is with the signer is answered rate_limited, so that one connection cannot fill the queue
// every claim shares. Past this age an
// unanswered request no longer blocks the client's next one (an answer lost to a failure).
constexpr std::chrono::seconds kRequestInFlightLimit{60};
// Renewed connections remembered at most (a renewal window is short; beyond this a renewed
// device may be disconnected once when its predecessor is revoked, and reconnects).
constexpr std::size_t kMaxRenewedConnections = 100000;
// Recently enrolled devices remembered as connected with their own certificate (RecoveryGuard);
// beyond this every claim recovery is refused for a while.
constexpr std::size_t kMaxRecoverySeen = 100000;

void log(int level, const std::string& message) {
  mosquitto_log_printf(level, "%s%s", kPrefix, message.c_str());
}

int mosquitto_level(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::info:
      return MOSQ_LOG_INFO;
    case LogLevel::notice:
      return MOSQ_LOG_NOTICE;
    case LogLevel::warning:
      return MOSQ_LOG_WARNING;
    case LogLevel::error:
      return MOSQ_LOG_ERR;
  }
  return MOSQ_LOG_ERR;
}

// The CA certificates a CRL must be signed by (plugin_opt_crl_cafile), read once at init.
Result<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().size() > (1u << 20))
    return make_error(Errc::io, "cannot read " + path + " (or larger than 1 MiB)");
  return text.str();
}

class Plugin {
 public:
  static Result<std::unique_ptr<Plugin>> create(plugin::Config config,
                                                mosquitto_plugin_id_t* identifier) {
    // The watcher's thread is the only one that touches the network; it gives up on a statement
    // or a connection attempt after this long.
    // Long enough for the largest statement of a full read at a million devices on a busy host,
    // well inside the default staleness limit.
    constexpr std::chrono::seconds kDatabaseTimeout{30};
    // A quiet registry is asked at least three times per staleness limit, so that it never
    // counts as stale while it answers.
    const auto idle = std::min<std::chrono::milliseconds>(
        std::chrono::seconds(5),
        std::chrono::duration_cast<std::chrono::milliseconds>(config.staleness_limit) / 3);
    auto source = plugin::access_source(config.registry, kDatabaseTimeout, idle);
    // The cheap checks only (the registry opens, its schema version): a misconfigured broker still
    // refuses to start. The full read runs on the watcher thread (first_snapshot).
    ONBOARD_TRY(auto start, first_snapshot(*source, config));
    std::unique_ptr<plugin::CrlGuard> crl;
    if (!config.crl_file.empty()) {
      std::string issuers;
      if (!config.crl_cafile.empty()) {
        ONBOARD_TRY(issuers, read_small_file(config.crl_cafile));
      }
      crl = std::make_unique<plugin::CrlGuard>(config.crl_file, std::move(issuers));
    }
    std::optional<plugin::SignerOptions> signer;
    if (!config.provision_url.empty()) {
      signer = plugin::SignerOptions{
          config.provision_url, {}, config.provision_cafile, config.provision_timeout};
      if (!config.provision_token_file.empty()) {
        ONBOARD_TRY(Secret token, read_secret_file(config.provision_token_file));
        signer->token = std::string(token.view());
      } else {
        ONBOARD_CHECK(
            plugin::check_client_credential(config.provision_certfile, config.provision_keyfile));
        signer->certfile = config.provision_certfile;
        signer->keyfile = config.provision_keyfile;
      }
    }
    auto plugin = std::unique_ptr<Plugin>(new Plugin(config, identifier));
    if (signer) {
      Handover* handover = &plugin->handover_;
      plugin->provisioner_ = std::make_unique<plugin::Provisioner>(
          [options = *signer] { return plugin::http_signer(options); },
          static_cast<std::size_t>(config.provision_workers),
          static_cast<std::size_t>(config.provision_queue),
          static_cast<std::size_t>(config.provision_claim_share),
          [handover](LogLevel level, std::string line) {
            handover->post_log(level, std::move(line));
          });
      log(MOSQ_LOG_NOTICE, "enrolment requests go to the signer at " + config.provision_url);
    }
    if (start.cached) {
      plugin->snapshot_.replace(start.cached->snapshot, plugin->handover_);
      plugin->last_ok_.store((Clock::now() - start.cached->age).time_since_epoch().count());
    }
    if (crl) log(MOSQ_LOG_NOTICE, "watching CRL " + config.crl_file + " for the listener");
    auto watcher = std::make_shared<plugin::Watcher>(
        std::move(source), start.cached ? start.cached->snapshot : nullptr, plugin->handover_,
        plugin->last_ok_, std::move(crl));
    if (config.cache_file) watcher->keep_cache(*config.cache_file, start.cached.has_value());
    plugin->watcher_ = watcher;
    // The first poll reports on the CRL the broker is about to load.
    watcher->poll_crl();
    const auto interval = config.refresh_interval;
    plugin->worker_ =
        std::jthread([watcher, interval](std::stop_token stop) { watcher->run(stop, interval); });
    if (!plugin->snapshot_.loaded()) plugin->wait_for_first_snapshot();
    return plugin;
  }

  mosquitto_plugin_id_t* identifier() const noexcept { return identifier_; }

  // What init starts from. The registry opens (the SQLite file exists and is a registry of this
  // schema version, or PostgreSQL answers with one): nothing yet, the watcher thread reads it in
  // full. It does not, and plugin_opt_cache_file is set: the last good snapshot kept there, read
  // here (the registry is down: nothing to wait for), which counts as read when it was written, so
  // that one older than the staleness limit lets the broker start but refuse new connections until
  // the registry answers (fail closed on old news). Neither: the broker does not start.
  struct Start {
    std::optional<plugin::CachedStart> cached;
  };
  static Result<Start> first_snapshot(plugin::AccessSource& source, const plugin::Config& config) {
    auto probe = source.probe();
    if (probe.ok()) return Start{};
    if (!config.cache_file) {
      Error e = std::move(probe).error();
      if (config.registry.backend == registry::Backend::postgresql) {
        e.message +=
            " (set plugin_opt_cache_file to start from the last good snapshot while the "
            "registry is down)";
      }
      return e;
    }
    ONBOARD_TRY(auto cached,
                plugin::read_cache_for_start(*config.cache_file, probe.error().message));
    log(MOSQ_LOG_WARNING,
        plugin::cache_start_line(*config.cache_file, cached, probe.error().message));
    return Start{std::move(cached)};
  }

  // A small registry is read in a moment: init waits that long for it, so that no client is
  // refused for want of a snapshot at start. A large one goes on loading on the watcher thread
  // while the broker opens its listener; until it is in, every client is refused.
  void wait_for_first_snapshot() {
    constexpr auto kWait = std::chrono::milliseconds(500);
    const auto until = Clock::now() + kWait;
    while (Clock::now() < until) {
      if (auto first = handover_.take_snapshot()) {
        snapshot_.replace(std::move(first), handover_);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    log(MOSQ_LOG_NOTICE, "registry " + config_.registry.display() +
                             ": reading it in full; clients are refused until it is read");
  }

  // Decision table (the first row that applies decides):
  //  1. no certificate, and the client is a session of this client id whose connection ended:
  //     Mosquitto re-checking an offline session on SIGHUP → a device's refused as before (which
  //     leaves an offline session as it is), a deferred client's deferred again (password_file
  //     re-attaches its acl_file rights); either way its standing is kept for its will and queued
  //     messages;
  //  2. no certificate, clients_without_certificate defer: a client id that is a registered device
  //     id → refused (it would take the device's session over); otherwise DEFER to Mosquitto's
  //     other mechanisms (password_file, dynamic security), remembered as deferred so that its
  //     topic checks are deferred too and never decided as a device's;
  //  3. the registry's connect verdict (no certificate included): refused → AUTH; accepted →
  //     username := device id, remembered as accepted, SUCCESS;
  //  4. a claim's certificate that the verdict accepted (the claim table in snapshot.h), or
  //     refused only for a used-up claim or a registered id when the claim may ask again for a
  //     lost answer (recovery_verdict), and within the claim's connect rate → username :=
  //     claim:<name>, remembered as a claim client (it may only ask for its own certificate),
  //     SUCCESS; beyond the rate → AUTH.
  int on_basic_auth(const mosquitto_evt_basic_auth& event) {
    ossl::Ptr<X509> cert(static_cast<X509*>(mosquitto_client_certificate(event.client)));
    std::string fingerprint, cn;
    if (cert) {
      fingerprint = sha256_fingerprint(cert.get());
      cn = subject_common_name(cert.get());
    }
    const char* id = mosquitto_client_id(event.client);
    const std::string client_id = id != nullptr ? id : "";
    if (auto offline = cert ? std::nullopt : clients_.offline_session(event.client, client_id)) {
      return *offline == plugin::AcceptedClients::Standing::deferred ? MOSQ_ERR_PLUGIN_DEFER
                                                                     : MOSQ_ERR_AUTH;
    }
    if (!snapshot_.loaded()) {
      // Not even a client without a certificate is deferred: its id may be a device's.
      clients_.forget(event.client);
      std::size_t suppressed = 0;
      if (not_loaded_log_.allow(Clock::now(), suppressed)) {
        log(MOSQ_LOG_WARNING,
            "refused client '" + printable(client_id) +
                "': registry not loaded yet (every client is refused until it is read)" +
                (suppressed > 0 ? " (" + std::to_string(suppressed) + " similar lines suppressed)"
                                : std::string()));
      }
      return MOSQ_ERR_AUTH;
    }
    if (!cert && config_.without_certificate == plugin::ClientsWithoutCertificate::defer) {
      if (snapshot_.get().find_device(client_id) != nullptr) {
        clients_.forget(event.client);
        if (config_.log_connections)
          log(MOSQ_LOG_WARNING, "refused client '" + client_id +
                                    "' without a certificate: its client id is a device id");
        return MOSQ_ERR_AUTH;
      }
      clients_.defer(event.client, client_id);
      return MOSQ_ERR_PLUGIN_DEFER;
    }
    auto verdict =
        *snapshot_.connect_verdict({fingerprint, cn, client_id}, std::time(nullptr), stale());
    std::string refusal_detail;
    bool recovering = false;
    if (!verdict.claim.empty() &&
        (verdict.reason == registry::ConnectReason::claim_used_up ||
         verdict.reason == registry::ConnectReason::claim_id_registered)) {
      recovering = recovery_verdict(event.client, verdict, client_id, refusal_detail);
    }
    // The claim's name views into the snapshot, which stays put for this callback. The rate is for
    // new connects: a connected claim client checked again (SIGHUP) spends no token, or a SIGHUP
    // (the plugin raises one for every changed CRL) would disconnect all of a claim's clients
    // beyond its burst.
    if (verdict.accepted() && !verdict.claim.empty() &&
        !recovery_.live_claim(event.client, client_id) &&
        !claim_rate_.allow(verdict.claim, Clock::now())) {
      verdict.reason = registry::ConnectReason::claim_rate_limited;
    }
    if (!verdict.accepted() && !verdict.claim.empty()) {
      clients_.forget(event.client);
      std::size_t suppressed = 0;
      // Claim clients are many and a flood is what a refusal here is about: rate-limited lines.
      if (config_.log_connections && claim_log_.allow(Clock::now(), suppressed)) {
        log(MOSQ_LOG_WARNING,
            "refused client '" + printable(client_id) + "' (claim '" + std::string(verdict.claim) +
                "'): " +
                (refusal_detail.empty() ? std::string(registry::to_string(verdict.reason))
                                        : refusal_detail) +
                (suppressed > 0 ? " (" + std::to_string(suppressed) + " similar lines suppressed)"
                                : std::string()));
      }
      return MOSQ_ERR_AUTH;
    }
    if (verdict.accepted() && !verdict.claim.empty()) {
      const std::string username = registry::claim_username(verdict.claim);
      if (mosquitto_set_username(event.client, username.c_str()) != MOSQ_ERR_SUCCESS) {
        log(MOSQ_LOG_ERR, "cannot set the username of client '" + client_id + "'; refusing it");
        clients_.forget(event.client);
        return MOSQ_ERR_AUTH;
      }
      clients_.accept_claim(event.client, client_id, username);
      recovery_.connected(event.client, client_id, true);
      if (config_.log_connections)
        log(MOSQ_LOG_INFO,
            "accepted client '" + client_id + "' with claim '" + std::string(verdict.claim) +
                (recovering ? "' to ask again for the certificate of device '" + client_id +
                                  "' (a lost answer)"
                            : std::string("' (it may only ask for its certificate)")));
      return MOSQ_ERR_SUCCESS;
    }
    if (!verdict.accepted()) {
      if (config_.log_connections) {
        log(MOSQ_LOG_WARNING, "refused client '" + client_id + "' (device '" +
                                  std::string(verdict.device_id.empty() ? cn : verdict.device_id) +
                                  "', serial " +
                                  (cert ? serial_hex(cert.get()) : std::string("none")) +
                                  "): " + std::string(registry::to_string(verdict.reason)));
      }
      clients_.forget(event.client);
      return MOSQ_ERR_AUTH;
    }
    // The username becomes the device id, whatever the client sent: ACL checks key on it.
    if (mosquitto_set_username(event.client, std::string(verdict.device_id).c_str()) !=
        MOSQ_ERR_SUCCESS) {
      log(MOSQ_LOG_ERR, "cannot set the username of client '" + client_id + "'; refusing it");
      clients_.forget(event.client);
      return MOSQ_ERR_AUTH;
    }
    // The same client already connected with this id: Mosquitto checks it again (SIGHUP, which
    // the plugin raises for every changed CRL). Its connection, and so its certificate, is the
    // one already noted; a notice for each such client at each CRL change would queue one
    // request per connected device with the signer while a fleet renews.
    const bool checked_again = recovery_.live_device(event.client, client_id);
    clients_.accept_device(event.client, client_id, verdict.device_id);
    recovery_.connected(event.client, client_id, false);
    if (const auto* device = snapshot_.get().find_device(verdict.device_id);
        device != nullptr && registry::recently_enrolled(*device, std::time(nullptr))) {
      recovery_.device_seen(client_id, Clock::now());
    }
    if (config_.log_connections) log(MOSQ_LOG_INFO, "accepted device '" + client_id + "'");
    if (!checked_again) note_renewed_connect(client_id, fingerprint);
    return MOSQ_ERR_SUCCESS;
  }

  // A claim client refused only because its claim is used up or its client id is a registered
  // device's: accepted (verdict.reason := accepted, true returned) when it may ask again for the
  // certificate of a device that enrolled with the claim and lost the answer
  // (docs/provisioning.md, "A lost answer"): the snapshot's part (registry::claim_recovery_allowed:
  // a device of the claim's type and pattern whose only certificate was issued within the last
  // hour), no other client of that id connected here (this connect would disconnect it; the same
  // client, checked again on SIGHUP, passes), the device not
  // connected here with its own certificate since it enrolled (then it had its answer, and its
  // session is not the claim's to take), and a clean start (the claim client never inherits a
  // session of the device's: subscriptions, queued messages). Otherwise `detail` says why not
  // when the id is a device's.
  bool recovery_verdict(const mosquitto* client, registry::ConnectVerdict& verdict,
                        const std::string& client_id, std::string& detail) {
    const Snapshot& snapshot = snapshot_.get();
    const registry::ClaimEntry* claim = snapshot.find_claim(verdict.claim);
    if (claim == nullptr || snapshot.find_device(client_id) == nullptr) return false;
    if (!registry::claim_recovery_allowed(snapshot, *claim, client_id, std::time(nullptr))) {
      detail =
          "client id is a registered device's (not one this claim enrolled within the last "
          "hour)";
      return false;
    }
    // Another client: this connect would take its id over. The same client is being checked
    // again (SIGHUP) and stays.
    if (recovery_.live_other(client, client_id)) {
      detail = "client id is a registered device's, and a client with it is connected";
      return false;
    }
    if (!recovery_.may_recover(client, client_id, Clock::now())) {
      detail = "client id is a registered device's, which connected with its own certificate";
      return false;
    }
    if (!mosquitto_client_clean_session(client)) {
      detail = "client id is a registered device's: asking again needs a clean start";
      return false;
    }
    verdict.reason = registry::ConnectReason::accepted;
    return true;
  }

  // An accepted device connected with `fingerprint`. When the device has another active
  // certificate (a renewal is under way: this is the new certificate, or one of two renewals,
  // or the old one while its renewal waits), the signer is asked, off this thread, to revoke
  // what this one replaces as superseded (it knows which certificate each renewal renews; the
  // snapshot does not, and the old one's connect revokes nothing); and this connection is
  // remembered, so that the disconnect their revocation brings (the watcher kicks a device whose
  // active certificate went) spares it.
  void note_renewed_connect(const std::string& client_id, const std::string& fingerprint) {
    if (!renewed_connections_.empty()) renewed_connections_.erase(client_id);
    if (!snapshot_.loaded()) return;
    auto owner = snapshot_.get().find_certificate(fingerprint);
    if (!owner) return;
    bool another = false;
    for (const auto& c : owner->device->certificates()) {
      if (!c.same_fingerprint(*owner->certificate) &&
          c.status() == registry::CertificateStatus::active) {
        another = true;
      }
    }
    if (!another) return;
    if (renewed_connections_.size() < kMaxRenewedConnections)
      renewed_connections_[client_id] = fingerprint;
    if (!provisioner_ || !superseding_.insert(fingerprint).second) return;
    log(MOSQ_LOG_NOTICE, "device '" + client_id +
                             "' connected while another certificate of it is active: asking to "
                             "supersede what this one replaces");
    plugin::ProvisionRequest request;
    request.client_id = client_id;
    request.kind = plugin::RequestKind::connected;
    request.certificate_sha256 = fingerprint;
    provisioner_->submit(std::move(request));
  }

  // Only a client the connect check accepted gets a device's rights (AcceptedClients::check has
  // the table): a deferred client's check is deferred to Mosquitto's other mechanisms, and any
  // other client is denied, and disconnected on the next tick when it presents a certificate (an
  // open TLS connection). One without a certificate may be an offline session, which must not be
  // kicked (see AcceptedClients::take_kicks); denying its every check is enough.
  int on_acl_check(const mosquitto_evt_acl_check& event) {
    if (!snapshot_.loaded()) return MOSQ_ERR_ACL_DENIED;  // no client was accepted yet
    const char* username = mosquitto_client_username(event.client);
    const char* client_id = mosquitto_client_id(event.client);
    auto standing = clients_.check(event.client, client_id, username, [&] {
      return ossl::Ptr<X509>(static_cast<X509*>(mosquitto_client_certificate(event.client))) !=
             nullptr;
    });
    if (standing.standing == plugin::AcceptedClients::Standing::deferred)
      return MOSQ_ERR_PLUGIN_DEFER;
    if (standing.standing == plugin::AcceptedClients::Standing::not_accepted) {
      refuse_unaccepted(event.client, client_id, username, standing.has_certificate);
      return MOSQ_ERR_ACL_DENIED;
    }
    acl::Access access;
    switch (event.access) {
      case MOSQ_ACL_WRITE:
        access = acl::kPublish;
        break;
      case MOSQ_ACL_READ:
        access = acl::kRead;
        break;
      case MOSQ_ACL_SUBSCRIBE:
        access = acl::kSubscribe;
        break;
      case MOSQ_ACL_UNSUBSCRIBE:
        return MOSQ_ERR_SUCCESS;  // dropping a subscription grants nothing
      default:
        return MOSQ_ERR_ACL_DENIED;
    }
    if (event.topic == nullptr) return MOSQ_ERR_ACL_DENIED;
    if (standing.standing == plugin::AcceptedClients::Standing::claim) {
      return claim_access(standing.device_id, client_id != nullptr ? client_id : "", access,
                          event.topic, event.retain);
    }
    if (event.topic[0] == '$' && std::string_view(event.topic).starts_with(kProvisionTopicPrefix)) {
      return renewal_access(standing.device_id, client_id != nullptr ? client_id : "", access,
                            event.topic, event.retain);
    }
    // The client's rules, bound at its first check after the connect and again after a swap that
    // changed its device's shard or the groups: no device lookup and no placeholder substitution
    // per message, and the last topic's answer kept (client_rules.h). The topic goes as the C
    // string it is: no strlen when the answer is kept.
    const char* const topic = event.topic;
    auto evaluation =
        snapshot_.decide(*standing.rules, standing.device_id, standing.client_id, access, topic);
    const bool allowed = evaluation.decision == acl::Decision::allow;
    if (config_.log_acl == plugin::AclLogging::all ||
        (!allowed && config_.log_acl == plugin::AclLogging::denied)) {
      log(MOSQ_LOG_INFO,
          std::string(allowed ? "allowed " : "denied ") + acl::access_name(access) + " '" +
              event.topic + "' for '" + std::string(standing.device_id) + "' (" +
              (evaluation.rule != nullptr ? "rule " + std::to_string(evaluation.rule->id)
                                          : std::string("no rule")) +
              ")");
    }
    return allowed ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
  }

  // A claim client's topic check: its claim must still be usable (revoked or expired since the
  // connect → denied; used up → it may wait for its answer but not ask again), and the topic one
  // of its own `$provision/<client id>/...` (registry::claim_topic_allowed).
  int claim_access(std::string_view username, std::string_view client_id, acl::Access access,
                   const char* topic, bool retain) {
    std::string_view name = username;
    name.remove_prefix(std::min(name.size(), registry::kClaimUsernamePrefix.size()));
    const registry::ClaimEntry* claim = snapshot_.get().find_claim(name);
    bool allowed = claim != nullptr &&
                   snapshot_.get().claim_standing(*claim, std::time(nullptr)) ==
                       registry::ConnectReason::accepted &&
                   registry::claim_topic_allowed(client_id, access, topic);
    // Used up, it may still ask for the certificate of the id it enrolled: the signer answers a
    // registered id with the certificate issued before (same key) or id_taken, and spends nothing.
    if (allowed && access == acl::kPublish && claim->access.quota_used >= claim->access.quota &&
        snapshot_.get().find_device(client_id) == nullptr)
      allowed = false;
    // A retained request would be kept by the broker (memory, its persistence file) for every id
    // a leaked claim connects with, and handed to any later reader of the topic.
    if (allowed && access == acl::kPublish && retain) allowed = false;
    if (config_.log_acl == plugin::AclLogging::all ||
        (!allowed && config_.log_acl == plugin::AclLogging::denied)) {
      log(MOSQ_LOG_INFO, std::string(allowed ? "allowed " : "denied ") + acl::access_name(access) +
                             " '" + printable(topic) + "' for '" + printable(client_id) +
                             "' (claim '" + std::string(name) + "')");
    }
    return allowed ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
  }

  // A device's `$provision/...` topics are the plugin's alone, never its rules': it may renew
  // itself (publish `$provision/<its id>/renew`, not retained, while the device is active and its
  // client id is its device id) and subscribe to and receive its answers.
  int renewal_access(std::string_view device_id, std::string_view client_id, acl::Access access,
                     const char* topic, bool retain) {
    const registry::SnapshotDevice* device =
        snapshot_.loaded() ? snapshot_.get().find_device(device_id) : nullptr;
    bool allowed = device != nullptr && device->status() == registry::DeviceStatus::active &&
                   client_id == device_id &&
                   registry::renewal_topic_allowed(client_id, access, topic);
    if (allowed && access == acl::kPublish && retain) allowed = false;
    if (config_.log_acl == plugin::AclLogging::all ||
        (!allowed && config_.log_acl == plugin::AclLogging::denied)) {
      log(MOSQ_LOG_INFO, std::string(allowed ? "allowed " : "denied ") + acl::access_name(access) +
                             " '" + printable(topic) + "' for '" + std::string(device_id) +
                             "' (renewal)");
    }
    return allowed ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
  }

  // A claim client's request on `$provision/<its client id>/csr` (the topic check let it through:
  // its claim is usable and has quota left, or the id is registered: a retry), and a device's
  // renewal on `$provision/<its id>/renew` (with the fingerprint of the certificate it connected
  // with), go to the signer off this thread; the answer is published to the client on a later tick
  // (publish_answers). Messages on any other topic, and from any other client, are the broker's as
  // usual.
  int on_message(const mosquitto_evt_message& event) {
    // Every message comes by here: the first character rules out nearly all at once.
    if (event.topic == nullptr || event.topic[0] != '$' ||
        !std::string_view(event.topic).starts_with(kProvisionTopicPrefix))
      return MOSQ_ERR_SUCCESS;
    const char* id = mosquitto_client_id(event.client);
    const char* username = mosquitto_client_username(event.client);
    auto standing = clients_.check(event.client, id, username, [&] {
      return ossl::Ptr<X509>(static_cast<X509*>(mosquitto_client_certificate(event.client))) !=
             nullptr;
    });
    if (id == nullptr) return MOSQ_ERR_SUCCESS;
    const std::string client_id = id;
    plugin::ProvisionRequest request;
    request.client_id = client_id;
    if (standing.standing == plugin::AcceptedClients::Standing::claim) {
      if (event.topic != std::string(kProvisionTopicPrefix) + client_id + "/csr")
        return MOSQ_ERR_SUCCESS;
      std::string_view claim = standing.device_id;
      claim.remove_prefix(std::min(claim.size(), registry::kClaimUsernamePrefix.size()));
      request.claim = std::string(claim);
    } else if (standing.standing == plugin::AcceptedClients::Standing::device) {
      // A device renewing itself (the topic check let it through: its own id, active).
      if (standing.device_id != client_id ||
          event.topic != std::string(kProvisionTopicPrefix) + client_id + "/renew")
        return MOSQ_ERR_SUCCESS;
      ossl::Ptr<X509> cert(static_cast<X509*>(mosquitto_client_certificate(event.client)));
      if (!cert) return MOSQ_ERR_SUCCESS;
      request.kind = plugin::RequestKind::renew;
      request.certificate_sha256 = sha256_fingerprint(cert.get());
    } else {
      return MOSQ_ERR_SUCCESS;
    }
    const auto now = Clock::now();
    // The plugin's own answers go by the same rule as the signer's (deliverable).
    auto own_rejection = [&](std::string_view code, std::string_view message, bool retryable) {
      auto answer = plugin::rejection(client_id, code, message, retryable);
      answer.kind = request.kind;
      held_answers_.push_back({std::move(answer), now});
    };
    if (event.payloadlen > kMaxProvisionRequestBytes) {
      own_rejection("payload_too_large", "the request is over 16384 bytes", false);
    } else if (!provisioner_) {
      own_rejection("signer_unavailable", "this broker has no signer configured", true);
    } else if (auto [it, first] =
                   in_flight_.try_emplace(in_flight_key(request.kind, client_id), now);
               !first && now - it->second < kRequestInFlightLimit) {
      own_rejection("rate_limited",
                    "a request from this client is still with the signer; wait for its answer",
                    true);
    } else {
      it->second = now;
      request.payload = std::string(static_cast<const char*>(event.payload),
                                    event.payload != nullptr ? event.payloadlen : 0);
      provisioner_->submit(std::move(request));
    }
    return MOSQ_ERR_SUCCESS;
  }

  // Mosquitto calls this on every pass of its loop, under load about once per message: each
  // step is skipped unless its cheap check says there is something to do.
  int on_tick() {
    if (handover_.pending()) take_handover();
    if ((provisioner_ && provisioner_->pending()) || !held_answers_.empty()) publish_answers();
    if (clients_.has_work()) kick_unaccepted();
    // The staleness line only reports a change the connect check already acts on (it asks
    // stale() itself): a clock read every kStaleCheckTicks ticks is enough, at most ~0.8 s late
    // on an idle broker (10 ticks/s) and sooner under load.
    if (++ticks_since_stale_check_ < kStaleCheckTicks) return MOSQ_ERR_SUCCESS;
    ticks_since_stale_check_ = 0;
    // Before the first snapshot every client is refused anyway, and said so.
    const bool now_stale = snapshot_.loaded() && stale();
    if (now_stale != reported_stale_) {
      reported_stale_ = now_stale;
      if (now_stale)
        log(MOSQ_LOG_ERR,
            "registry not read for longer than the staleness limit: refusing new connections");
    }
    return MOSQ_ERR_SUCCESS;
  }

  // SIGHUP: Mosquitto has re-read its configuration (and `crlfile`) and re-runs BASIC_AUTH for
  // every connected client. An operator's SIGHUP also reads the registry in full, on the watcher
  // thread; the one the plugin raised itself for a new CRL does not need to.
  int on_reload() {
    if (watcher_->crl() != nullptr) watcher_->crl()->broker_reloaded();
    if (own_sighup_) {
      own_sighup_ = false;
    } else {
      log(MOSQ_LOG_NOTICE, "reload: reading the registry in full");
      watcher_->request_full_reload();
    }
    return MOSQ_ERR_PLUGIN_DEFER;  // let other plugins see RELOAD too
  }

  // Fires for every socket, refused ones included, before the will is published.
  int on_disconnect(const mosquitto_evt_disconnect& event) {
    const bool has_certificate =
        ossl::Ptr<X509>(static_cast<X509*>(mosquitto_client_certificate(event.client))) != nullptr;
    // MQTT 3.x clean session: the session (and the broker's memory for it) ends with the
    // connection.
    const bool session_ends = mosquitto_client_protocol_version(event.client) < 5 &&
                              mosquitto_client_clean_session(event.client);
    clients_.disconnected(event.client, mosquitto_client_id(event.client), has_certificate,
                          session_ends);
    if (const char* id = mosquitto_client_id(event.client); id != nullptr)
      recovery_.disconnected(event.client, id);
    return MOSQ_ERR_SUCCESS;
  }

  // MQTT v5 enhanced authentication would bypass the certificate check in BASIC_AUTH.
  int on_ext_auth(const mosquitto_evt_extended_auth& event) {
    clients_.forget(event.client);
    const char* id = mosquitto_client_id(event.client);
    log(MOSQ_LOG_WARNING, std::string("refused client '") + (id != nullptr ? id : "") +
                              "': MQTT v5 enhanced authentication is not supported; devices "
                              "authenticate with their certificate");
    return MOSQ_ERR_AUTH;
  }

  ~Plugin() {
    provisioner_.reset();  // before the hand-over its workers log to
    worker_.request_stop();
    if (worker_.joinable()) worker_.join();
  }

 private:
  Plugin(plugin::Config config, mosquitto_plugin_id_t* identifier)
      : config_(std::move(config)), identifier_(identifier) {}

  bool stale() const noexcept {
    auto last = Clock::time_point(Clock::duration(last_ok_.load()));
    return Clock::now() - last > config_.staleness_limit;
  }

  void take_handover() {
    auto taken = handover_.take();
    for (const auto& [level, line] : taken.logs) log(mosquitto_level(level), line);
    if (taken.snapshot) {
      // The watcher thread frees the old one, once replace() has compared their shards. A
      // client's rules made stale by the swap answer nothing until bound again, which reads only
      // what the binding holds (its device record) or what the new snapshot shares (its groups
      // when the groups serial is the same): nothing of the old snapshot alone
      // (plugin/client_rules.h).
      snapshot_.replace(std::move(taken.snapshot), handover_);
    }
    for (const auto& device : taken.kicks) {
      const bool claim = device.starts_with(registry::kClaimUsernamePrefix);
      if (!claim && keeps_renewed_connection(device)) continue;
      log(MOSQ_LOG_NOTICE,
          std::string(claim ? "disconnecting the clients of " : "disconnecting ") +
              (claim ? "claim '" + device.substr(registry::kClaimUsernamePrefix.size())
                     : "device '" + device) +
              "': no longer allowed to connect");
      mosquitto_kick_client_by_username(device.c_str(), false);
    }
    if (taken.crl_reload) reload_crl(*taken.crl_reload);
  }

  // A device kicked because an active certificate of it went (revoked as superseded, usually)
  // while it is connected with its renewed certificate, which the new snapshot still accepts:
  // that connection stays. Anything else about the device (revoked, disabled, that certificate
  // gone too) kicks it as usual.
  bool keeps_renewed_connection(const std::string& device) {
    auto it = renewed_connections_.find(device);
    if (it == renewed_connections_.end()) return false;
    auto owner = snapshot_.loaded() ? snapshot_.get().find_certificate(it->second) : std::nullopt;
    const bool keep = owner && owner->device->id() == device &&
                      owner->device->status() == registry::DeviceStatus::active &&
                      owner->certificate->status() == registry::CertificateStatus::active;
    renewed_connections_.erase(it);
    if (keep) {
      log(MOSQ_LOG_INFO, "device '" + device +
                             "' stays connected: it uses its renewed certificate, not the one "
                             "that went");
    }
    return keep;
  }

  // The watcher checked the CRL file as it was at `checked`. If it is still that file, the broker
  // loads it on SIGHUP (it rebuilds the listener's TLS context); if it changed again since, the
  // watcher checks the newer one first. The broker handles the signal on its next loop pass.
  void reload_crl(const plugin::FileStamp& checked) {
    const auto now = plugin::file_stamp(config_.crl_file);
    if (!now || !(*now == checked)) return;
    log(MOSQ_LOG_NOTICE, "CRL " + config_.crl_file + " changed and checked: reloading the broker");
    own_sighup_ = true;
    if (std::raise(SIGHUP) != 0) {
      own_sighup_ = false;
      log(MOSQ_LOG_ERR, "cannot raise SIGHUP to reload the CRL");
    }
  }

  // The key of a request in in_flight_: its kind and the client id.
  static std::string in_flight_key(plugin::RequestKind kind, std::string_view client_id) {
    return (kind == plugin::RequestKind::renew ? "renew:" : "enroll:") + std::string(client_id);
  }

  // Whether `answer` may go to whoever holds its client id now: an enrolment's answer to a claim
  // client only, a renewal's never to a claim client (to the device, connected, or to its
  // session). Answers are addressed by client id alone: a claim client asking again under a
  // device's id (docs/provisioning.md, "A lost answer") and the device itself may follow each
  // other on it while a request is at the signer. Otherwise the answer is dropped; the one that
  // asked is gone and asks again.
  bool deliverable(const plugin::ProvisionAnswer& answer) const {
    const auto holder = recovery_.holder(answer.client_id);
    return answer.kind == plugin::RequestKind::renew
               ? holder != plugin::RecoveryGuard::Holder::claim
               : holder == plugin::RecoveryGuard::Holder::claim;
  }

  // A value the client chose, fit for one log line: control characters replaced, at most 128 bytes.
  static std::string printable(std::string_view value) {
    std::string out(value.substr(0, 128));
    for (char& c : out) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    if (value.size() > 128) out += "...";
    return out;
  }

  // A client whose topic check found it not accepted: one log line per connection (rate-limited),
  // and its disconnect queued for the tick (kicking inside its own callback breaks the broker).
  void refuse_unaccepted(const mosquitto* client, const char* client_id, const char* username,
                         bool has_certificate) {
    const std::string id = client_id != nullptr ? client_id : "";
    const std::string name = username != nullptr ? username : "";
    if (!clients_.refuse(client, id, has_certificate ? name : std::string())) return;
    std::size_t suppressed = 0;
    if (!refusal_log_.allow(Clock::now(), suppressed)) return;
    std::string line = "denied client '" + printable(id) + "' (username '" + printable(name) +
                       "'): the plugin's connect check did not accept it";
    line += has_certificate
                ? "; disconnecting it. Likely cause: use_identity_as_username or "
                  "use_subject_as_username true on its listener, which makes Mosquitto skip the "
                  "plugin's connect check; set both false"
                : " and it has no certificate (a session restored from persistence, or a client "
                  "another plugin authenticated before this one)";
    if (suppressed > 0) line += " (" + std::to_string(suppressed) + " similar lines suppressed)";
    log(MOSQ_LOG_WARNING, line);
  }

  // Each answer to its client alone (a client id given: no subscription needed, no READ check),
  // QoS 1, if the client id's holder is of the kind that asked (deliverable). A client gone
  // meanwhile misses it and asks again. An acceptance waits until the
  // snapshot knows the new device (a refresh or two), so that the device may reconnect with its
  // certificate the moment it has it; at most kHoldAcceptance, then it goes anyway.
  void publish_answers() {
    if (provisioner_ && provisioner_->pending()) {
      const auto until = Clock::now() + kHoldAcceptance;
      for (auto& answer : provisioner_->take()) {
        if (answer.kind == plugin::RequestKind::connected) {
          superseded(answer);
          continue;
        }
        in_flight_.erase(in_flight_key(answer.kind, answer.client_id));
        held_answers_.push_back({std::move(answer), until});
      }
    }
    if (held_answers_.empty()) return;
    const auto now = Clock::now();
    std::vector<HeldAnswer> waiting;
    for (auto& held : held_answers_) {
      // A renewal waits for the new certificate, an enrolment for the new device.
      const bool known =
          snapshot_.loaded() &&
          (held.answer.kind == plugin::RequestKind::renew
               ? snapshot_.get().find_certificate(held.answer.certificate_sha256).has_value()
               : snapshot_.get().find_device(held.answer.client_id) != nullptr);
      if (held.answer.result == "accepted" && now < held.until && !known) {
        waiting.push_back(std::move(held));
        continue;
      }
      publish_answer(held.answer);
    }
    held_answers_.swap(waiting);
    // While an acceptance waits for the snapshot, the watcher reads every refresh interval: the
    // notice of a commit's writes may come before the commit can be read (Watcher::set_eager).
    watcher_->set_eager(!held_answers_.empty());
  }

  // The signer's word on a connected notice: the predecessors are superseded (the change reaches
  // the snapshot on a refresh), or the notice failed and the next connect asks again.
  void superseded(const plugin::ProvisionAnswer& answer) {
    superseding_.erase(answer.certificate_sha256);
    if (answer.result != "connected") {
      log(MOSQ_LOG_WARNING, "cannot supersede the older certificates of device '" +
                                answer.client_id + "' (" + answer.code +
                                "); asking again at its next connect");
    } else if (config_.log_connections) {
      std::string_view body = answer.payload;
      while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.remove_suffix(1);
      log(MOSQ_LOG_INFO, "superseded the older certificates of device '" + answer.client_id +
                             "': " + printable(body));
    }
  }

  void publish_answer(const plugin::ProvisionAnswer& answer) {
    if (!deliverable(answer)) {
      if (config_.log_connections) {
        log(MOSQ_LOG_INFO,
            "dropped the answer to the " +
                std::string(answer.kind == plugin::RequestKind::renew ? "renewal" : "enrolment") +
                " request of client '" + answer.client_id + "' (" + answer.result +
                (answer.code.empty() ? std::string() : " " + answer.code) +
                "): that client is gone, and its client id is not held by a " +
                (answer.kind == plugin::RequestKind::renew ? "device" : "claim client") + " now");
      }
      return;
    }
    const std::string topic =
        std::string(kProvisionTopicPrefix) + answer.client_id + "/" + answer.result;
    const int rc = mosquitto_broker_publish_copy(answer.client_id.c_str(), topic.c_str(),
                                                 static_cast<int>(answer.payload.size()),
                                                 answer.payload.data(), 1, false, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      log(MOSQ_LOG_WARNING, "cannot publish the answer to client '" + answer.client_id +
                                "': " + mosquitto_strerror(rc));
    } else if (config_.log_connections) {
      log(MOSQ_LOG_INFO, "answered client '" + answer.client_id + "': " + answer.result +
                             (answer.code.empty() ? std::string() : " (" + answer.code + ")"));
    }
  }

  void kick_unaccepted() {
    clients_.sweep();
    for (const auto& username : clients_.take_kicks())
      mosquitto_kick_client_by_username(username.c_str(), false);
  }

  plugin::Config config_;
  mosquitto_plugin_id_t* identifier_ = nullptr;
  plugin::AcceptedClients clients_;  // broker thread only
  plugin::LogLimiter refusal_log_{10, std::chrono::seconds(10)};
  plugin::LogLimiter claim_log_{20, std::chrono::seconds(10)};
  plugin::LogLimiter not_loaded_log_{1, std::chrono::seconds(10)};
  plugin::ClaimRateLimiter claim_rate_{config_.claim_connect_rate, config_.claim_connect_burst};
  plugin::BrokerSnapshot snapshot_;  // broker thread only; none until the first read is in
  Handover handover_;
  std::atomic<Clock::rep> last_ok_{0};
  bool reported_stale_ = false;
  static constexpr unsigned kStaleCheckTicks = 8;
  unsigned ticks_since_stale_check_ = 0;  // broker thread only
  bool own_sighup_ = false;               // broker thread only
  std::shared_ptr<plugin::Watcher> watcher_;
  std::jthread worker_;
  struct HeldAnswer {
    plugin::ProvisionAnswer answer;
    Clock::time_point until;
  };
  std::vector<HeldAnswer> held_answers_;  // broker thread only
  // Requests at the signer, by kind and client id (in_flight_key), since when (broker thread
  // only). By kind: a claim client's enrolment under a device's id (asking again after a lost
  // answer) must not hold back that device's renewal once it connects.
  std::unordered_map<std::string, Clock::time_point> in_flight_;
  // Devices connected with a renewed certificate while an older one was still active: client id
  // → that certificate's fingerprint (broker thread only; see note_renewed_connect).
  std::unordered_map<std::string, std::string> renewed_connections_;
  // Certificates whose predecessors the signer is being asked to supersede (broker thread only).
  std::unordered_set<std::string> superseding_;
  // Who is connected, and which recently enrolled devices connected, for claim recovery.
  plugin::RecoveryGuard recovery_{std::chrono::seconds(registry::kClaimRecoveryWindow),
                                  kMaxRecoverySeen};
  std::unique_ptr<plugin::Provisioner> provisioner_;  // null: no signer configured
};

// The C callbacks: catch everything, deny on any failure.
template <class Event, int (Plugin::*Method)(const Event&)>
int callback(int /*event*/, void* event_data, void* userdata) noexcept {
  try {
    return (static_cast<Plugin*>(userdata)->*Method)(*static_cast<const Event*>(event_data));
  } catch (...) {
    return MOSQ_ERR_AUTH;
  }
}

int tick_callback(int, void*, void* userdata) noexcept {
  try {
    return static_cast<Plugin*>(userdata)->on_tick();
  } catch (...) {
    return MOSQ_ERR_SUCCESS;
  }
}

int reload_callback(int, void*, void* userdata) noexcept {
  try {
    return static_cast<Plugin*>(userdata)->on_reload();
  } catch (...) {
    return MOSQ_ERR_PLUGIN_DEFER;
  }
}

// ACL denials must be MOSQ_ERR_ACL_DENIED, not AUTH: wrap the ACL callback separately.
int acl_callback(int, void* event_data, void* userdata) noexcept {
  try {
    return static_cast<Plugin*>(userdata)->on_acl_check(
        *static_cast<const mosquitto_evt_acl_check*>(event_data));
  } catch (...) {
    return MOSQ_ERR_ACL_DENIED;
  }
}

// A failure handling a request must not drop the message with an error: the device gets no
// answer then and asks again.
int message_callback(int, void* event_data, void* userdata) noexcept {
  try {
    return static_cast<Plugin*>(userdata)->on_message(
        *static_cast<const mosquitto_evt_message*>(event_data));
  } catch (...) {
    return MOSQ_ERR_SUCCESS;
  }
}

struct Registration {
  int event;
  MOSQ_FUNC_generic_callback callback;
};
constexpr Registration kCallbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, callback<mosquitto_evt_basic_auth, &Plugin::on_basic_auth>},
    {MOSQ_EVT_EXT_AUTH_START, callback<mosquitto_evt_extended_auth, &Plugin::on_ext_auth>},
    {MOSQ_EVT_ACL_CHECK, acl_callback},
    {MOSQ_EVT_TICK, tick_callback},
    {MOSQ_EVT_DISCONNECT, callback<mosquitto_evt_disconnect, &Plugin::on_disconnect>},
    {MOSQ_EVT_RELOAD, reload_callback},
    {MOSQ_EVT_MESSAGE, message_callback},
};

void unregister_all(mosquitto_plugin_id_t* identifier) {
  for (const auto& r : kCallbacks)
    mosquitto_callback_unregister(identifier, r.event, r.callback, nullptr);
}

// What per_listener() needs to know of the broker (plugin/broker_version.h).
std::optional<std::string> not_mosquitto_2_0() {
  std::optional<plugin::Version> library;
  if (mosquitto_lib_version != nullptr) {
    plugin::Version v;
    mosquitto_lib_version(&v.major, &v.minor, &v.revision);
    library = v;
  }
  return plugin::not_mosquitto_2_0(
      plugin::Version{LIBMOSQUITTO_MAJOR, LIBMOSQUITTO_MINOR, LIBMOSQUITTO_REVISION}, library,
      ::dlsym(RTLD_DEFAULT, "mosquitto_plugin_set_info") != nullptr);
}

// In Mosquitto 2.0 the identifier holds the listener a plugin belongs to: NULL when plugins are
// global, a listener with `per_listener_settings true`, where the broker never sends TICK and this
// plugin could neither apply registry changes nor disconnect revoked devices. The layout is
// private, so it is read only on 2.0.x.
bool per_listener(mosquitto_plugin_id_t* identifier) {
  if (auto seen = not_mosquitto_2_0()) {
    log(MOSQ_LOG_NOTICE, "not Mosquitto 2.0 (" + *seen +
                             "): skipped the per_listener_settings check; it must be false");
    return false;
  }
  return *reinterpret_cast<void* const*>(identifier) != nullptr;
}

// Refuses to start when the broker's configuration makes Mosquitto skip the connect check. A
// configuration this cannot read is let pass: the topic check refuses such clients regardless.
bool identity_setting_allows_start() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto found = plugin::find_identity_setting(plugin::config_files_from_cmdline(cmdline));
  if (!found.ok()) {
    log(MOSQ_LOG_NOTICE, "could not check the broker configuration for use_identity_as_username (" +
                             found.error().message +
                             "); clients the connect check did not accept are refused regardless");
    return true;
  }
  if (!found.value()) return true;
  log(MOSQ_LOG_ERR, "cannot start: " + found.value()->setting + " is true in " +
                        found.value()->file +
                        ": Mosquitto then never calls the plugin's connect check, so revoked and "
                        "unregistered certificates would connect. Set it to false; the plugin sets "
                        "the username to the device id itself");
  return false;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int mosquitto_plugin_version(int supported_version_count,
                                                                    const int* supported_versions) {
  for (int i = 0; i < supported_version_count; ++i) {
    if (supported_versions[i] == 5) return 5;
  }
  return -1;
}

__attribute__((visibility("default"))) int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier,
                                                                 void** userdata,
                                                                 struct mosquitto_opt* options,
                                                                 int option_count) {
  try {
    if (per_listener(identifier)) {
      log(MOSQ_LOG_ERR,
          "per_listener_settings true is not supported: set it to false (the plugin needs the "
          "broker tick)");
      return MOSQ_ERR_NOT_SUPPORTED;
    }
    std::vector<std::pair<std::string, std::string>> pairs;
    for (int i = 0; i < option_count; ++i) {
      pairs.emplace_back(options[i].key != nullptr ? options[i].key : "",
                         options[i].value != nullptr ? options[i].value : "");
    }
    auto config = plugin::parse_config(pairs);
    if (!config.ok()) {
      log(MOSQ_LOG_ERR, "cannot start: " + config.error().message);
      return MOSQ_ERR_INVAL;
    }
    if (!identity_setting_allows_start()) return MOSQ_ERR_INVAL;
    auto plugin = Plugin::create(config.value(), identifier);
    if (!plugin.ok()) {
      log(MOSQ_LOG_ERR, "cannot start: " + plugin.error().message);
      return MOSQ_ERR_UNKNOWN;
    }
    for (const auto& r : kCallbacks) {
      int rc = mosquitto_callback_register(identifier, r.event, r.callback, nullptr,
                                           plugin.value().get());
      if (rc != MOSQ_ERR_SUCCESS) {
        log(MOSQ_LOG_ERR, "cannot register callback for event " + std::to_string(r.event) + ": " +
                              mosquitto_strerror(rc));
        unregister_all(identifier);
        return rc;
      }
    }
    *userdata = plugin.value().release();
    return MOSQ_ERR_SUCCESS;
  } catch (const std::exception& e) {
    log(MOSQ_LOG_ERR, std::string("cannot start: ") + e.what());
  } catch (...) {
    log(MOSQ_LOG_ERR, "cannot start: unknown error");
  }
  return MOSQ_ERR_UNKNOWN;
}

__attribute__((visibility("default"))) int mosquitto_plugin_cleanup(void* userdata,
                                                                    struct mosquitto_opt*, int) {
  try {
    auto* plugin = static_cast<Plugin*>(userdata);
    if (plugin != nullptr) unregister_all(plugin->identifier());
    delete plugin;
  } catch (...) {
  }
  return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
