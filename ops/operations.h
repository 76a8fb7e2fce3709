// The registry operations, once: plain requests in, Result out, nothing printed. The CLI commands
// (cli/*_commands.cpp) and the REST server (rest/routes.cpp) both call these, so a rule (a
// check, an order of steps, what is audited) lives in exactly one place.
//
// Every function validates its input and names the offending field in neutral words ("type: ...",
// "topic: ..."); a front end may check earlier in its own words (a CLI option, a JSON field).
// Writes go through the Store, one transaction each, audited under the given Actor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ca/authority.h"
#include "ca/keys.h"
#include "core/secret.h"
#include "ops/crl_refresh.h"
#include "registry/store.h"

namespace onboard::ops {

// The registry's record of a certificate the CA just issued, from describe_certificate() and its
// PEM.
registry::NewCertificate new_certificate(const ca::CertificateInfo& info, std::string pem);

// A random id for a bundle or a batch: `prefix` and 80 bits in lower-case hex, which sort nowhere
// in particular and cannot be guessed from each other.
Result<std::string> random_id(std::string_view prefix);

// ---- certificates and their keys -------------------------------------------------------------

// Where a new certificate's key comes from: the device's CSR (its key never leaves it), else a
// key made here -- handed to the caller, or, with hold_passphrase, kept in the registry encrypted
// under that passphrase until the device is packaged into a bundle.
struct KeyPlan {
  std::string csr_pem;
  ca::KeyAlg key_alg = ca::KeyAlg::rsa2048;
  const Secret* hold_passphrase = nullptr;
  int days = 365;
  std::string csr_label = "csr";  // how error messages name the CSR: a field, a file name
};

struct Issuance {
  ca::IssuedCertificate certificate;
  // Made here and not held: the only copy, which the caller must hand out (or lose).
  ossl::Ptr<EVP_PKEY> private_key;
  bool key_held = false;
};

// Runs once the certificate is issued (and its key made), right before the registry write: the
// slow work (key generation, signing) is done, the store is not touched yet. The CLI writes the
// key and certificate files here, so a key is never recorded that the operator did not get; the
// REST server takes its write turn here, so writers queue for the store, not for the signing.
// An error stops the operation and nothing is recorded.
using BeforeRecord = std::function<Status(const Issuance&)>;

// Why `passphrase` may not protect held keys (bundle::password_problem), or nullopt.
std::optional<std::string> hold_passphrase_problem(const Secret& passphrase);

// ---- devices ---------------------------------------------------------------------------------

// Free text is bounded and printable (text_problem: valid UTF-8, no C0/C1 control character,
// no DEL), checked here for every front end, so that nothing stored can move an operator's
// cursor or forge a row when shown. Limits in bytes of UTF-8. Metadata's limit is on its JSON
// text as given; its keys and string values must be printable too (JSON output escapes them, but
// `device show` prints the JSON text as it is).
inline constexpr std::size_t kMaxNameBytes = 128;
inline constexpr std::size_t kMaxLocationBytes = 128;
inline constexpr std::size_t kMaxFirmwareBytes = 64;
inline constexpr std::size_t kMaxMetadataBytes = 4096;
inline constexpr std::size_t kMaxDescriptionBytes = 256;  // a group's

// The checks register_device applies to a new device (id, free text, metadata), for the other
// ways in (enrolment over MQTT).
Status check_new_device(const registry::NewDevice& device);

struct RegisterRequest {
  registry::NewDevice device;
  KeyPlan key;
  std::string batch_id;         // when not empty, the device joins this (existing) batch
  std::int64_t batch_line = 0;  // and this is where it came from (a CSV line)
};
struct Registered {
  registry::Device device;
  Issuance issuance;
};
// Validates the device (id, type, metadata), refuses a duplicate id (conflict) before any key is
// made, issues the certificate, calls before_record, and records device and certificate in one
// step.
Result<Registered> register_device(registry::Store& store, const ca::Authority& ca,
                                   const RegisterRequest& request, const registry::Actor& actor,
                                   const BeforeRecord& before_record = {});

struct DevicePage {
  std::vector<registry::Device> devices;
  std::optional<std::string> next_after;  // the id to continue after, when there may be more
};
// `status` empty or active|disabled|revoked; `type` empty or a type. limit 0: everything.
Result<registry::DeviceFilter> device_filter(std::string_view status, std::string_view type,
                                             std::size_t limit, std::string_view after);
Result<DevicePage> list_devices(registry::Store& store, const registry::DeviceFilter& filter);
// Narrows `filter` to devices whose current certificate expires within `window` (a duration,
// ops/duration.h: "30d") of `now`, or has expired. `option` names the flag or query parameter in
// the error message. An empty window changes nothing.
Status filter_expiring(registry::DeviceFilter& filter, std::string_view window,
                       std::string_view option, UnixTime now);

struct DeviceDetails {
  registry::Device device;
  std::vector<registry::Certificate> certificates;
  std::vector<registry::RuleRecord> effective_rules;
  std::optional<registry::HeldKey> held_key;  // the server's encrypted copy of the key, if any
};
Result<registry::Device> get_device(registry::Store& store, std::string_view id);
Result<DeviceDetails> device_details(registry::Store& store, std::string_view id);

// false when the device already was in that state (nothing written).
Result<bool> set_device_enabled(registry::Store& store, std::string_view id, bool enabled,
                                const registry::Actor& actor);

// Changes the descriptive fields that are set (name, type, location, firmware, metadata),
// validated as at registration; returns the device as it now is. Nothing set is invalid_input,
// an unknown device not_found, a revoked one conflict (its record is final). A new type moves the
// device into that type's group, live on a running broker.
Result<registry::Device> update_device(registry::Store& store, std::string_view id,
                                       const registry::DeviceUpdate& update,
                                       const registry::Actor& actor);

// Rewrites the CRL after a committed change. On failure the registry has changed already, so the
// message says both, and the remedy ('onboardctl crl').
// The CRL is in force for `validity` seconds (its next update).
Result<std::uint64_t> rewrite_crl(registry::Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, const std::string& done,
                                  const registry::Actor& actor,
                                  UnixTime validity = kDefaultCrlValidity);

// Whether the CRL file at `crl_path` lists every revoked certificate of device `id` that belongs
// in it (the issuing CA's and retired issuers'): how a rerun finds a change that stopped between
// its commit and its CRL rewrite.
Result<bool> crl_lists_revoked_of(registry::Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, std::string_view id);

struct Revoked {
  registry::RevokeOutcome outcome;
  // When a CRL was written: always for a new revocation; for an already revoked device only when
  // the CRL on disk did not list its certificates yet (a revoke stopped before its CRL rewrite).
  std::optional<std::uint64_t> crl_number;
};
Result<Revoked> revoke_device(registry::Store& store, const ca::Authority& ca,
                              const std::filesystem::path& crl_path, std::string_view id,
                              RevocationReason reason, const registry::Actor& actor);

// ---- certificates ----------------------------------------------------------------------------

Result<std::vector<registry::Certificate>> list_certificates(registry::Store& store,
                                                             std::string_view device_id);

struct Renewed {
  Issuance issuance;
  registry::AddedCertificate added;
  std::uint64_t crl_number = 0;
  // The renewal is recorded even when the CRL rewrite then fails: the caller must still hand
  // the new certificate out, and report this.
  std::optional<Error> crl_error;
};
// A new certificate for an active or disabled device; its active ones are superseded (revoked)
// and the CRL rewritten.
Result<Renewed> renew_certificate(registry::Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, std::string_view device_id,
                                  const KeyPlan& key, const registry::Actor& actor,
                                  const BeforeRecord& before_record = {});

// ---- certificates of every kind (the CA's record) ---------------------------------------------

// Records a certificate the CA signed outside the device registry (`ca issue`, `ca issue-server`,
// the issuing intermediate): kind server or other.
Result<registry::Certificate> record_issued(registry::Store& store, registry::CertificateKind kind,
                                            const ca::IssuedCertificate& issued,
                                            const registry::Actor& actor);
// `kind` empty or device|server|other; `status` empty or active|revoked.
Result<registry::CertificateFilter> certificate_filter(std::string_view kind,
                                                       std::string_view status);
Result<std::vector<registry::Certificate>> list_all_certificates(
    registry::Store& store, const registry::CertificateFilter& filter);
// A certificate named by its SHA-256 fingerprint (64 hex digits, colons and a "sha256:" prefix
// allowed) or by its serial (up to 40 hex digits).
Result<registry::Certificate> find_certificate(registry::Store& store, std::string_view name);

struct CertificateRevoked {
  registry::CertificateRevokeOutcome outcome;
  std::optional<std::uint64_t> crl_number;  // the issuing CA's CRL, when this call rewrote it
  // Issued by the root (the intermediate): the root's CRL lists it, and only a holder of the
  // root key can rewrite that ('onboardctl crl' with the root key present).
  bool needs_root_crl = false;
};
// Revokes one certificate of any kind (a device's too: its device keeps its status) and
// rewrites the CRL of the CA that issued it when that is the issuing CA. Idempotent; for an
// already revoked certificate the CRL is rewritten only when it does not list it yet.
Result<CertificateRevoked> revoke_certificate(registry::Store& store, const ca::Authority& ca,
                                              const std::filesystem::path& crl_path,
                                              std::string_view name, RevocationReason reason,
                                              const registry::Actor& actor);

// The root CA's CRL: a year ahead, because a root key kept offline is brought out seldom; it
// lists only what the root issued (the intermediate), which changes rarely, and relying parties
// re-check it at nextUpdate. Only with an issuing intermediate (otherwise the root's CRL is the
// one rewrite_crl writes).
inline constexpr UnixTime kRootCrlLifetime = 365 * 86400;
Result<std::uint64_t> rewrite_root_crl(registry::Store& store, const ca::Authority& ca,
                                       const ca::Signer& root_signer,
                                       const std::filesystem::path& path,
                                       const registry::Actor& actor);

// ---- ACL rules -------------------------------------------------------------------------------

struct RuleRequest {
  registry::SubjectKind subject_kind = registry::SubjectKind::group;
  std::string subject;
  std::string access;  // publish|subscribe|read|readwrite
  std::string topic;
  registry::RuleEffect effect = registry::RuleEffect::allow;
  int priority = 0;
};
inline constexpr int kMaxRulePriority = 1000000;

Result<registry::RuleRecord> add_rule(registry::Store& store, const RuleRequest& request,
                                      const registry::Actor& actor);
Status remove_rule(registry::Store& store, std::int64_t rule_id, const registry::Actor& actor);
// Removes rule `rule_id` only if it belongs to that subject (not_found otherwise): a REST path
// /v1/devices/a/acl/7 must not delete group b's rule 7.
Status remove_rule_of(registry::Store& store, registry::SubjectKind kind, std::string_view subject,
                      std::int64_t rule_id, const registry::Actor& actor);
Result<std::vector<registry::RuleRecord>> list_rules(registry::Store& store,
                                                     registry::SubjectKind kind,
                                                     std::string_view subject);
// A positive rule id from text, or invalid_input.
Result<std::int64_t> parse_rule_id(std::string_view text);

struct AccessExplanation {
  std::string device, access, topic;
  bool allowed = false;
  std::string reason;
  std::optional<std::int64_t> rule_id;
};
// The decision the broker would make, with the same decision function, and why.
Result<AccessExplanation> explain_access(registry::Store& store, std::string_view device_id,
                                         std::string_view access, std::string_view topic);

// ---- groups, audit ---------------------------------------------------------------------------

Result<registry::Group> create_group(registry::Store& store, std::string_view name,
                                     std::string_view description, const registry::Actor& actor);
Result<std::vector<registry::Group>> list_groups(registry::Store& store);
Result<std::vector<registry::AuditEvent>> list_audit(registry::Store& store, std::size_t limit,
                                                     std::int64_t after_seq);

// ---- API tokens ------------------------------------------------------------------------------

inline constexpr std::string_view kTokenPrefix = "onb_";
// SHA-256, lower-case hex: the only form in which a token is stored or looked up.
Result<std::string> token_hash(std::string_view token);

struct CreatedToken {
  registry::ApiToken token;
  Secret plaintext;  // "onb_" + base64url(32 CSPRNG bytes): shown once, never stored
};
Result<CreatedToken> create_api_token(registry::Store& store, std::string_view name,
                                      std::string_view role, const registry::Actor& actor);
// The same kind of credential bound to a client certificate instead of a bearer secret, for
// `serve --client-ca`: stored as the SHA-256 of "client-certificate:" + the certificate's SHA-256
// fingerprint, which no bearer token can hash to (those start with "onb_"). Nothing secret is
// printed; revoke it like any token.
Result<registry::ApiToken> create_certificate_credential(registry::Store& store,
                                                         std::string_view name,
                                                         std::string_view role,
                                                         std::string_view certificate_pem,
                                                         const registry::Actor& actor);
// The credential of a client certificate the TLS layer verified; not_found when none is
// registered (a device's certificate, for one) or it was revoked.
Result<registry::ApiToken> authenticate_certificate(registry::Store& store,
                                                    std::string_view sha256_fingerprint);
Result<std::vector<registry::ApiToken>> list_api_tokens(registry::Store& store);
Result<bool> revoke_api_token(registry::Store& store, std::string_view name,
                              const registry::Actor& actor);
// The token's record if it is known and not revoked; not_found otherwise (also for text that
// cannot be a token), looked up by hash so no comparison depends on the secret.
Result<registry::ApiToken> authenticate_token(registry::Store& store, std::string_view token);

}  // namespace onboard::ops
