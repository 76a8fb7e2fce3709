#include "tools/bundle_commands.h"

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
#include "core/digest.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/identity.h"
#include "registry/store.h"
#include "tools/credentials.h"
#include "tools/csv.h"
#include "tools/duration.h"
#include "tools/operations.h"
#include "tools/table.h"
#include "tools/text.h"
#include "tools/views.h"
#include "tools/workspace.h"

namespace onboard::cli {
namespace {

using nlohmann::json;

// Random ids for bundles and batches: a prefix and 80 bits in lower-case hex, which sort
// nowhere in particular and cannot be guessed from each other.
Result<std::string> random_id(std::string_view prefix) {
  unsigned char bytes[10];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return make_error(Errc::crypto, "the random generator failed");
  }
  return std::string(prefix) + hex_encode(bytes);
}

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
  on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
    if (o->devices.empty() && o->batch.empty()) {
      return make_error(Errc::invalid_input, "name the devices to package, or --batch ID");
    }
    ONBOARD_TRY(auto broker, bundle::parse_broker_address(o->broker));
    ONBOARD_TRY(auto store, open_registry(ws));
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
      ONBOARD_TRY(b.id, random_id("bdl-"));
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
    CredentialWriter password_file;
    if (!o->password_out.empty()) {
      std::vector<OutputFile> out;
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
      auto stored = store->record_bundle(record, make_actor());
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
  on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
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
    ONBOARD_TRY(auto store, open_registry(ws));
    ONBOARD_TRY(auto record, store->get_bundle(o->id));
    if (record.downloaded_at) {
      return make_error(Errc::conflict, "bundle " + o->id + " was downloaded already (" +
                                            iso_time(*record.downloaded_at) +
                                            "); a link to it would only answer 410");
    }
    ONBOARD_TRY(Secret secret, bundle::load_or_create_link_secret(ws.dir));
    const auto actor = make_actor();
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
  on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
    ONBOARD_TRY(auto store, open_registry(ws));
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

// ---- batch register, show --------------------------------------------------------------------

struct BatchRow {
  int line = 0;
  std::string id, name, type, location, firmware, csr_path;
  std::string csr_pem;  // checked; empty when the tool makes the key
  bool skip = false;    // exists already and --skip-existing
};

// Reads and checks the whole CSV. Problems are collected for every row, each naming its line,
// so that the operator fixes the file in one go.
struct ParsedBatch {
  std::vector<BatchRow> rows;
  std::vector<std::string> problems;
};

Result<ParsedBatch> parse_batch_csv(const std::filesystem::path& csv_path, registry::Store& store,
                                    bool skip_existing) {
  ONBOARD_TRY(std::string text, read_file(csv_path, 64u << 20));
  const std::string where = csv_path.string();
  auto records = parse_csv(text);
  if (!records.ok()) {
    return make_error(Errc::invalid_input, where + ": " + records.error().message);
  }
  if (records->empty()) return make_error(Errc::invalid_input, where + ": the file is empty");
  static const std::set<std::string> kKnown = {"id", "name", "type", "location", "firmware", "csr"};
  std::map<std::string, std::size_t> column;
  const auto& header = records->front();
  for (std::size_t i = 0; i < header.fields.size(); ++i) {
    std::string name = header.fields[i];
    if (!kKnown.contains(name)) {
      return make_error(Errc::invalid_input,
                        where + ":" + std::to_string(header.line) + ": unknown column '" +
                            name.substr(0, 40) +
                            "'; the header names columns among id, name, type, location, "
                            "firmware, csr");
    }
    if (!column.emplace(name, i).second) {
      return make_error(Errc::invalid_input, where + ":" + std::to_string(header.line) +
                                                 ": column '" + name + "' appears twice");
    }
  }
  if (!column.contains("name")) {
    return make_error(Errc::invalid_input, where + ":" + std::to_string(header.line) +
                                               ": the header must name a 'name' column");
  }
  ParsedBatch parsed;
  std::set<std::string> ids;
  const auto base_dir = csv_path.parent_path();
  for (std::size_t r = 1; r < records->size(); ++r) {
    const auto& record = (*records)[r];
    auto problem = [&](const std::string& what) {
      parsed.problems.push_back(where + ":" + std::to_string(record.line) + ": " + what);
    };
    if (record.fields.size() != header.fields.size()) {
      problem("expected " + std::to_string(header.fields.size()) + " fields, found " +
              std::to_string(record.fields.size()));
      continue;
    }
    auto field = [&](const char* name) -> std::string {
      auto it = column.find(name);
      return it == column.end() ? std::string() : record.fields[it->second];
    };
    BatchRow row;
    row.line = record.line;
    row.id = field("id");
    row.name = field("name");
    row.type = field("type");
    row.location = field("location");
    row.firmware = field("firmware");
    row.csr_path = field("csr");
    bool ok = true;
    // The rules register_device applies, checked here too to report every row at once.
    for (auto [col, value, limit] : {std::tuple<const char*, const std::string*, std::size_t>{
                                         "name", &row.name, ops::kMaxNameBytes},
                                     {"location", &row.location, ops::kMaxLocationBytes},
                                     {"firmware", &row.firmware, ops::kMaxFirmwareBytes}}) {
      if (auto p = text_problem(col, *value, limit)) {
        problem(*p);
        ok = false;
      }
    }
    if (!ok) continue;  // the other checks would echo the bad text
    if (row.name.empty()) {
      problem("name is empty");
      ok = false;
    }
    if (!row.type.empty()) {
      if (auto p = registry::group_name_problem(row.type)) {
        problem("type: " + *p);
        ok = false;
      }
    }
    if (!row.csr_path.empty()) {
      std::filesystem::path csr_file = row.csr_path;
      if (csr_file.is_relative()) csr_file = base_dir / csr_file;
      auto pem = read_file(csr_file, 1 << 20);
      if (!pem.ok()) {
        problem("csr: " + pem.error().message);
        continue;
      }
      auto checked = ca::read_device_csr(*pem);
      if (!checked.ok()) {
        problem("csr " + row.csr_path + ": " + checked.error().message);
        continue;
      }
      if (row.id.empty()) row.id = checked->device_id;
      if (checked->device_id != row.id) {
        problem("the CSR's CN is '" + checked->device_id + "', not the device id '" + row.id + "'");
        ok = false;
      }
      row.csr_pem = std::move(pem).value();
    }
    if (row.id.empty()) {
      if (device_id_problem(row.name)) {
        problem("name '" + row.name.substr(0, 64) + "' is not a valid device id; add an id column");
        continue;
      }
      row.id = row.name;
    }
    if (auto p = device_id_problem(row.id)) {
      problem("id: " + *p);
      continue;
    }
    if (!ids.insert(row.id).second) {
      problem("device " + row.id + " appears twice in the file");
      continue;
    }
    if (auto existing = store.get_device(row.id); existing.ok()) {
      if (skip_existing) {
        row.skip = true;
      } else {
        problem("device " + row.id +
                " is registered already (pass --skip-existing to leave such rows out)");
        ok = false;
      }
    } else if (existing.error().code != Errc::not_found) {
      return std::move(existing).error();
    }
    if (ok) parsed.rows.push_back(std::move(row));
  }
  return parsed;
}

// A one-line progress bar on stderr, only when it is a terminal.
class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}
  void update(std::size_t done, const std::string& label) {
    if (!tty_ || total_ == 0) return;
    constexpr std::size_t kWidth = 30;
    const std::size_t filled = done * kWidth / total_;
    std::cerr << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] "
              << done << "/" << total_ << " " << label.substr(0, 40) << "\x1b[K" << std::flush;
  }
  void finish() {
    if (tty_) std::cerr << "\r\x1b[K" << std::flush;
  }

 private:
  std::size_t total_;
  bool tty_;
};

void add_batch(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* batch = app.add_subcommand("batch", "Register many devices from a CSV file at once");
  batch->require_subcommand(1);
  {
    struct Opts {
      std::string csv, batch_id, key_alg = "p256";
      int days = 365;
      bool skip_existing = false;
      PassphraseSource hold{"hold-passphrase"};
      PassphraseSource ca_passphrase;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = batch->add_subcommand("register", "Register the devices of a CSV file as a batch");
    cmd->add_option("--csv", o->csv,
                    "CSV file with a header naming its columns: name (required), id, type, "
                    "location, firmware, csr (a PEM CSR file, relative to the CSV's directory)")
        ->required();
    cmd->add_option("--batch", o->batch_id,
                    "Batch id (default: a new random one); an existing batch is extended");
    cmd->add_option(
           "--key-alg", o->key_alg,
           "Algorithm of the keys made for rows without a csr: " + std::string(ca::kKeyAlgNames))
        ->capture_default_str();
    cmd->add_option("--days", o->days, "Certificate validity in days")->capture_default_str();
    cmd->add_flag("--skip-existing", o->skip_existing,
                  "Leave out rows whose device is registered already (to finish an interrupted "
                  "batch)");
    o->hold.add_to(*cmd,
                   "the keys made here, which it encrypts until they are bundled (required when "
                   "a row has no csr)");
    o->ca_passphrase.add_to(*cmd, "the CA key");
    cmd->footer(
        "The file is checked whole first: if any row is bad, every bad row is reported with its "
        "line number and nothing is registered. Then each row is registered in its own "
        "transaction; if one fails (disk full, CA key), the rows before it stay registered in "
        "the batch and the message says which; rerun with --batch ID --skip-existing. The id "
        "column is optional: without it the id is the CSR's CN, else the name.");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      ONBOARD_CHECK(check_validity_days(o->days));
      ONBOARD_TRY(ca::KeyAlg alg, key_alg_option(o->key_alg));
      if (!o->batch_id.empty()) {
        if (auto p = device_id_problem(o->batch_id)) {
          return make_error(Errc::invalid_input, "--batch: " + *p);
        }
      }
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto parsed, parse_batch_csv(o->csv, *store, o->skip_existing));
      if (!parsed.problems.empty()) {
        for (const auto& p : parsed.problems) std::cerr << p << "\n";
        return make_error(Errc::invalid_input, std::to_string(parsed.problems.size()) +
                                                   " problem(s) in " + o->csv +
                                                   "; nothing was registered");
      }
      std::vector<BatchRow*> todo;
      std::size_t skipped = 0;
      for (auto& row : parsed.rows) {
        if (row.skip) {
          ++skipped;
        } else {
          todo.push_back(&row);
        }
      }
      const bool needs_hold = std::any_of(todo.begin(), todo.end(),
                                          [](const BatchRow* r) { return r->csr_pem.empty(); });
      std::optional<Secret> hold;
      if (needs_hold) {
        ONBOARD_TRY(hold, o->hold.read());
        if (!hold) {
          return make_error(Errc::invalid_input,
                            "rows without a csr get a key made here, kept encrypted until "
                            "bundled: give --hold-passphrase-env VAR or --hold-passphrase-file "
                            "FILE");
        }
        if (auto problem = ops::hold_passphrase_problem(*hold)) {
          return make_error(Errc::invalid_input, "the hold passphrase is too weak: " + *problem);
        }
      }
      ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->ca_passphrase));
      std::string batch_id = o->batch_id;
      bool extended = false;
      if (batch_id.empty()) {
        ONBOARD_TRY(batch_id, random_id("batch-"));
      }
      if (auto existing = store->get_batch(batch_id); existing.ok()) {
        extended = true;
      } else if (existing.error().code == Errc::not_found) {
        ONBOARD_CHECK(store->create_batch(
            batch_id, std::filesystem::path(o->csv).filename().string(), make_actor()));
      } else {
        return std::move(existing).error();
      }

      Progress progress(todo.size());
      std::size_t done = 0, held = 0;
      int first_line = 0, last_line = 0;
      for (BatchRow* row : todo) {
        progress.update(done, row->id);
        auto step = [&]() -> Status {
          ops::RegisterRequest request;
          request.device = registry::NewDevice{row->id,       row->name,     row->type,
                                               row->location, row->firmware, "{}"};
          request.key.csr_pem = row->csr_pem;
          request.key.csr_label = "csr " + row->csr_path;
          request.key.key_alg = alg;
          request.key.hold_passphrase = row->csr_pem.empty() ? &*hold : nullptr;
          request.key.days = o->days;
          request.batch_id = batch_id;
          request.batch_line = row->line;
          auto registered = ops::register_device(*store, ca, request, make_actor());
          if (!registered.ok()) return std::move(registered).error();
          return ok_status();
        };
        if (auto status = step(); !status.ok()) {
          progress.finish();
          std::string done_text = done == 0 ? std::string("no row was registered")
                                            : std::to_string(done) + " row(s) before it (lines " +
                                                  std::to_string(first_line) + " to " +
                                                  std::to_string(last_line) +
                                                  ") are registered in batch " + batch_id;
          return make_error(status.error().code,
                            o->csv + ":" + std::to_string(row->line) + " (device " + row->id +
                                "): " + status.error().message + "; " + done_text +
                                "; the rest are not; fix the cause and rerun with --batch " +
                                batch_id + " --skip-existing");
        }
        if (done == 0) first_line = row->line;
        last_line = row->line;
        ++done;
        if (row->csr_pem.empty()) ++held;
      }
      progress.update(done, "");
      progress.finish();
      std::cout << "batch " << batch_id << (extended ? " (extended)" : "") << "\n"
                << "  registered   " << done << " device(s)\n"
                << "  keys         " << held << " made here, held encrypted until bundled; "
                << (done - held) << " from CSRs\n";
      if (skipped > 0) std::cout << "  skipped      " << skipped << " registered already\n";
      std::cout << "next: onboardctl bundle create --batch " << batch_id
                << " --out FILE.zip [--split]\n";
      return kExitOk;
    });
  }
  {
    struct Opts {
      std::string id;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = batch->add_subcommand("show", "List a batch's devices");
    cmd->add_option("BATCH", o->id, "Batch id")->required();
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto found, store->get_batch(o->id));
      std::cout << "batch " << found.id << " from " << terminal_safe(found.source) << ", created "
                << iso_time(found.created_at) << "\n";
      Table table({"LINE", "DEVICE", "STATUS", "SERVER KEY COPY"});
      for (const auto& member : found.devices) {
        ONBOARD_TRY(auto device, store->get_device(member.device_id));
        ONBOARD_TRY(auto held, store->held_key(member.device_id));
        table.add({std::to_string(member.line), member.device_id,
                   std::string(to_string(device.status)), held ? "held (encrypted)" : "none"});
      }
      table.print(std::cout);
      return kExitOk;
    });
  }
}

}  // namespace

void add_bundle_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* bundle_cmd =
      app.add_subcommand("bundle", "Package credentials for delivery and make download links");
  bundle_cmd->require_subcommand(1);
  add_bundle_create(*bundle_cmd, global, exit_code);
  add_bundle_link(*bundle_cmd, global, exit_code);
  add_bundle_show(*bundle_cmd, global, exit_code);
  add_batch(app, global, exit_code);
}

}  // namespace onboard::cli
