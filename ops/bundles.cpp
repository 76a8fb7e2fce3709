#include "ops/bundles.h"

#include <openssl/x509.h>

#include <algorithm>
#include <set>
#include <system_error>

#include "bundle/password.h"
#include "bundle/zip.h"
#include "ca/certificate.h"
#include "ca/keys.h"
#include "core/digest.h"
#include "core/files.h"
#include "core/identity.h"
#include "ops/operations.h"

namespace onboard::ops {
namespace {

Result<PackedDevice> packable_device(registry::Store& store, const std::string& id) {
  if (auto problem = device_id_problem(id)) return make_error(Errc::invalid_input, *problem);
  ONBOARD_TRY(auto device, store.get_device(id));
  if (device.status != registry::DeviceStatus::active) {
    return make_error(Errc::conflict,
                      "device " + id + " is " + std::string(to_string(device.status)) + "; a " +
                          std::string(to_string(device.status)) + " device cannot be bundled");
  }
  ONBOARD_TRY(auto certificates, store.certificates_of(id));
  const registry::Certificate* active = nullptr;
  for (const auto& c : certificates) {
    if (c.status == registry::CertificateStatus::active) active = &c;  // the newest wins
  }
  if (active == nullptr) {
    return make_error(Errc::conflict, "device " + id + " has no active certificate to bundle");
  }
  ONBOARD_TRY(auto held, store.held_key(id));
  if (held && held->certificate_sha256 != active->sha256_fingerprint) {
    return make_error(Errc::corrupt, "device " + id +
                                         "'s held key belongs to another certificate than its "
                                         "active one; renew the certificate");
  }
  return PackedDevice{std::move(device), *active, std::move(held)};
}

// The held key, decrypted and checked against the certificate, as plaintext PKCS#8 PEM.
Result<Secret> unlock_held_key(const PackedDevice& p, const Secret& passphrase) {
  auto key = ca::private_key_from_pem(p.held->encrypted_pem, &passphrase);
  if (!key.ok()) {
    if (key.error().code == Errc::bad_passphrase) {
      return make_error(Errc::bad_passphrase, "cannot decrypt the held key of " + p.device.id +
                                                  ": wrong hold passphrase");
    }
    return std::move(key).error();
  }
  ONBOARD_TRY(auto certificate, ca::certificate_from_pem(p.certificate.pem));
  if (!ca::same_public_key(key->get(), X509_get0_pubkey(certificate.get()))) {
    return make_error(Errc::corrupt,
                      "the held key of " + p.device.id + " does not match its certificate");
  }
  return ca::private_key_to_pem(key->get());
}

Status restore(PlannedBundle& b) {
  if (!b.written) return ok_status();
  b.written = false;
  if (b.replaced)
    return write_file_atomic(b.path, b.replaced->view(), b.replaced_mode, Overwrite::replace);
  std::error_code ec;
  std::filesystem::remove(b.path, ec);
  return ok_status();
}

Result<std::string> sha256_of_file(const std::filesystem::path& path) {
  ONBOARD_TRY(std::string bytes, read_file(path, std::uint64_t{1} << 32));
  return sha256_hex(bytes);
}

Status make_directory(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return make_error(Errc::io, "cannot use " + dir.string() + " as the output directory" +
                                    (ec ? ": " + ec.message() : std::string()));
  }
  return ok_status();
}

// Writes one archive of the plan; on success it is marked written.
Status write_archive(const BundlePlan& plan, PlannedBundle& b, const std::string& chain,
                     UnixTime now) {
  std::vector<bundle::DeviceCredentials> credentials;
  for (std::size_t index : b.devices) {
    const PackedDevice& p = plan.devices[index];
    bundle::DeviceCredentials c{p.device.id, p.certificate.pem, p.certificate.sha256_fingerprint,
                                std::nullopt};
    if (p.held) {
      ONBOARD_TRY(c.private_key_pem, unlock_held_key(p, *plan.hold_passphrase));
    }
    credentials.push_back(std::move(c));
  }
  ONBOARD_TRY(auto files, bundle::bundle_files(std::move(credentials), chain, plan.broker, now));
  ONBOARD_CHECK(bundle::write_encrypted_zip(b.path, files, b.password,
                                            plan.replace ? Overwrite::replace : Overwrite::refuse));
  b.written = true;
  ONBOARD_TRY(b.sha256, sha256_of_file(b.path));
  std::error_code ec;
  b.size = static_cast<std::int64_t>(std::filesystem::file_size(b.path, ec));
  return ok_status();
}

}  // namespace

Result<BundlePlan> plan_bundles(registry::Store& store, const BundleRequest& request) {
  if (request.device_ids.empty() == request.batch_id.empty()) {
    return make_error(Errc::invalid_input, "name either the devices to package or one batch");
  }
  BundlePlan plan;
  plan.batch_id = request.batch_id;
  plan.broker = request.broker;
  plan.replace = request.replace;
  std::vector<std::string> ids = request.device_ids;
  if (!request.batch_id.empty()) {
    ONBOARD_TRY(auto batch, store.get_batch(request.batch_id));
    for (const auto& member : batch.devices) ids.push_back(member.device_id);
    if (ids.empty()) return make_error(Errc::conflict, "batch " + request.batch_id + " is empty");
  }
  std::set<std::string> unique(ids.begin(), ids.end());
  if (unique.size() != ids.size())
    return make_error(Errc::invalid_input, "a device is named twice");

  // Read and check everything first: a refusal writes nothing.
  for (const auto& id : ids) {
    ONBOARD_TRY(auto p, packable_device(store, id));
    plan.devices.push_back(std::move(p));
  }
  const bool any_held = std::any_of(plan.devices.begin(), plan.devices.end(),
                                    [](const PackedDevice& p) { return p.held.has_value(); });
  if (any_held) {
    if (request.hold_passphrase) {
      ONBOARD_TRY(plan.hold_passphrase, request.hold_passphrase());
    }
    if (plan.hold_passphrase == nullptr) {
      return make_error(Errc::invalid_input,
                        "the keys the tool made are held encrypted until packaged, and no hold "
                        "passphrase was given");
    }
  }
  if (request.password != nullptr) {
    if (auto problem = bundle::password_problem(*request.password)) {
      return make_error(Errc::invalid_input, "the bundle password is too weak: " + *problem);
    }
  }

  if (request.split || request.name_by_id) ONBOARD_CHECK(make_directory(request.out));
  if (request.split) {
    for (std::size_t i = 0; i < plan.devices.size(); ++i) {
      PlannedBundle b;
      b.path = request.out / (plan.devices[i].device.id + ".zip");
      b.devices.push_back(i);
      plan.bundles.push_back(std::move(b));
    }
  } else {
    PlannedBundle b;
    b.path = request.out;
    for (std::size_t i = 0; i < plan.devices.size(); ++i) b.devices.push_back(i);
    plan.bundles.push_back(std::move(b));
  }
  for (auto& b : plan.bundles) {
    ONBOARD_TRY(b.id, random_id("bdl-"));
    if (request.name_by_id) b.path = request.out / (b.id + ".zip");
    if (request.password != nullptr) {
      b.password = Secret(request.password->view());
    } else {
      ONBOARD_TRY(b.password, bundle::generate_password());
      b.password_generated = true;
    }
    for (std::size_t index : b.devices) b.keys += plan.devices[index].held ? 1 : 0;
    b.path = std::filesystem::absolute(b.path).lexically_normal();
    std::error_code ec;
    if (std::filesystem::exists(b.path, ec)) {
      if (!request.replace) {
        return make_error(Errc::conflict,
                          b.path.string() + " exists already; pass --force to replace it");
      }
      if (!std::filesystem::is_regular_file(b.path)) {
        return make_error(Errc::conflict, b.path.string() + " is not a regular file");
      }
      ONBOARD_TRY(b.replaced, read_file_secret(b.path, std::uint64_t{1} << 32));
    }
  }
  return plan;
}

Result<BundlesWritten> write_bundles(registry::Store& store, const ca::Authority& ca,
                                     BundlePlan& plan, const registry::Actor& actor,
                                     const BeforeRecordBundles& before_record) {
  // Write every archive, then whatever the caller writes, and only then record the bundles,
  // which erases the held keys: a failure before that point leaves the keys where they were.
  auto undo_all = [&plan] {
    for (auto& b : plan.bundles) (void)restore(b);
  };
  const std::string chain = ca.chain_pem();
  for (auto& b : plan.bundles) {
    if (auto written = write_archive(plan, b, chain, actor.now); !written.ok()) {
      undo_all();
      return std::move(written).error();
    }
  }
  if (before_record) {
    if (auto status = before_record(plan); !status.ok()) {
      undo_all();
      return std::move(status).error();
    }
  }

  // Record each bundle. One that fails is removed with the ones after it.
  BundlesWritten out;
  for (std::size_t i = 0; i < plan.bundles.size(); ++i) {
    auto& b = plan.bundles[i];
    registry::BundleRecord record;
    record.id = b.id;
    record.batch_id = plan.batch_id;
    record.path = b.path.string();
    record.sha256 = b.sha256;
    record.size = b.size;
    record.with_keys = b.keys > 0;
    for (std::size_t index : b.devices) {
      const auto& p = plan.devices[index];
      record.devices.push_back({p.device.id, p.certificate.sha256_fingerprint});
    }
    auto stored = store.record_bundle(record, actor);
    if (!stored.ok()) {
      out.failure = std::move(stored).error();
      for (std::size_t j = i; j < plan.bundles.size(); ++j) (void)restore(plan.bundles[j]);
      break;
    }
    out.recorded.push_back(i);
  }
  return out;
}

}  // namespace onboard::ops
