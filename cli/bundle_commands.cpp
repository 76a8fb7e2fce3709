#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bundle/link_token.h"
#include "bundle/package.h"
#include "ca/authority.h"
#include "cli/table.h"
#include "ops/bundles.h"
#include "ops/credentials.h"
#include "ops/duration.h"
#include "ops/workspace.h"
#include "registry/store.h"

namespace onboard::cli {
namespace {

using nlohmann::json;

// Where `bundle link` points when neither --base-url nor $ONBOARD_BASE_URL says otherwise: the
// default address of `onboardctl serve`.
constexpr const char* kDefaultBaseUrl = "http://127.0.0.1:8443";

// ---- bundle create ---------------------------------------------------------------------------

// With --split: one 'device<TAB>zip<TAB>password' line per bundle. Built in a Secret: a
// std::string would leave the passwords in freed memory.
Secret password_lines(const ops::BundlePlan& plan, bool split) {
  Secret text;
  for (const auto& b : plan.bundles) {
    if (split) {
      text.append(plan.devices[b.devices.front()].device.id + "\t" + b.path.string() + "\t");
    }
    text.append(b.password.view());
    text.append("\n");
    if (!split) break;
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
    ops::BundleRequest request;
    ONBOARD_TRY(request.broker, bundle::parse_broker_address(o->broker));
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto ca, ca::Authority::open(ws.dir));
    request.device_ids = o->devices;
    request.batch_id = o->batch;
    request.out = o->out;
    request.split = o->split;
    request.replace = o->force;
    std::optional<Secret> hold_passphrase;
    request.hold_passphrase = [&]() -> Result<const Secret*> {
      ONBOARD_TRY(hold_passphrase, o->hold.read());
      if (!hold_passphrase) {
        return make_error(Errc::invalid_input,
                          "the keys the tool made are held encrypted until packaged: give "
                          "--hold-passphrase-env VAR or --hold-passphrase-file FILE");
      }
      return &*hold_passphrase;
    };
    ONBOARD_TRY(std::optional<Secret> own_password, o->password.read());
    if (own_password) request.password = &*own_password;
    ONBOARD_TRY(auto plan, ops::plan_bundles(*store, request));
    if (!o->password_out.empty()) {
      const auto password_path = std::filesystem::absolute(o->password_out).lexically_normal();
      for (const auto& b : plan.bundles) {
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

    // The password file is written with the archives, before the bundles are recorded.
    ops::CredentialWriter password_file;
    auto write_password_file = [&](const ops::BundlePlan& written) -> Status {
      if (o->password_out.empty()) return ok_status();
      std::vector<ops::OutputFile> out;
      out.push_back({o->password_out, password_lines(written, o->split), 0600});
      return password_file.write(std::move(out), o->force);
    };
    ONBOARD_TRY(auto written,
                ops::write_bundles(*store, ca, plan, ops::make_actor(), write_password_file));
    if (written.recorded.empty()) password_file.undo();

    for (std::size_t i : written.recorded) {
      const auto& b = plan.bundles[i];
      std::cout << "bundle " << b.id << "  " << b.path.string() << "\n"
                << "  devices      " << b.devices.size() << " ("
                << (b.keys == 0
                        ? std::string("certificates only")
                        : std::to_string(b.keys) + " private key" + (b.keys == 1 ? "" : "s") +
                              " inside; the server's copies are erased")
                << ")\n"
                << "  sha256       " << b.sha256 << "\n";
      if (o->password_out.empty()) {
        std::cout << "  password     " << b.password.view() << "\n";
      }
    }
    if (!written.recorded.empty() && o->password_out.empty()) {
      std::cout << "The password is shown only this once: send it by another channel than the "
                   "zip.\n";
    }
    if (!o->password_out.empty() && !written.recorded.empty()) {
      std::cout << "passwords written to " << o->password_out << " (0600)\n";
    }
    if (written.failure) {
      if (!written.recorded.empty()) {
        written.failure->message += " (the bundles listed above were recorded and stay valid)";
      }
      return *written.failure;
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
