#include "cli/commands.h"

#include <algorithm>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "ca/authority.h"
#include "cli/key_options.h"
#include "cli/rule_table.h"
#include "cli/table.h"
#include "core/identity.h"
#include "ops/credentials.h"
#include "ops/duration.h"
#include "ops/operations.h"
#include "ops/text.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/acl.h"

namespace onboard::cli {
namespace {

// When the device's current certificate (its latest-expiring active one) expires, for 'show'.
std::string current_expiry(const std::vector<registry::Certificate>& certs, UnixTime now) {
  std::optional<UnixTime> latest;
  for (const auto& c : certs) {
    if (c.status == registry::CertificateStatus::active && (!latest || c.not_after > *latest))
      latest = c.not_after;
  }
  if (!latest) return "no active certificate";
  const UnixTime left = *latest - now;
  return iso_time(*latest) + (left < 0 ? " (expired " + ops::format_duration(-left) + " ago)"
                                       : " (in " + ops::format_duration(left) + ")");
}

using nlohmann::json;
using registry::Store;

}  // namespace

// ---- device ----------------------------------------------------------------------------------

void add_device_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* device = app.add_subcommand(
      "device", "Register, list, show, update, enable, disable and revoke devices");
  device->require_subcommand(1);

  {
    struct Opts {
      std::string id, type, location, firmware, name, metadata = "{}";
      KeySource key;
      PassphraseSource passphrase;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd =
        device->add_subcommand("register", "Register a device and issue its first certificate");
    cmd->add_option("ID", o->id,
                    "Device id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}; certificate CN, MQTT client id "
                    "and username")
        ->required();
    cmd->add_option("--type", o->type, "Device type; the device is in the group of that name");
    cmd->add_option("--location", o->location,
                    "Where the device is (printable text, at most 128 bytes)");
    cmd->add_option("--firmware", o->firmware,
                    "Firmware version (printable text, at most 64 bytes)");
    cmd->add_option("--name", o->name,
                    "Display name (default: the id; printable text, at most 128 bytes)");
    cmd->add_option("--metadata", o->metadata, "Free-form JSON object (at most 4096 bytes)");
    o->key.add_to(*cmd);
    o->passphrase.add_to(*cmd, "the CA key");
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      if (auto problem = device_id_problem(o->id)) return make_error(Errc::invalid_input, *problem);
      if (!o->type.empty()) {
        if (auto problem = registry::group_name_problem(o->type))
          return make_error(Errc::invalid_input, "--type: " + *problem);
      }
      if (auto problem = registry::metadata_problem(o->metadata))
        return make_error(Errc::invalid_input, "--metadata: " + *problem);
      std::optional<Secret> hold_passphrase;
      ONBOARD_TRY(auto plan, key_plan(o->key, hold_passphrase));
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
      ops::RegisterRequest request{
          registry::NewDevice{o->id, o->name, o->type, o->location, o->firmware, o->metadata},
          std::move(plan),
          {},
          0};
      ops::CredentialWriter outputs;
      auto registered = ops::register_device(*store, ca, request, ops::make_actor(),
                                             write_outputs(outputs, o->key));
      if (!registered.ok()) {
        outputs.undo();  // the registry refused: leave no credential behind for a device that does
                         // not exist
        return std::move(registered).error();
      }
      const auto& info = registered->issuance.certificate.info;
      std::cout << "registered " << o->id << "\n"
                << "  serial       " << info.serial_hex << "\n"
                << "  fingerprint  sha256:" << info.sha256_fingerprint << "\n"
                << "  key          " << info.key << key_custody(registered->issuance) << "\n";
      for (const auto& path : outputs.written())
        std::cout << "  wrote        " << path.string() << "\n";
      return kExitOk;
    });
  }

  {
    struct Opts {
      std::string status, type, after, expiring;
      std::size_t limit = 100;
      bool json_out = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = device->add_subcommand("list", "List devices, sorted by id, one page at a time");
    cmd->add_option("--status", o->status,
                    "Only devices with this status: active, disabled or revoked");
    cmd->add_option("--type", o->type, "Only devices of this type");
    cmd->add_option("--expiring", o->expiring,
                    "Only devices whose current certificate expires within this duration (e.g. "
                    "30d, 12h), or has expired; revoked devices have none");
    cmd->add_option("--limit", o->limit, "Page size (0: everything)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--after", o->after,
                    "Start after this device id (the last id of the previous page)");
    cmd->add_flag("--json", o->json_out, "Print JSON");
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      auto filter = ops::device_filter(o->status, o->type, o->limit, o->after);
      // ops names the field ("status must be ..."); here it is an option.
      if (!filter.ok()) return make_error(filter.error().code, "--" + filter.error().message);
      const UnixTime now = unix_now();
      ONBOARD_CHECK(ops::filter_expiring(*filter, o->expiring, "--expiring", now));
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      if (o->json_out) {
        // Streamed a page at a time: exporting a whole fleet needs the memory of one page.
        constexpr std::size_t kPage = 1000;
        std::size_t printed = 0;
        std::string last;
        std::cout << "{\"devices\": [";
        for (;;) {
          registry::DeviceFilter page = *filter;
          page.limit = o->limit == 0 ? kPage : std::min(kPage, o->limit - printed);
          page.after_id = printed == 0 ? filter->after_id : last;
          ONBOARD_TRY(auto chunk, ops::list_devices(*store, page));
          const auto& devices = chunk.devices;
          for (const auto& d : devices) {
            std::cout << (printed++ == 0 ? "\n" : ",\n") << ops::listed_device_json(d, now).dump();
          }
          if (!devices.empty()) last = devices.back().id;
          if (devices.size() < page.limit || (o->limit != 0 && printed == o->limit)) break;
        }
        const bool more = o->limit != 0 && printed == o->limit;
        std::cout << "\n], \"next_after\": " << (more ? json(last).dump() : "null") << "}\n";
        return kExitOk;
      }
      ONBOARD_TRY(auto listed, ops::list_devices(*store, *filter));
      const auto& devices = listed.devices;
      const bool more = listed.next_after.has_value();
      Table table({"ID", "STATUS", "TYPE", "LOCATION", "FIRMWARE", "CREATED", "CERT EXPIRES"});
      for (const auto& d : devices) {
        table.add({d.id, std::string(to_string(d.status)), d.type, d.location, d.firmware,
                   iso_time(d.created_at), ops::certificate_expiry_text(d, now)});
      }
      table.print(std::cout);
      if (more) std::cout << "(more: --after " << *listed.next_after << ")\n";
      return kExitOk;
    });
  }

  {
    struct Opts {
      std::string id;
      bool json_out = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = device->add_subcommand(
        "show", "Show a device, its certificates and its effective ACL rules");
    cmd->add_option("ID", o->id, "Device id")->required();
    cmd->add_flag("--json", o->json_out, "Print JSON, certificates with their PEM");
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto details, ops::device_details(*store, o->id));
      const auto& d = details.device;
      const auto& certs = details.certificates;
      const auto& rules = details.effective_rules;
      if (o->json_out) {
        json out = ops::device_json(d);
        out["certificates"] = json::array();
        for (const auto& c : certs) out["certificates"].push_back(ops::certificate_json(c, true));
        out["rules"] = json::array();
        for (const auto& r : rules) out["rules"].push_back(ops::rule_json(r));
        out["server_key_copy"] = ops::held_key_json(details.held_key);
        std::cout << out.dump(2) << "\n";
        return kExitOk;
      }
      // Free text is escaped: it may predate the checks on what is stored.
      std::cout << "device    " << d.id
                << (d.name != d.id ? " (" + ops::terminal_safe(d.name) + ")" : "") << "\n"
                << "status    " << to_string(d.status) << "\n"
                << "type      " << ops::terminal_safe(d.type) << "\nlocation  "
                << ops::terminal_safe(d.location) << "\nfirmware  "
                << ops::terminal_safe(d.firmware) << "\n"
                << "created   " << iso_time(d.created_at) << "\nupdated   "
                << iso_time(d.updated_at) << "\n"
                << "metadata  " << ops::terminal_safe(d.metadata) << "\n"
                << "expires   " << current_expiry(certs, unix_now()) << "\n"
                << "server key copy: "
                << (details.held_key
                        ? "held, encrypted, since " + iso_time(details.held_key->created_at) +
                              " (wiped when bundled)"
                        : std::string("none"))
                << "\n\ncertificates\n";
      Table table({"SERIAL", "STATUS", "NOT AFTER", "SHA-256"});
      for (const auto& c : certs) {
        std::string status(to_string(c.status));
        if (c.revocation_reason)
          status += " (" + std::string(revocation_reason_name(*c.revocation_reason)) + ")";
        table.add({c.serial_hex, status, iso_time(c.not_after), c.sha256_fingerprint});
      }
      table.print(std::cout);
      std::cout
          << "\neffective ACL rules (highest priority first; deny wins ties; no match is deny)\n";
      print_rules(rules);
      return kExitOk;
    });
  }

  for (bool enable : {true, false}) {
    auto id = std::make_shared<std::string>();
    auto* cmd = device->add_subcommand(
        enable ? "enable" : "disable",
        enable ? "Allow a disabled device to connect again"
               : "Refuse a device's connections (and disconnect it) until enabled");
    cmd->add_option("ID", *id, "Device id")->required();
    on_run(cmd, global, exit_code, [id, enable](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(bool changed, ops::set_device_enabled(*store, *id, enable, ops::make_actor()));
      std::cout << *id
                << (changed ? (enable ? " enabled" : " disabled")
                            : (enable ? " was already enabled" : " was already disabled"))
                << "\n";
      return kExitOk;
    });
  }

  {
    struct Opts {
      std::string id, name, type, location, firmware, metadata;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = device->add_subcommand(
        "update",
        "Change a device's name, type, location, firmware or metadata (not a revoked one)");
    cmd->add_option("ID", o->id, "Device id")->required();
    cmd->add_option("--name", o->name,
                    "Display name (\"\": the id; printable text, at most 128 bytes)");
    cmd->add_option("--type", o->type,
                    "Device type; the device moves to the group of that name (\"\": no type)");
    cmd->add_option("--location", o->location,
                    "Where the device is (printable text, at most 128 bytes)");
    cmd->add_option("--firmware", o->firmware,
                    "Firmware version (printable text, at most 64 bytes)");
    cmd->add_option("--metadata", o->metadata,
                    "Free-form JSON object, at most 4096 bytes (replaces the stored one)");
    on_run(cmd, global, exit_code, [o, cmd](const ops::Workspace& ws) -> Result<int> {
      registry::DeviceUpdate update;
      auto given = [cmd](const char* option, const std::string& value) {
        return cmd->count(option) > 0 ? std::optional<std::string>(value) : std::nullopt;
      };
      update.name = given("--name", o->name);
      update.type = given("--type", o->type);
      update.location = given("--location", o->location);
      update.firmware = given("--firmware", o->firmware);
      update.metadata = given("--metadata", o->metadata);
      if (update.empty()) {
        std::cerr << "onboardctl: device update: nothing to update; give at least one of --name, "
                     "--type, --location, --firmware, --metadata\nRun with --help for usage.\n";
        return kExitUsage;
      }
      if (update.type && !update.type->empty()) {
        if (auto problem = registry::group_name_problem(*update.type))
          return make_error(Errc::invalid_input, "--type: " + *problem);
      }
      if (update.metadata) {
        if (auto problem = registry::metadata_problem(*update.metadata))
          return make_error(Errc::invalid_input, "--metadata: " + *problem);
      }
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto updated, ops::update_device(*store, o->id, update, ops::make_actor()));
      std::cout << "updated " << updated.id << "\n"
                << "  name         " << ops::terminal_safe(updated.name) << "\n"
                << "  type         " << ops::terminal_safe(updated.type) << "\n"
                << "  location     " << ops::terminal_safe(updated.location) << "\n"
                << "  firmware     " << ops::terminal_safe(updated.firmware) << "\n"
                << "  metadata     " << ops::terminal_safe(updated.metadata) << "\n";
      return kExitOk;
    });
  }

  {
    struct Opts {
      std::string id, reason = "unspecified";
      PassphraseSource passphrase;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = device->add_subcommand(
        "revoke", "Revoke a device and all its certificates (final), and rewrite the CRL");
    cmd->add_option("ID", o->id, "Device id")->required();
    cmd->add_option("--reason", o->reason,
                    "RFC 5280 reason: " + std::string(kRevocationReasonNames))
        ->capture_default_str();
    o->passphrase.add_to(*cmd, "the CA key (to sign the CRL)");
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      auto reason = parse_revocation_reason(o->reason);
      if (!reason)
        return make_error(Errc::invalid_input,
                          "--reason must be one of " + std::string(kRevocationReasonNames));
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto ca,
                  open_signing_ca(ws.dir, o->passphrase));  // before revoking: the CRL must follow
      ONBOARD_TRY(auto revoked,
                  ops::revoke_device(*store, ca, ws.crl, o->id, *reason, ops::make_actor()));
      const auto& outcome = revoked.outcome;
      if (outcome.already_revoked) {
        if (revoked.crl_number) {
          std::cout << o->id << " already revoked; the CRL did not list it yet: CRL "
                    << *revoked.crl_number << " written to " << ws.crl.string() << "\n";
        } else {
          std::cout << o->id << " already revoked; nothing changed\n";
        }
        return kExitOk;
      }
      const std::uint64_t number = revoked.crl_number.value_or(0);
      std::cout << "revoked " << o->id << " (" << outcome.revoked_serials.size() << " certificate"
                << (outcome.revoked_serials.size() == 1 ? "" : "s") << "); CRL " << number
                << " written to " << ws.crl.string() << "\n";
      return kExitOk;
    });
  }
}

}  // namespace onboard::cli
