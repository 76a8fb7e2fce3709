#include "cli/commands.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <charconv>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "bundle/link_token.h"
#include "bundle/manifest.h"
#include "bundle/package.h"
#include "bundle/password.h"
#include "bundle/zip.h"
#include "ca/authority.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "cli/table.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/identity.h"
#include "ops/credentials.h"
#include "ops/csv.h"
#include "ops/duration.h"
#include "ops/operations.h"
#include "ops/text.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/store.h"

namespace onboard::cli {
namespace {

using nlohmann::json;

// Where `bundle link` points when neither --base-url nor $ONBOARD_BASE_URL says otherwise: the
// default address of `onboardctl serve`.
constexpr const char* kDefaultBaseUrl = "http://127.0.0.1:8443";

// ---- bundle create ---------------------------------------------------------------------------

// What one device contributes to a bundle, read and checked before anything is written.
struct Packable {
  registry::Device device;
  registry::Certificate certificate;  // its active certificate
  std::optional<registry::HeldKey> held;
};

Result<Packable> packable_device(registry::Store& store, const std::string& id) {
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
  return Packable{std::move(device), *active, std::move(held)};
}

// The held key, decrypted and checked against the certificate, as plaintext PKCS#8 PEM.
Result<Secret> unlock_held_key(const Packable& p, const Secret& passphrase) {
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

// One archive to write: its devices, where it goes, its password.
struct PlannedBundle {
  std::string id;
  std::filesystem::path path;
  std::vector<const Packable*> devices;
  Secret password;
  bool with_keys = false;
  std::optional<Secret> replaced;  // the old content of `path` under --force, to put back
  mode_t replaced_mode = 0600;
  bool written = false;
};

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

std::string password_lines(const std::vector<PlannedBundle>& bundles, bool split) {
  if (!split) return std::string(bundles.front().password.view()) + "\n";
  std::string text;
  for (const auto& b : bundles) {
    text += b.devices.front()->device.id + "\t" + b.path.string() + "\t" +
            std::string(b.password.view()) + "\n";
  }
  return text;
}

void add_bundle_create(CLI::App& bundle_cmd, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::vector<std::string> devices;
    std::string batch, out, password_out, broker = "localhost:8883";
    bool split = false, force = false;
    PassphraseSource password{"password"}, hold{"hold-passphrase"};
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = bundle_cmd.add_subcommand(
      "create",
      "Package devices' certificates (and the keys the tool made for them) into an AES-256 zip");
  auto* devices_opt = cmd->add_option("DEVICE", o->devices, "Device ids to package");
  auto* batch_opt =
      cmd->add_option("--batch", o->batch, "Package every device of this batch instead");
  devices_opt->excludes(batch_opt);
  cmd->add_option("--out", o->out,
                  "The zip to write; with --split, a directory that gets one DEVICE.zip each")
      ->required();
  cmd->add_flag("--split", o->split, "One zip (and one password) per device");
  cmd->add_option("--password-out", o->password_out,
                  "Write the password(s) to this new 0600 file instead of printing them "
                  "(with --split: one 'device<TAB>zip<TAB>password' line each)");
  o->password.add_to(*cmd,
                     "a bundle password of your own (checked for strength; default: a generated "
                     "140-bit one)");
  o->hold.add_to(*cmd, "the held device keys (they are encrypted with it)");
  cmd->add_option("--broker", o->broker,
                  "HOST[:PORT] the devices connect to, for the examples in the bundle")
      ->capture_default_str();
  cmd->add_flag("--force", o->force, "Replace existing output files");
  cmd->footer(
      "The password is shown once and stored nowhere. Once the bundle is recorded, the server's "
      "encrypted copies of the packaged keys are erased. Open the zip with 7-Zip (7z x FILE); "
      "Info-ZIP unzip cannot extract AES entries.");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    if (o->devices.empty() && o->batch.empty()) {
      return make_error(Errc::invalid_input, "name the devices to package, or --batch ID");
    }
    ONBOARD_TRY(auto broker, bundle::parse_broker_address(o->broker));
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto ca, ca::Authority::open(ws.dir));
    std::vector<std::string> ids = o->devices;
    if (!o->batch.empty()) {
      ONBOARD_TRY(auto batch, store->get_batch(o->batch));
      for (const auto& member : batch.devices) ids.push_back(member.device_id);
      if (ids.empty()) return make_error(Errc::conflict, "batch " + o->batch + " is empty");
    }
    std::set<std::string> unique(ids.begin(), ids.end());
    if (unique.size() != ids.size()) {
      return make_error(Errc::invalid_input, "a device is named twice");
    }

    // Read and check everything first: a refusal writes nothing.
    std::vector<Packable> packables;
    for (const auto& id : ids) {
      ONBOARD_TRY(auto p, packable_device(*store, id));
      packables.push_back(std::move(p));
    }
    const bool any_held = std::any_of(packables.begin(), packables.end(),
                                      [](const Packable& p) { return p.held.has_value(); });
    std::optional<Secret> hold_passphrase;
    if (any_held) {
      ONBOARD_TRY(hold_passphrase, o->hold.read());
      if (!hold_passphrase) {
        return make_error(Errc::invalid_input,
                          "the keys the tool made are held encrypted until packaged: give "
                          "--hold-passphrase-env VAR or --hold-passphrase-file FILE");
      }
    }
    ONBOARD_TRY(std::optional<Secret> own_password, o->password.read());
    if (own_password) {
      if (auto problem = bundle::password_problem(*own_password)) {
        return make_error(Errc::invalid_input, "the bundle password is too weak: " + *problem);
      }
    }

    std::vector<PlannedBundle> plan;
    if (o->split) {
      std::error_code ec;
      std::filesystem::create_directories(o->out, ec);
      if (ec || !std::filesystem::is_directory(o->out)) {
        return make_error(Errc::io, "cannot use " + o->out + " as the output directory" +
                                        (ec ? ": " + ec.message() : std::string()));
      }
      for (const auto& p : packables) {
        PlannedBundle b;
        b.path = std::filesystem::path(o->out) / (p.device.id + ".zip");
        b.devices.push_back(&p);
        plan.push_back(std::move(b));
      }
    } else {
      PlannedBundle b;
      b.path = o->out;
      for (const auto& p : packables) b.devices.push_back(&p);
      plan.push_back(std::move(b));
    }
    for (auto& b : plan) {
      ONBOARD_TRY(b.id, ops::random_id("bdl-"));
      if (own_password) {
        b.password = Secret(own_password->view());
      } else {
        ONBOARD_TRY(b.password, bundle::generate_password());
      }
      b.path = std::filesystem::absolute(b.path).lexically_normal();
      std::error_code ec;
      if (std::filesystem::exists(b.path, ec)) {
        if (!o->force) {
          return make_error(Errc::conflict,
                            b.path.string() + " exists already; pass --force to replace it");
        }
        if (!std::filesystem::is_regular_file(b.path)) {
          return make_error(Errc::conflict, b.path.string() + " is not a regular file");
        }
        ONBOARD_TRY(std::string old, read_file(b.path, std::uint64_t{1} << 32));
        b.replaced = Secret(old);
        std::fill(old.begin(), old.end(), '\0');
      }
    }
    if (!o->password_out.empty()) {
      const auto password_path = std::filesystem::absolute(o->password_out).lexically_normal();
      for (const auto& b : plan) {
        if (b.path == password_path) {
          // With --force the password would overwrite the archive it opens.
          return make_error(Errc::invalid_input, "--password-out names the bundle itself");
        }
      }
    }
    if (!o->password_out.empty() && !o->force && std::filesystem::exists(o->password_out)) {
      return make_error(Errc::conflict,
                        o->password_out + " exists already; pass --force to replace it");
    }

    // Write every archive, then the password file, and only then record the bundles, which
    // erases the held keys: a failure before that point leaves the keys where they were.
    auto undo_all = [&] {
      for (auto& b : plan) (void)restore(b);
    };
    const UnixTime now = unix_now();
    const std::string chain = ca.chain_pem();
    std::vector<std::string> zip_sha256(plan.size());
    for (std::size_t i = 0; i < plan.size(); ++i) {
      auto& b = plan[i];
      std::vector<bundle::DeviceCredentials> credentials;
      for (const Packable* p : b.devices) {
        bundle::DeviceCredentials c{p->device.id, p->certificate.pem,
                                    p->certificate.sha256_fingerprint, std::nullopt};
        if (p->held) {
          auto key = unlock_held_key(*p, *hold_passphrase);
          if (!key.ok()) {
            undo_all();
            return std::move(key).error();
          }
          c.private_key_pem = std::move(key).value();
          b.with_keys = true;
        }
        credentials.push_back(std::move(c));
      }
      auto files = bundle::bundle_files(std::move(credentials), chain, broker, now);
      if (!files.ok()) {
        undo_all();
        return std::move(files).error();
      }
      auto written = bundle::write_encrypted_zip(b.path, *files, b.password,
                                                 o->force ? Overwrite::replace : Overwrite::refuse);
      if (!written.ok()) {
        undo_all();
        return std::move(written).error();
      }
      b.written = true;
      auto digest = sha256_of_file(b.path);
      if (!digest.ok()) {
        undo_all();
        return std::move(digest).error();
      }
      zip_sha256[i] = *digest;
    }
    ops::CredentialWriter password_file;
    if (!o->password_out.empty()) {
      std::vector<ops::OutputFile> out;
      out.push_back({o->password_out, Secret(password_lines(plan, o->split)), 0600});
      if (auto status = password_file.write(std::move(out), o->force); !status.ok()) {
        undo_all();
        return std::move(status).error();
      }
    }

    // Record each bundle. One that fails is removed; the ones recorded before it stay valid
    // and their passwords are still shown, since their keys are gone from the server.
    std::optional<Error> failure;
    std::vector<std::size_t> recorded;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      auto& b = plan[i];
      registry::BundleRecord record;
      record.id = b.id;
      record.batch_id = o->batch;
      record.path = b.path.string();
      record.sha256 = zip_sha256[i];
      std::error_code ec;
      record.size = static_cast<std::int64_t>(std::filesystem::file_size(b.path, ec));
      record.with_keys = b.with_keys;
      for (const Packable* p : b.devices) {
        record.devices.push_back({p->device.id, p->certificate.sha256_fingerprint});
      }
      auto stored = store->record_bundle(record, ops::make_actor());
      if (!stored.ok()) {
        failure = std::move(stored).error();
        for (std::size_t j = i; j < plan.size(); ++j) (void)restore(plan[j]);
        break;
      }
      recorded.push_back(i);
    }
    if (recorded.empty()) password_file.undo();

    for (std::size_t i : recorded) {
      const auto& b = plan[i];
      std::size_t keys = 0;
      for (const Packable* p : b.devices) keys += p->held ? 1 : 0;
      std::cout << "bundle " << b.id << "  " << b.path.string() << "\n"
                << "  devices      " << b.devices.size() << " ("
                << (keys == 0 ? std::string("certificates only")
                              : std::to_string(keys) + " private key" + (keys == 1 ? "" : "s") +
                                    " inside; the server's copies are erased")
                << ")\n"
                << "  sha256       " << zip_sha256[i] << "\n";
      if (o->password_out.empty()) {
        std::cout << "  password     " << b.password.view() << "\n";
      }
    }
    if (!recorded.empty() && o->password_out.empty()) {
      std::cout << "The password is shown only this once: send it by another channel than the "
                   "zip.\n";
    }
    if (!o->password_out.empty() && !recorded.empty()) {
      std::cout << "passwords written to " << o->password_out << " (0600)\n";
    }
    if (failure) {
      if (!recorded.empty()) {
        failure->message += " (the bundles listed above were recorded and stay valid)";
      }
      return *failure;
    }
    return kExitOk;
  });
}

// ---- bundle link, show -----------------------------------------------------------------------

json bundle_json(const registry::BundleRecord& b) {
  json devices = json::array();
  for (const auto& d : b.devices) {
    devices.push_back({{"id", d.device_id}, {"certificate_sha256", d.certificate_sha256}});
  }
  return json{{"id", b.id},
              {"batch", b.batch_id.empty() ? json(nullptr) : json(b.batch_id)},
              {"path", b.path},
              {"sha256", b.sha256},
              {"size", b.size},
              {"with_keys", b.with_keys},
              {"created_at", iso_time(b.created_at)},
              {"downloaded_at", b.downloaded_at ? json(iso_time(*b.downloaded_at)) : json(nullptr)},
              {"downloaded_by", b.downloaded_at ? json(b.downloaded_by) : json(nullptr)},
              {"devices", devices}};
}

void add_bundle_link(CLI::App& bundle_cmd, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string id, ttl = "24h", base_url;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = bundle_cmd.add_subcommand(
      "link", "Print a one-time download URL for a bundle, signed with the server's link secret");
  cmd->add_option("BUNDLE", o->id, "Bundle id (from bundle create)")->required();
  cmd->add_option("--ttl", o->ttl, "How long the link stays valid: 30m, 24h, 7d (max 30d)")
      ->capture_default_str();
  cmd->add_option("--base-url", o->base_url,
                  "The REST server's public URL (default $ONBOARD_BASE_URL, else " +
                      std::string(kDefaultBaseUrl) + ")");
  cmd->footer(
      "The URL is printed alone on stdout. `onboardctl serve` hands the bundle out once; after "
      "that, or after the TTL, the link answers 410 Gone.");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(UnixTime ttl, ops::parse_duration(o->ttl, "--ttl", 60, 30 * ops::kDay));
    std::string base = o->base_url;
    if (base.empty()) {
      const char* env = std::getenv("ONBOARD_BASE_URL");
      base = env != nullptr && *env != '\0' ? env : kDefaultBaseUrl;
    }
    while (base.ends_with('/')) base.pop_back();
    if (!(base.starts_with("http://") || base.starts_with("https://")) ||
        base.find_first_of(" \t\r\n\"'<>\\?#") != std::string::npos || base.size() > 2000) {
      return make_error(Errc::invalid_input,
                        "--base-url must be an http:// or https:// URL without query or fragment");
    }
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto record, store->get_bundle(o->id));
    if (record.downloaded_at) {
      return make_error(Errc::conflict, "bundle " + o->id + " was downloaded already (" +
                                            iso_time(*record.downloaded_at) +
                                            "); a link to it would only answer 410");
    }
    ONBOARD_TRY(Secret secret, bundle::load_or_create_link_secret(ws.dir));
    const auto actor = ops::make_actor();
    const UnixTime expires_at = actor.now + ttl;
    ONBOARD_TRY(std::string token, bundle::make_link_token(record.id, expires_at, secret));
    ONBOARD_CHECK(store->record_event("bundle.link", record.id,
                                      json{{"expires_at", iso_time(expires_at)}}.dump(), actor));
    std::cout << base << "/v1/bundles/" << token << "\n";
    std::cerr << "valid until " << iso_time(expires_at) << ", for one download\n";
    return kExitOk;
  });
}

void add_bundle_show(CLI::App& bundle_cmd, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string id;
    bool json_out = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = bundle_cmd.add_subcommand("show",
                                        "Show what a bundle holds and whether it was "
                                        "downloaded");
  cmd->add_option("BUNDLE", o->id, "Bundle id")->required();
  cmd->add_flag("--json", o->json_out, "Print JSON");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto b, store->get_bundle(o->id));
    if (o->json_out) {
      std::cout << bundle_json(b).dump(2) << "\n";
      return kExitOk;
    }
    std::cout << "bundle      " << b.id << "\n"
              << "path        " << b.path << "\n"
              << "sha256      " << b.sha256 << "\n"
              << "size        " << b.size << " bytes\n"
              << "keys        " << (b.with_keys ? "inside" : "none (certificates only)") << "\n"
              << "batch       " << (b.batch_id.empty() ? "-" : b.batch_id) << "\n"
              << "created     " << iso_time(b.created_at) << "\n"
              << "downloaded  "
              << (b.downloaded_at ? iso_time(*b.downloaded_at) + " by " + b.downloaded_by
                                  : std::string("no"))
              << "\n";
    Table table({"DEVICE", "CERTIFICATE SHA-256"});
    for (const auto& d : b.devices) table.add({d.device_id, d.certificate_sha256});
    table.print(std::cout);
    return kExitOk;
  });
}

}  // namespace

void add_bundle_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* bundle_cmd =
      app.add_subcommand("bundle", "Package credentials for delivery and make download links");
  bundle_cmd->require_subcommand(1);
  add_bundle_create(*bundle_cmd, global, exit_code);
  add_bundle_link(*bundle_cmd, global, exit_code);
  add_bundle_show(*bundle_cmd, global, exit_code);
}

}  // namespace onboard::cli
