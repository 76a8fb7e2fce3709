#include "ops/operations.h"

#include <openssl/bn.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>

#include "bundle/manifest.h"
#include "bundle/password.h"
#include "ca/certificate.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/identity.h"
#include "core/ossl.h"
#include "ops/credentials.h"
#include "ops/duration.h"
#include "ops/text.h"
#include "registry/acl.h"
#include "registry/snapshot.h"
#include "registry/snapshot_loader.h"
#include "registry/topic.h"

namespace onboard::ops {
namespace {

using registry::Store;

Status check_device_id(std::string_view id) {
  if (auto problem = device_id_problem(id)) return make_error(Errc::invalid_input, *problem);
  return ok_status();
}

Status check_days(int days) {
  if (days < 1 || days > 3650) return make_error(Errc::invalid_input, "days must be 1 to 3650");
  return ok_status();
}

// The steps every new certificate takes: key material, issuance, the held key's encryption.
// Returns the Issuance and the record for the registry.
struct Prepared {
  Issuance issuance;
  registry::NewCertificate record;
};

Result<Prepared> prepare_certificate(const ca::Authority& ca, std::string_view device_id,
                                     const KeyPlan& plan) {
  const std::string& csr_label = plan.csr_label;
  ONBOARD_CHECK(check_days(plan.days));
  Prepared p;
  ossl::Ptr<EVP_PKEY> public_key;
  if (!plan.csr_pem.empty()) {
    if (plan.hold_passphrase != nullptr)
      return make_error(Errc::invalid_input,
                        "a device that sends a CSR keeps its own key: "
                        "there is no key to hold");
    auto checked = ca::read_device_csr(plan.csr_pem);
    if (!checked.ok())
      return make_error(checked.error().code, csr_label + ": " + checked.error().message);
    if (checked->device_id != device_id) {
      return make_error(Errc::invalid_input, csr_label + ": the CSR's CN is '" +
                                                 checked->device_id + "', not the device id '" +
                                                 std::string(device_id) + "'");
    }
    public_key = std::move(checked->public_key);
  } else {
    if (plan.hold_passphrase != nullptr) {
      if (auto problem = hold_passphrase_problem(*plan.hold_passphrase))
        return make_error(Errc::invalid_input, "hold passphrase: " + *problem);
    }
    ONBOARD_TRY(p.issuance.private_key, ca::generate_key(plan.key_alg));
  }
  const EVP_PKEY* key = public_key ? public_key.get() : p.issuance.private_key.get();
  ONBOARD_TRY(p.issuance.certificate,
              issue_device_certificate(ca, std::string(device_id), key, plan.days));
  p.record = new_certificate(p.issuance.certificate.info, p.issuance.certificate.pem);
  if (p.issuance.private_key && plan.hold_passphrase != nullptr) {
    // Encrypted PKCS#8 only: the store refuses a plaintext key, and the server never keeps one.
    ONBOARD_TRY(Secret encrypted,
                ca::private_key_to_pem(p.issuance.private_key.get(), plan.hold_passphrase));
    p.record.held_key_pem = std::string(encrypted.view());
    p.issuance.private_key.reset();  // held, not handed out: no plaintext copy survives
    p.issuance.key_held = true;
  }
  return p;
}

// Empty: no type. Otherwise the name of the type's group.
Status check_type(std::string_view type) {
  if (type.empty()) return ok_status();
  if (auto problem = registry::group_name_problem(type))
    return make_error(Errc::invalid_input, "type: " + *problem);
  return ok_status();
}

Status check_text(std::string_view field, std::string_view value, std::size_t max_bytes) {
  if (auto problem = text_problem(field, value, max_bytes))
    return make_error(Errc::invalid_input, *problem);
  return ok_status();
}

// Every key and string value of the metadata is free text too: `device show` prints them.
Status check_metadata_strings(const nlohmann::json& value) {
  if (value.is_string())
    return check_text("metadata value", value.get_ref<const std::string&>(), kMaxMetadataBytes);
  if (value.is_object()) {
    for (const auto& [key, member] : value.items()) {
      ONBOARD_CHECK(check_text("metadata key", key, kMaxMetadataBytes));
      ONBOARD_CHECK(check_metadata_strings(member));
    }
  } else if (value.is_array()) {
    for (const auto& member : value) ONBOARD_CHECK(check_metadata_strings(member));
  }
  return ok_status();
}

Status check_metadata(std::string_view metadata) {
  if (metadata.size() > kMaxMetadataBytes) {
    return make_error(Errc::invalid_input, "metadata is " + std::to_string(metadata.size()) +
                                               " bytes long; the limit is " +
                                               std::to_string(kMaxMetadataBytes));
  }
  if (auto problem = registry::metadata_problem(metadata))
    return make_error(Errc::invalid_input, "metadata: " + *problem);
  // metadata_problem parsed it (and bounded its depth) already; this parse cannot fail.
  return check_metadata_strings(nlohmann::json::parse(metadata, nullptr, false));
}

// The descriptive fields, where set: a new device's and an update's.
Status check_descriptive(const std::string* name, const std::string* type,
                         const std::string* location, const std::string* firmware,
                         const std::string* metadata) {
  if (name != nullptr) ONBOARD_CHECK(check_text("name", *name, kMaxNameBytes));
  if (type != nullptr) ONBOARD_CHECK(check_type(*type));
  if (location != nullptr) ONBOARD_CHECK(check_text("location", *location, kMaxLocationBytes));
  if (firmware != nullptr) ONBOARD_CHECK(check_text("firmware", *firmware, kMaxFirmwareBytes));
  if (metadata != nullptr) ONBOARD_CHECK(check_metadata(*metadata));
  return ok_status();
}

const std::string* if_set(const std::optional<std::string>& value) {
  return value ? &*value : nullptr;
}

Status validate_new_device(const registry::NewDevice& d) {
  ONBOARD_CHECK(check_device_id(d.id));
  return check_descriptive(&d.name, &d.type, &d.location, &d.firmware, &d.metadata);
}

// A CA's subject as the registry stores its certificates' issuer (RFC 2253).
std::string subject_of(const X509* ca) { return ca::describe_certificate(ca).subject; }

// Whether `issuer` (a subject as the registry stores it) is a CA whose CRL goes into the CRL file:
// the issuing CA, or an earlier one kept after 'ca rotate'.
bool in_crl_file(const ca::Authority& ca, const std::string& issuer) {
  if (issuer == subject_of(ca.issuer())) return true;
  for (const auto& retired : ca.retired()) {
    if (issuer == subject_of(retired.cert.get())) return true;
  }
  return false;
}

// Whether the CRL file at `path` lists every one of `serials` (hex), in any of its CRLs (one per
// issuing CA). A missing or unreadable CRL lists none of them.
bool crl_lists(const std::filesystem::path& path, const std::vector<std::string>& serials) {
  auto pem = read_file(path);
  if (!pem.ok()) return false;
  auto read = ca::crls_from_pem(*pem);
  if (!read.ok()) return false;
  const auto& crls = *read;
  for (const auto& hex : serials) {
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, hex.c_str()) == 0) {
      ossl::clear_errors();
      return false;
    }
    ossl::Ptr<BIGNUM> bn(raw);
    ossl::Ptr<ASN1_INTEGER> serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    if (!serial) return false;
    const bool listed = std::any_of(crls.begin(), crls.end(), [&](const auto& crl) {
      X509_REVOKED* entry = nullptr;
      return X509_CRL_get0_by_serial(crl.get(), &entry, serial.get()) != 0;
    });
    if (!listed) return false;
  }
  return true;
}

constexpr std::size_t kTokenRandomBytes = 32;
constexpr std::size_t kTokenLength = kTokenPrefix.size() + (kTokenRandomBytes * 8 + 5) / 6;

}  // namespace

Result<std::string> random_id(std::string_view prefix) {
  unsigned char bytes[10];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return make_error(Errc::crypto, "the random generator failed");
  }
  return std::string(prefix) + hex_encode(bytes);
}

registry::NewCertificate new_certificate(const ca::CertificateInfo& info, std::string pem) {
  return registry::NewCertificate{
      info.serial_hex, info.issuer,    info.sha256_fingerprint, info.subject,
      info.not_before, info.not_after, std::move(pem),          {}};
}

std::optional<std::string> hold_passphrase_problem(const Secret& passphrase) {
  return bundle::password_problem(passphrase);
}

// ---- devices ---------------------------------------------------------------------------------

Result<Registered> register_device(Store& store, const ca::Authority& ca,
                                   const RegisterRequest& request, const registry::Actor& actor,
                                   const BeforeRecord& before_record) {
  ONBOARD_CHECK(validate_new_device(request.device));
  // Before any key is made or certificate signed: a duplicate must cost nothing.
  if (auto existing = store.get_device(request.device.id); existing.ok())
    return make_error(Errc::conflict, "device " + request.device.id + " already exists");
  ONBOARD_TRY(auto prepared, prepare_certificate(ca, request.device.id, request.key));
  if (before_record) ONBOARD_CHECK(before_record(prepared.issuance));
  auto device = request.batch_id.empty()
                    ? store.register_device(request.device, prepared.record, actor)
                    : store.register_device_in_batch(request.device, prepared.record,
                                                     request.batch_id, request.batch_line, actor);
  if (!device.ok()) return std::move(device).error();
  return Registered{std::move(device).value(), std::move(prepared.issuance)};
}

Result<registry::DeviceFilter> device_filter(std::string_view status, std::string_view type,
                                             std::size_t limit, std::string_view after) {
  registry::DeviceFilter filter;
  if (!status.empty()) {
    auto parsed = registry::parse_device_status(status);
    if (!parsed)
      return make_error(Errc::invalid_input, "status must be active, disabled or revoked");
    filter.status = parsed;
  }
  if (!type.empty()) {
    if (auto problem = registry::group_name_problem(type))
      return make_error(Errc::invalid_input, "type: " + *problem);
    filter.type = std::string(type);
  }
  if (!after.empty()) {
    if (auto problem = device_id_problem(after))
      return make_error(Errc::invalid_input, "after: " + *problem);
  }
  filter.limit = limit;
  filter.after_id = std::string(after);
  return filter;
}

Result<DevicePage> list_devices(Store& store, const registry::DeviceFilter& filter) {
  DevicePage page;
  ONBOARD_TRY(page.devices, store.list_devices(filter));
  if (filter.limit != 0 && page.devices.size() == filter.limit && !page.devices.empty())
    page.next_after = page.devices.back().id;
  return page;
}

Status filter_expiring(registry::DeviceFilter& filter, std::string_view window,
                       std::string_view option, UnixTime now) {
  if (window.empty()) return ok_status();
  ONBOARD_TRY(const UnixTime within, parse_duration(window, option, 1, 3650 * kDay));
  filter.expiring_by = now + within;
  return ok_status();
}

Result<registry::Device> get_device(Store& store, std::string_view id) {
  ONBOARD_CHECK(check_device_id(id));
  return store.get_device(id);
}

Result<DeviceDetails> device_details(Store& store, std::string_view id) {
  DeviceDetails details;
  ONBOARD_TRY(details.device, get_device(store, id));
  ONBOARD_TRY(details.certificates, store.certificates_of(id));
  ONBOARD_TRY(details.effective_rules, store.rules_for_device(id));
  ONBOARD_TRY(details.held_key, store.held_key(id));
  return details;
}

Result<registry::Device> update_device(Store& store, std::string_view id,
                                       const registry::DeviceUpdate& update,
                                       const registry::Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  if (update.empty()) {
    return make_error(Errc::invalid_input,
                      "nothing to update: give at least one of name, type, location, firmware, "
                      "metadata");
  }
  ONBOARD_CHECK(check_descriptive(if_set(update.name), if_set(update.type), if_set(update.location),
                                  if_set(update.firmware), if_set(update.metadata)));
  return store.update_device(id, update, actor);
}

Result<bool> set_device_enabled(Store& store, std::string_view id, bool enabled,
                                const registry::Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  return store.set_device_enabled(id, enabled, actor);
}

Result<std::uint64_t> rewrite_crl(Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, const std::string& done,
                                  const registry::Actor& actor, UnixTime validity) {
  auto write = [&]() -> Result<std::uint64_t> {
    // Only what this CA issued: a certificate of the root (the intermediate) is on the root's.
    ONBOARD_TRY(auto revoked, store.revoked_certificates(subject_of(ca.issuer())));
    ONBOARD_TRY(std::uint64_t number, store.next_crl_number(actor));
    const UnixTime now = unix_now();
    // Relying parties that cache the CRL must fetch a new one at least this often; a broker that
    // loads it refuses every device once it expires (ops/crl_refresh.h).
    ca::CrlParams params{number, now, now + validity};
    ONBOARD_TRY(auto crl, ca::build_crl(ca.issuer(), *ca.signer(), revoked, params));
    std::string pem = ca::crl_to_pem(crl.get());
    // After 'ca rotate' the devices of each kept earlier issuing CA are still in use, and a broker
    // with `crlfile` refuses a device whose issuer has no CRL in the file: one CRL per issuing
    // CA, the current one's first (what a reader of a single CRL gets), all under one number.
    for (const auto& retired : ca.retired()) {
      if (!retired.signer)
        return make_error(Errc::internal, "a kept issuing CA's key is not loaded");
      ONBOARD_TRY(auto kept, store.revoked_certificates(subject_of(retired.cert.get())));
      ONBOARD_TRY(auto older, ca::build_crl(retired.cert.get(), *retired.signer, kept, params));
      pem += ca::crl_to_pem(older.get());
    }
    ONBOARD_CHECK(write_file_atomic(crl_path, pem, 0644, Overwrite::replace));
    return number;
  };
  auto number = write();
  if (!number.ok() && !done.empty()) {
    return make_error(number.error().code,
                      done + " in the registry, but the CRL was not rewritten: " +
                          number.error().message + "; fix that and run 'onboardctl crl'");
  }
  return number;
}

Result<bool> crl_lists_revoked_of(Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, std::string_view id) {
  ONBOARD_TRY(auto certificates, store.certificates_of(id));
  std::vector<std::string> serials;
  for (const auto& c : certificates) {
    if (c.status == registry::CertificateStatus::revoked && in_crl_file(ca, c.issuer))
      serials.push_back(c.serial_hex);
  }
  return crl_lists(crl_path, serials);
}

Result<Revoked> revoke_device(Store& store, const ca::Authority& ca,
                              const std::filesystem::path& crl_path, std::string_view id,
                              RevocationReason reason, const registry::Actor& actor) {
  ONBOARD_CHECK(check_device_id(id));
  Revoked revoked;
  ONBOARD_TRY(revoked.outcome, store.revoke_device(id, reason, actor));
  if (revoked.outcome.already_revoked) {
    // A revoke stopped between its commit and the CRL rewrite (killed, disk full) left the CRL
    // without these certificates; the rerun is how it gets finished, so it rewrites the CRL then.
    ONBOARD_TRY(const bool listed, crl_lists_revoked_of(store, ca, crl_path, id));
    if (!listed) {
      ONBOARD_TRY(revoked.crl_number,
                  rewrite_crl(store, ca, crl_path, "revoked " + std::string(id), actor));
    }
    return revoked;
  }
  ONBOARD_TRY(revoked.crl_number,
              rewrite_crl(store, ca, crl_path, "revoked " + std::string(id), actor));
  return revoked;
}

// ---- certificates ----------------------------------------------------------------------------

Result<std::vector<registry::Certificate>> list_certificates(Store& store,
                                                             std::string_view device_id) {
  ONBOARD_TRY(auto device, get_device(store, device_id));  // not_found for an unknown device
  (void)device;
  return store.certificates_of(device_id);
}

Result<Renewed> renew_certificate(Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, std::string_view device_id,
                                  const KeyPlan& key, const registry::Actor& actor,
                                  const BeforeRecord& before_record) {
  ONBOARD_TRY(auto device, get_device(store, device_id));
  const std::string id(device_id);
  if (device.status == registry::DeviceStatus::revoked)
    return make_error(Errc::conflict,
                      "device " + id + " is revoked; register a new device instead");
  ONBOARD_TRY(auto prepared, prepare_certificate(ca, id, key));
  if (before_record) ONBOARD_CHECK(before_record(prepared.issuance));
  Renewed renewed;
  ONBOARD_TRY(renewed.added, store.add_certificate(id, prepared.record, true, actor));
  renewed.issuance = std::move(prepared.issuance);
  auto number = rewrite_crl(store, ca, crl_path, "renewed " + id, actor);
  if (number.ok())
    renewed.crl_number = *number;
  else
    renewed.crl_error = std::move(number).error();
  return renewed;
}

// ---- certificates of every kind --------------------------------------------------------------

Result<registry::Certificate> record_issued(Store& store, registry::CertificateKind kind,
                                            const ca::IssuedCertificate& issued,
                                            const registry::Actor& actor) {
  return store.record_certificate(kind, new_certificate(issued.info, issued.pem), actor);
}

Result<registry::CertificateFilter> certificate_filter(std::string_view kind,
                                                       std::string_view status) {
  registry::CertificateFilter filter;
  if (!kind.empty()) {
    filter.kind = registry::parse_certificate_kind(kind);
    if (!filter.kind)
      return make_error(Errc::invalid_input, "kind must be device, server, other or claim");
  }
  if (status == "active") {
    filter.status = registry::CertificateStatus::active;
  } else if (status == "revoked") {
    filter.status = registry::CertificateStatus::revoked;
  } else if (!status.empty()) {
    return make_error(Errc::invalid_input, "status must be active or revoked");
  }
  return filter;
}

Result<std::vector<registry::Certificate>> list_all_certificates(
    Store& store, const registry::CertificateFilter& filter) {
  return store.list_certificates(filter);
}

Result<registry::Certificate> find_certificate(Store& store, std::string_view name) {
  if (name.starts_with("sha256:")) name.remove_prefix(7);
  std::size_t digits = 0;
  for (char c : name) digits += c == ':' ? 0 : 1;
  // A serial has at most 40 hex digits (RFC 5280), a SHA-256 fingerprint 64: never ambiguous.
  if (digits == 64) return store.find_certificate_by_fingerprint(name);
  return store.find_certificate_by_serial(name);
}

Result<CertificateRevoked> revoke_certificate(Store& store, const ca::Authority& ca,
                                              const std::filesystem::path& crl_path,
                                              std::string_view name, RevocationReason reason,
                                              const registry::Actor& actor) {
  ONBOARD_TRY(auto found, find_certificate(store, name));
  CertificateRevoked revoked;
  ONBOARD_TRY(revoked.outcome, store.revoke_certificate(found.sha256_fingerprint, reason, actor));
  const std::string& issuer = revoked.outcome.certificate.issuer;
  if (revoked.outcome.already_revoked) {
    // As in revoke_device: finish a revoke that was stopped before its CRL was rewritten.
    if (in_crl_file(ca, issuer) && !crl_lists(crl_path, {revoked.outcome.certificate.serial_hex})) {
      ONBOARD_TRY(
          revoked.crl_number,
          rewrite_crl(store, ca, crl_path, "revoked certificate " + found.serial_hex, actor));
    }
    return revoked;
  }
  if (in_crl_file(ca, issuer)) {
    ONBOARD_TRY(revoked.crl_number,
                rewrite_crl(store, ca, crl_path, "revoked certificate " + found.serial_hex, actor));
  } else if (ca.has_intermediate() && issuer == subject_of(ca.root())) {
    revoked.needs_root_crl = true;
  }
  return revoked;
}

Result<std::uint64_t> rewrite_root_crl(Store& store, const ca::Authority& ca,
                                       const ca::Signer& root_signer,
                                       const std::filesystem::path& path,
                                       const registry::Actor& actor) {
  if (!ca.has_intermediate()) {
    return make_error(Errc::invalid_input,
                      "this CA has no intermediate: the root's CRL is the CRL ('onboardctl crl')");
  }
  ONBOARD_TRY(auto revoked, store.revoked_certificates(subject_of(ca.root())));
  ONBOARD_TRY(std::uint64_t number, store.next_root_crl_number(actor));
  const UnixTime now = unix_now();
  ca::CrlParams params{number, now, now + kRootCrlLifetime};
  ONBOARD_TRY(auto crl, ca::build_crl(ca.root(), root_signer, revoked, params));
  ONBOARD_CHECK(write_file_atomic(path, ca::crl_to_pem(crl.get()), 0644, Overwrite::replace));
  return number;
}

// ---- ACL rules -------------------------------------------------------------------------------

Result<registry::RuleRecord> add_rule(Store& store, const RuleRequest& request,
                                      const registry::Actor& actor) {
  if (request.subject.empty())
    return make_error(Errc::invalid_input, "a rule needs a device or a group");
  if (request.subject_kind == registry::SubjectKind::device) {
    ONBOARD_CHECK(check_device_id(request.subject));
  } else if (auto problem = registry::group_name_problem(request.subject)) {
    return make_error(Errc::invalid_input, "group: " + *problem);
  }
  auto access = acl::parse_access(request.access);
  if (!access)
    return make_error(Errc::invalid_input, "access must be publish, subscribe, read or readwrite");
  if (auto problem = acl::pattern_problem(request.topic))
    return make_error(Errc::invalid_input, "topic: " + *problem);
  if (request.priority < -kMaxRulePriority || request.priority > kMaxRulePriority)
    return make_error(Errc::invalid_input, "priority must be within ±1000000");
  registry::NewRule rule{request.subject_kind, request.subject, request.topic, *access,
                         request.effect,       request.priority};
  return store.add_rule(rule, actor);
}

Status remove_rule(Store& store, std::int64_t rule_id, const registry::Actor& actor) {
  if (rule_id <= 0)
    return make_error(Errc::invalid_input, "rule id must be a positive whole number");
  return store.remove_rule(rule_id, actor);
}

Status remove_rule_of(Store& store, registry::SubjectKind kind, std::string_view subject,
                      std::int64_t rule_id, const registry::Actor& actor) {
  ONBOARD_TRY(auto rules, list_rules(store, kind, subject));
  for (const auto& rule : rules) {
    if (rule.id == rule_id) return remove_rule(store, rule_id, actor);
  }
  return make_error(Errc::not_found, "rule " + std::to_string(rule_id) + " of " +
                                         std::string(to_string(kind)) + " " + std::string(subject) +
                                         " does not exist");
}

Result<std::vector<registry::RuleRecord>> list_rules(Store& store, registry::SubjectKind kind,
                                                     std::string_view subject) {
  if (kind == registry::SubjectKind::device) {
    ONBOARD_CHECK(check_device_id(subject));
  } else if (auto problem = registry::group_name_problem(subject)) {
    return make_error(Errc::invalid_input, "group: " + *problem);
  }
  return store.rules_for_subject(kind, subject);
}

Result<std::int64_t> parse_rule_id(std::string_view text) {
  std::int64_t rule_id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), rule_id);
  if (ec != std::errc() || end != text.data() + text.size() || rule_id <= 0)
    return make_error(Errc::invalid_input, "rule id must be a positive whole number");
  return rule_id;
}

Result<AccessExplanation> explain_access(Store& store, std::string_view device_id,
                                         std::string_view access_text, std::string_view topic) {
  auto access = acl::parse_access(access_text);
  if (!access ||
      (*access != acl::kPublish && *access != acl::kSubscribe && *access != acl::kRead)) {
    return make_error(Errc::invalid_input, "access must be one of publish, subscribe or read");
  }
  // The broker refuses these before any ACL check; "no rule matches" would mislead.
  if (*access == acl::kSubscribe ? !acl::is_valid_filter(topic) : !acl::is_valid_topic(topic)) {
    return make_error(Errc::invalid_input,
                      *access == acl::kSubscribe
                          ? "topic is not a valid subscription filter ('+' and '#' must be whole "
                            "levels, '#' the last)"
                          : "topic is not a valid topic name (empty, or holds '+' or '#')");
  }
  ONBOARD_CHECK(check_device_id(device_id));
  ONBOARD_TRY(auto device, registry::load_device_access(store, device_id));
  if (!device)
    return make_error(Errc::not_found, "device " + std::string(device_id) + " does not exist");
  ONBOARD_TRY(auto default_group, registry::load_group_access(store, registry::kDefaultGroup));
  std::optional<registry::GroupAccess> type_group;
  if (!device->type.empty()) {
    ONBOARD_TRY(type_group, registry::load_group_access(store, device->type));
  }
  // The same decision function the broker plugin uses.
  auto evaluation =
      registry::check_device_access(*device, type_group ? &*type_group : nullptr, &default_group,
                                    device_id, device_id, static_cast<acl::Access>(*access), topic);
  AccessExplanation out;
  out.device = std::string(device_id);
  out.access = std::string(access_text);
  out.topic = std::string(topic);
  out.allowed = evaluation.decision == acl::Decision::allow;
  const std::string status(to_string(device->status));
  if (status != "active") {
    out.reason = "the device is " + status;
  } else if (evaluation.rule == nullptr) {
    out.reason = "no rule matches (default deny)";
  } else {
    out.reason = "rule " + std::to_string(evaluation.rule->id) + ": " +
                 std::string(acl::to_string(evaluation.rule->effect)) + " " +
                 acl::access_name(evaluation.rule->access) + " '" +
                 std::string(evaluation.rule->pattern.text()) + "' priority " +
                 std::to_string(evaluation.rule->priority);
  }
  if (evaluation.rule != nullptr) out.rule_id = evaluation.rule->id;
  return out;
}

// ---- groups, audit ---------------------------------------------------------------------------

Result<registry::Group> create_group(Store& store, std::string_view name,
                                     std::string_view description, const registry::Actor& actor) {
  if (auto problem = registry::group_name_problem(name))
    return make_error(Errc::invalid_input, *problem);
  ONBOARD_CHECK(check_text("description", description, kMaxDescriptionBytes));
  return store.create_group(name, description, actor);
}

Result<std::vector<registry::Group>> list_groups(Store& store) { return store.list_groups(); }

Result<std::vector<registry::AuditEvent>> list_audit(Store& store, std::size_t limit,
                                                     std::int64_t after_seq) {
  if (after_seq < 0) return make_error(Errc::invalid_input, "after must not be negative");
  return store.audit_list(limit, after_seq);
}

// ---- API tokens ------------------------------------------------------------------------------

Result<std::string> token_hash(std::string_view token) { return sha256_hex(token); }

Result<CreatedToken> create_api_token(Store& store, std::string_view name, std::string_view role,
                                      const registry::Actor& actor) {
  if (auto problem = device_id_problem(name))
    return make_error(Errc::invalid_input, "token name: " + *problem);
  auto parsed_role = registry::parse_api_role(role);
  if (!parsed_role) return make_error(Errc::invalid_input, "role must be operator or reader");
  std::array<unsigned char, kTokenRandomBytes> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1)
    return make_error(Errc::crypto, "the random generator failed");
  Secret plaintext(std::string(kTokenPrefix) + base64url_encode(random));
  OPENSSL_cleanse(random.data(), random.size());
  ONBOARD_TRY(std::string hash, token_hash(plaintext.view()));
  ONBOARD_TRY(auto token, store.create_api_token(name, *parsed_role, hash, actor));
  return CreatedToken{std::move(token), std::move(plaintext)};
}

namespace {
constexpr std::string_view kCertificateCredential = "client-certificate:";
}

Result<registry::ApiToken> create_certificate_credential(Store& store, std::string_view name,
                                                         std::string_view role,
                                                         std::string_view certificate_pem,
                                                         const registry::Actor& actor) {
  if (auto problem = device_id_problem(name))
    return make_error(Errc::invalid_input, "token name: " + *problem);
  auto parsed_role = registry::parse_api_role(role);
  if (!parsed_role) return make_error(Errc::invalid_input, "role must be operator or reader");
  auto cert = ca::certificate_from_pem(certificate_pem);
  if (!cert.ok())
    return make_error(Errc::invalid_input, "client certificate: " + cert.error().message);
  ONBOARD_TRY(std::string hash,
              token_hash(std::string(kCertificateCredential) + sha256_fingerprint(cert->get())));
  return store.create_api_token(name, *parsed_role, hash, actor);
}

Result<registry::ApiToken> authenticate_certificate(Store& store,
                                                    std::string_view sha256_fingerprint_hex) {
  ONBOARD_TRY(std::string hash, token_hash(std::string(kCertificateCredential) +
                                           std::string(sha256_fingerprint_hex)));
  return store.find_api_token(hash);
}

Result<std::vector<registry::ApiToken>> list_api_tokens(Store& store) {
  return store.list_api_tokens();
}

Result<bool> revoke_api_token(Store& store, std::string_view name, const registry::Actor& actor) {
  if (auto problem = device_id_problem(name))
    return make_error(Errc::invalid_input, "token name: " + *problem);
  return store.revoke_api_token(name, actor);
}

Result<registry::ApiToken> authenticate_token(Store& store, std::string_view token) {
  // Shape only (public knowledge); the secret part is never compared, only hashed and looked up.
  if (token.size() != kTokenLength || !token.starts_with(kTokenPrefix))
    return make_error(Errc::not_found, "unknown token");
  ONBOARD_TRY(std::string hash, token_hash(token));
  return store.find_api_token(hash);
}

}  // namespace onboard::ops

namespace onboard::ops {

Status check_new_device(const registry::NewDevice& device) { return validate_new_device(device); }

}  // namespace onboard::ops
