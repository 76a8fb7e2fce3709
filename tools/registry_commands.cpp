#include "tools/registry_commands.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>

#include "ca/authority.h"
#include "core/files.h"
#include "core/identity.h"
#include "registry/acl.h"
#include "registry/sqlite_store.h"
#include "tools/credentials.h"
#include "tools/operations.h"
#include "tools/table.h"
#include "tools/text.h"
#include "tools/views.h"
#include "tools/workspace.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

// Key material for a new certificate: the device's CSR, a key made here and written to a file,
// or a key made here and held (encrypted) in the registry until the device is bundled.
struct KeySource {
  std::string csr, key_alg = "rsa2048", key_out, cert_out;
  int days = 365;
  bool force = false;
  bool hold_key = false;
  PassphraseSource hold_passphrase{"hold-passphrase"};

  void add_to(CLI::App& cmd) {
    auto* csr_opt = cmd.add_option(
        "--csr", csr, "PEM CSR made by the device (its key never leaves it); CN = device id");
    auto* alg_opt =
        cmd.add_option("--key-alg", key_alg,
                       "Key made here: " + std::string(ca::kKeyAlgNames) + " (default rsa2048)");
    auto* key_opt =
        cmd.add_option("--key-out", key_out, "Where the key made here goes (PKCS#8 PEM, 0600)");
    auto* hold_opt = cmd.add_flag(
        "--hold-key", hold_key,
        "Keep the key made here in the registry, encrypted under the hold passphrase, until the "
        "device is bundled (then it is wiped)");
    csr_opt->excludes(alg_opt)->excludes(key_opt)->excludes(hold_opt);
    hold_opt->excludes(key_opt);
    cmd.add_option("--cert-out", cert_out, "Also write the certificate (PEM) here");
    cmd.add_option("--days", days, "Certificate validity in days")->capture_default_str();
    cmd.add_flag("--force", force, "Replace existing output files");
    hold_passphrase.add_to(cmd, "the held device keys (with --hold-key)");
  }
};

bool same_path(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ec_a, ec_b;
  const auto canonical_a = std::filesystem::weakly_canonical(a, ec_a);
  const auto canonical_b = std::filesystem::weakly_canonical(b, ec_b);
  if (ec_a || ec_b) {
    return std::filesystem::absolute(a).lexically_normal() ==
           std::filesystem::absolute(b).lexically_normal();
  }
  return canonical_a == canonical_b;
}

// The plan ops:: follows, checked here in the words of the command line. `hold_storage` keeps
// the hold passphrase alive (and wiped afterwards) while the plan points at it.
Result<ops::KeyPlan> key_plan(const KeySource& source, std::optional<Secret>& hold_storage) {
  ONBOARD_CHECK(check_validity_days(source.days));
  ops::KeyPlan plan;
  plan.days = source.days;
  if (!source.csr.empty()) {
    ONBOARD_TRY(plan.csr_pem, read_file(source.csr, 1 << 20));
    plan.csr_label = source.csr;
    return plan;
  }
  if (source.hold_key) {
    ONBOARD_TRY(hold_storage, source.hold_passphrase.read());
    if (!hold_storage) {
      return make_error(
          Errc::invalid_input,
          "--hold-key needs --hold-passphrase-env VAR or --hold-passphrase-file FILE");
    }
    if (auto problem = ops::hold_passphrase_problem(*hold_storage))
      return make_error(Errc::invalid_input, "hold passphrase: " + *problem);
    plan.hold_passphrase = &*hold_storage;
  } else if (source.key_out.empty()) {
    return make_error(Errc::invalid_input,
                      "a key made here must go somewhere: give --key-out FILE, --hold-key, or use "
                      "--csr for a device-held key");
  } else if (!source.cert_out.empty() && same_path(source.key_out, source.cert_out)) {
    // With --force the certificate would silently replace the only copy of the key.
    return make_error(Errc::invalid_input, "--key-out and --cert-out name the same file");
  }
  ONBOARD_TRY(plan.key_alg, key_alg_option(source.key_alg));
  return plan;
}

// Writes the requested key and certificate files, both or neither; `writer` remembers them so a
// registry refusal afterwards can undo them (a file that --force replaced is put back).
ops::HandOut write_outputs(CredentialWriter& writer, const KeySource& source) {
  return [&writer, &source](const ops::Issuance& issued) -> Status {
    std::vector<OutputFile> files;
    if (issued.private_key) {
      ONBOARD_TRY(Secret pem, ca::private_key_to_pem(issued.private_key.get()));
      files.push_back({source.key_out, std::move(pem), 0600});
    }
    if (!source.cert_out.empty())
      files.push_back({source.cert_out, Secret(issued.certificate.pem), 0644});
    return writer.write(std::move(files), source.force);
  };
}

const char* key_custody(const ops::Issuance& issued) {
  if (issued.key_held) return " (made here; held encrypted in the registry until bundled)";
  if (issued.private_key) return " (made here)";
  return " (held by the device)";
}

void print_rules(const std::vector<registry::RuleRecord>& rules) {
  Table table({"RULE", "FROM", "EFFECT", "ACCESS", "PATTERN", "PRIORITY"});
  for (const auto& r : rules) {
    table.add({std::to_string(r.id), std::string(to_string(r.subject_kind)) + " " + r.subject,
               std::string(to_string(r.effect)), acl::access_name(r.access), r.pattern,
               std::to_string(r.priority)});
  }
  table.print(std::cout);
}

// ---- init ------------------------------------------------------------------------------------

Status set_group_access(const std::filesystem::path& path, gid_t gid, mode_t mode) {
  if (::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0 || ::chmod(path.c_str(), mode) != 0) {
    return make_error(
        Errc::io, "cannot set the group or mode of " + path.string() + ": " + std::strerror(errno));
  }
  return ok_status();
}

// The broker opens the registry after dropping its privileges, as a member of the group that
// owns the data directory: every folder above it must let that group (or everyone) through, or
// the broker cannot start. Returns the first folder that does not, walking down from `/`.
std::optional<std::filesystem::path> unsearchable_ancestor(const std::filesystem::path& dir,
                                                           gid_t gid) {
  std::filesystem::path prefix;
  for (const auto& part : std::filesystem::absolute(dir).lexically_normal().parent_path()) {
    prefix /= part;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) != 0) return prefix;
    const bool passes = (st.st_mode & S_IXOTH) != 0 || (st.st_gid == gid && (st.st_mode & S_IXGRP));
    if (!passes) return prefix;
  }
  return std::nullopt;
}

void add_init(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string group = "mosquitto", key_alg = "rsa3072";
    bool no_group = false;
    ca::CaInitOptions ca;
    PassphraseSource passphrase;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd =
      app.add_subcommand("init", "Create the data directory: registry, CA and an empty CRL");
  cmd->add_option("--group", o->group,
                  "Group that may read the registry (the broker's user is in it); the directory is "
                  "made setgid "
                  "and group-writable, because an SQLite WAL reader must create the -shm file")
      ->capture_default_str();
  cmd->add_flag("--no-group", o->no_group,
                "Keep everything private to the operator (the broker cannot read it)");
  cmd->add_option("--key-alg", o->key_alg,
                  "CA key algorithm: " + std::string(ca::kKeyAlgNames) + " (default rsa3072)");
  cmd->add_flag("--intermediate", o->ca.intermediate,
                "Also create an issuing CA (the root key can then go offline)");
  cmd->add_option("--crl-url", o->ca.crl_url,
                  "CRL distribution point URL written into issued certificates");
  cmd->add_option("--root-crl-url", o->ca.root_crl_url,
                  "With --intermediate: where the root's own CRL is published, written into the "
                  "intermediate's certificate (default: --crl-url with its last path segment "
                  "replaced by root-crl, as 'onboardctl serve' publishes it)");
  cmd->add_option("--org", o->ca.organization, "Organization (O) in the CA subjects");
  o->passphrase.add_to(*cmd, "the new CA keys");
  on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
    if (std::filesystem::exists(ws.registry)) {
      return make_error(Errc::conflict, "a registry already exists in " + ws.dir.string() +
                                            "; refusing to touch it");
    }
    ONBOARD_TRY(o->ca.root_key_alg, key_alg_option(o->key_alg));
    o->ca.intermediate_key_alg = o->ca.root_key_alg;
    std::optional<gid_t> gid;
    if (!o->no_group) {
      const group* g = ::getgrnam(o->group.c_str());
      if (g == nullptr) {
        return make_error(
            Errc::not_found,
            "group '" + o->group +
                "' does not exist; create it, choose another with --group, or pass --no-group");
      }
      gid = g->gr_gid;
    }
    std::error_code ec;
    std::filesystem::create_directories(ws.dir, ec);
    if (ec) return make_error(Errc::io, "cannot create " + ws.dir.string() + ": " + ec.message());
    if (gid)
      ONBOARD_CHECK(set_group_access(ws.dir, *gid, 02770));
    else
      ::chmod(ws.dir.c_str(), 0700);

    bool made_ca = false;
    if (!std::filesystem::exists(ca::CaPaths(ws.dir).root_cert)) {
      ONBOARD_TRY(auto passphrase, o->passphrase.read());
      o->ca.passphrase = passphrase ? &*passphrase : nullptr;
      ONBOARD_TRY(auto created, ca::Authority::create(ws.dir, o->ca, unix_now()));
      (void)created;
      made_ca = true;
    }
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ca::CaPaths paths(ws.dir);
    ONBOARD_CHECK(
        write_file_atomic(paths.dir / "chain.pem", ca.chain_pem(), 0644, Overwrite::replace));
    if (gid) ONBOARD_CHECK(set_group_access(paths.dir, *gid, 0750));

    ONBOARD_TRY(auto store,
                registry::open_sqlite_store(ws.registry, registry::OpenMode::read_write));
    if (gid) ONBOARD_CHECK(set_group_access(ws.registry, *gid, 0660));
    ONBOARD_TRY(std::uint64_t crl_number, write_crl(*store, ca, ws.crl));
    ONBOARD_CHECK(record_intermediate(*store, ca));
    std::string root_crl_line;
    if (ca.has_intermediate()) {
      ONBOARD_TRY(auto passphrase, o->passphrase.read());
      auto root_number = write_root_crl(*store, ca, ws, passphrase ? &*passphrase : nullptr);
      if (root_number.ok()) {
        root_crl_line = "  root CRL  " + ws.root_crl.string() + " (number " +
                        std::to_string(root_number->value_or(0)) + ")\n";
      } else if (root_number.error().code == Errc::not_found) {
        root_crl_line = "  root CRL  not written: " + root_number.error().message + "\n";
      } else {
        return std::move(root_number).error();
      }
    }
    std::cout << "initialised " << ws.dir.string() << "\n"
              << "  registry  " << ws.registry.string() << "\n"
              << "  CA        " << paths.dir.string() << (made_ca ? " (new)" : " (existing)")
              << "\n"
              << "  chain     " << (paths.dir / "chain.pem").string() << "\n"
              << "  CRL       " << ws.crl.string() << " (number " << crl_number << ")\n"
              << root_crl_line << "  access    "
              << (gid ? "group " + o->group + " may read the registry, certificates and CRL"
                      : std::string("operator only"))
              << "\n";
    if (gid) {
      if (auto blocked = unsearchable_ancestor(ws.dir, *gid)) {
        std::cerr << "warning: group " << o->group << " cannot reach " << ws.dir.string() << ": "
                  << blocked->string() << " is not searchable by it, so a broker running as a "
                  << "member of that group cannot open the registry (chmod o+x "
                  << blocked->string() << ", or choose another data directory)\n";
      }
    }
    return kExitOk;
  });
}

// ---- device ----------------------------------------------------------------------------------

void add_device(CLI::App& app, const GlobalOptions& global, int& exit_code) {
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
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      if (auto problem = device_id_problem(o->id)) return make_error(Errc::invalid_input, *problem);
      if (!o->type.empty()) {
        if (auto problem = registry::group_name_problem(o->type))
          return make_error(Errc::invalid_input, "--type: " + *problem);
      }
      if (auto problem = registry::metadata_problem(o->metadata))
        return make_error(Errc::invalid_input, "--metadata: " + *problem);
      std::optional<Secret> hold_passphrase;
      ONBOARD_TRY(auto plan, key_plan(o->key, hold_passphrase));
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
      ops::RegisterRequest request{
          registry::NewDevice{o->id, o->name, o->type, o->location, o->firmware, o->metadata},
          std::move(plan),
          {},
          0};
      CredentialWriter outputs;
      auto registered =
          ops::register_device(*store, ca, request, make_actor(), write_outputs(outputs, o->key));
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
      std::string status, type, after;
      std::size_t limit = 100;
      bool json_out = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = device->add_subcommand("list", "List devices, sorted by id, one page at a time");
    cmd->add_option("--status", o->status,
                    "Only devices with this status: active, disabled or revoked");
    cmd->add_option("--type", o->type, "Only devices of this type");
    cmd->add_option("--limit", o->limit, "Page size (0: everything)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--after", o->after,
                    "Start after this device id (the last id of the previous page)");
    cmd->add_flag("--json", o->json_out, "Print JSON");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      auto filter = ops::device_filter(o->status, o->type, o->limit, o->after);
      // ops names the field ("status must be ..."); here it is an option.
      if (!filter.ok()) return make_error(filter.error().code, "--" + filter.error().message);
      ONBOARD_TRY(auto store, open_registry(ws));
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
            std::cout << (printed++ == 0 ? "\n" : ",\n") << device_json(d).dump();
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
      Table table({"ID", "STATUS", "TYPE", "LOCATION", "FIRMWARE", "CREATED"});
      for (const auto& d : devices) {
        table.add({d.id, std::string(to_string(d.status)), d.type, d.location, d.firmware,
                   iso_time(d.created_at)});
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
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto details, ops::device_details(*store, o->id));
      const auto& d = details.device;
      const auto& certs = details.certificates;
      const auto& rules = details.effective_rules;
      if (o->json_out) {
        json out = device_json(d);
        out["certificates"] = json::array();
        for (const auto& c : certs) out["certificates"].push_back(certificate_json(c, true));
        out["rules"] = json::array();
        for (const auto& r : rules) out["rules"].push_back(rule_json(r));
        out["server_key_copy"] = held_key_json(details.held_key);
        std::cout << out.dump(2) << "\n";
        return kExitOk;
      }
      // Free text is escaped: it may predate the checks on what is stored.
      std::cout << "device    " << d.id
                << (d.name != d.id ? " (" + terminal_safe(d.name) + ")" : "") << "\n"
                << "status    " << to_string(d.status) << "\n"
                << "type      " << terminal_safe(d.type) << "\nlocation  "
                << terminal_safe(d.location) << "\nfirmware  " << terminal_safe(d.firmware) << "\n"
                << "created   " << iso_time(d.created_at) << "\nupdated   "
                << iso_time(d.updated_at) << "\n"
                << "metadata  " << terminal_safe(d.metadata) << "\n"
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
    on_run(cmd, global, exit_code, [id, enable](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(bool changed, ops::set_device_enabled(*store, *id, enable, make_actor()));
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
    on_run(cmd, global, exit_code, [o, cmd](const Workspace& ws) -> Result<int> {
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
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto updated, ops::update_device(*store, o->id, update, make_actor()));
      std::cout << "updated " << updated.id << "\n"
                << "  name         " << terminal_safe(updated.name) << "\n"
                << "  type         " << terminal_safe(updated.type) << "\n"
                << "  location     " << terminal_safe(updated.location) << "\n"
                << "  firmware     " << terminal_safe(updated.firmware) << "\n"
                << "  metadata     " << terminal_safe(updated.metadata) << "\n";
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
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      auto reason = parse_revocation_reason(o->reason);
      if (!reason)
        return make_error(Errc::invalid_input,
                          "--reason must be one of " + std::string(kRevocationReasonNames));
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto ca,
                  open_signing_ca(ws.dir, o->passphrase));  // before revoking: the CRL must follow
      ONBOARD_TRY(auto revoked,
                  ops::revoke_device(*store, ca, ws.crl, o->id, *reason, make_actor()));
      const auto& outcome = revoked.outcome;
      if (outcome.already_revoked) {
        std::cout << o->id << " already revoked; nothing changed\n";
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

// ---- cert ------------------------------------------------------------------------------------

void add_cert(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* cert = app.add_subcommand("cert", "Device certificates");
  cert->require_subcommand(1);
  {
    struct ListOpts {
      std::string id;
      bool json_out = false;
    };
    auto o = std::make_shared<ListOpts>();
    auto* cmd = cert->add_subcommand("list", "List a device's certificates, newest last");
    cmd->add_option("ID", o->id, "Device id")->required();
    cmd->add_flag("--json", o->json_out, "Print JSON, with each certificate's PEM");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto certs, ops::list_certificates(*store, o->id));
      if (o->json_out) {
        json out = json::array();
        for (const auto& c : certs) out.push_back(certificate_json(c, true));
        std::cout << out.dump(2) << "\n";
        return kExitOk;
      }
      Table table({"SERIAL", "STATUS", "NOT BEFORE", "NOT AFTER", "SHA-256"});
      for (const auto& c : certs) {
        std::string status(to_string(c.status));
        if (c.revocation_reason)
          status += " (" + std::string(revocation_reason_name(*c.revocation_reason)) + ")";
        table.add({c.serial_hex, status, iso_time(c.not_before), iso_time(c.not_after),
                   c.sha256_fingerprint});
      }
      table.print(std::cout);
      return kExitOk;
    });
  }
  struct Opts {
    std::string id;
    KeySource key;
    PassphraseSource passphrase;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = cert->add_subcommand(
      "renew", "Issue a new certificate for a device; its active ones are revoked (superseded)");
  cmd->add_option("ID", o->id, "Device id")->required();
  o->key.add_to(*cmd);
  o->passphrase.add_to(*cmd, "the CA key");
  on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
    std::optional<Secret> hold_passphrase;
    ONBOARD_TRY(auto plan, key_plan(o->key, hold_passphrase));
    ONBOARD_TRY(auto store, open_registry(ws));
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    CredentialWriter outputs;
    auto renewed = ops::renew_certificate(*store, ca, ws.crl, o->id, plan, make_actor(),
                                          write_outputs(outputs, o->key));
    if (!renewed.ok()) {
      outputs.undo();
      return std::move(renewed).error();
    }
    // Recorded: the files stay even if the CRL could not be rewritten.
    if (renewed->crl_error) return *renewed->crl_error;
    std::cout << "renewed " << o->id << ": serial " << renewed->issuance.certificate.info.serial_hex
              << "; superseded " << renewed->added.superseded_serials.size() << "; CRL "
              << renewed->crl_number << "\n  key " << renewed->issuance.certificate.info.key
              << key_custody(renewed->issuance) << "\n";
    for (const auto& path : outputs.written()) std::cout << "  wrote " << path.string() << "\n";
    return kExitOk;
  });
}

// ---- acl -------------------------------------------------------------------------------------

struct SubjectOption {
  std::string device, group;
  void add_to(CLI::App& cmd) {
    auto* d = cmd.add_option("--device", device, "The rule's device");
    auto* g = cmd.add_option("--group", group,
                             "The rule's group (a device type, or 'default' for every device)");
    d->excludes(g);
  }
  Result<std::pair<registry::SubjectKind, std::string>> get() const {
    if (device.empty() == group.empty())
      return make_error(Errc::invalid_input, "give either --device ID or --group NAME");
    if (!device.empty()) return std::pair{registry::SubjectKind::device, device};
    return std::pair{registry::SubjectKind::group, group};
  }
};

void add_acl(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* acl_cmd = app.add_subcommand("acl", "Topic rights: grant, deny, remove, list and explain");
  acl_cmd->require_subcommand(1);
  for (bool allow : {true, false}) {
    struct Opts {
      SubjectOption subject;
      std::string access, topic;
      int priority = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = acl_cmd->add_subcommand(allow ? "grant" : "deny",
                                        allow ? "Add an allow rule" : "Add a deny rule");
    o->subject.add_to(*cmd);
    cmd->add_option("--access", o->access, "publish, subscribe, read, or readwrite (all three)")
        ->required();
    cmd->add_option("--topic", o->topic,
                    "Topic filter; %d = device id, %c = client id, %u = username")
        ->required();
    cmd->add_option("--priority", o->priority, "Higher priorities decide first; deny wins ties")
        ->capture_default_str();
    on_run(cmd, global, exit_code, [o, allow](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto subject, o->subject.get());
      // Checked here too, to name the options; ops::add_rule checks the same in its own words.
      if (!acl::parse_access(o->access))
        return make_error(Errc::invalid_input,
                          "--access must be publish, subscribe, read or readwrite");
      if (auto problem = acl::pattern_problem(o->topic))
        return make_error(Errc::invalid_input, "--topic: " + *problem);
      if (o->priority < -ops::kMaxRulePriority || o->priority > ops::kMaxRulePriority)
        return make_error(Errc::invalid_input, "--priority must be within ±1000000");
      ONBOARD_TRY(auto store, open_registry(ws));
      ops::RuleRequest rule{subject.first,
                            subject.second,
                            o->access,
                            o->topic,
                            allow ? registry::RuleEffect::allow : registry::RuleEffect::deny,
                            o->priority};
      ONBOARD_TRY(auto record, ops::add_rule(*store, rule, make_actor()));
      std::cout << "rule " << record.id << ": " << to_string(record.effect) << " "
                << acl::access_name(record.access) << " '" << record.pattern << "' for "
                << to_string(record.subject_kind) << " " << record.subject << "\n";
      return kExitOk;
    });
  }
  {
    auto id = std::make_shared<std::string>();
    auto* cmd = acl_cmd->add_subcommand("remove", "Remove a rule by its id");
    cmd->add_option("RULE-ID", *id, "Rule id (from acl list)")->required();
    on_run(cmd, global, exit_code, [id](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(std::int64_t rule_id, ops::parse_rule_id(*id));
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_CHECK(ops::remove_rule(*store, rule_id, make_actor()));
      std::cout << "removed rule " << rule_id << "\n";
      return kExitOk;
    });
  }
  {
    struct Opts {
      SubjectOption subject;
      bool json_out = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = acl_cmd->add_subcommand("list", "List the rules of a device or a group");
    o->subject.add_to(*cmd);
    cmd->add_flag("--json", o->json_out, "Print JSON");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto subject, o->subject.get());
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto rules, ops::list_rules(*store, subject.first, subject.second));
      if (o->json_out) {
        json out = json::array();
        for (const auto& r : rules) out.push_back(rule_json(r));
        std::cout << out.dump(2) << "\n";
      } else {
        print_rules(rules);
      }
      return kExitOk;
    });
  }
  {
    struct Opts {
      std::string device, access, topic;
      bool json_out = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = acl_cmd->add_subcommand(
        "check", "Explain whether a device may publish, subscribe to or read a topic");
    cmd->add_option("DEVICE", o->device, "Device id")->required();
    cmd->add_option("ACCESS", o->access, "publish, subscribe or read")->required();
    cmd->add_option("TOPIC", o->topic, "Topic (a filter for subscribe)")->required();
    cmd->add_flag("--json", o->json_out, "Print JSON");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      auto access = acl::parse_access(o->access);
      if (!access ||
          (*access != acl::kPublish && *access != acl::kSubscribe && *access != acl::kRead)) {
        return make_error(Errc::invalid_input, "ACCESS must be one of publish, subscribe or read");
      }
      // The broker refuses these before any ACL check; "no rule matches" would mislead.
      if (*access == acl::kSubscribe ? !acl::is_valid_filter(o->topic)
                                     : !acl::is_valid_topic(o->topic)) {
        return make_error(
            Errc::invalid_input,
            *access == acl::kSubscribe
                ? "TOPIC is not a valid subscription filter ('+' and '#' must be whole "
                  "levels, '#' the last)"
                : "TOPIC is not a valid topic name (empty, or holds '+' or '#')");
      }
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto explained, ops::explain_access(*store, o->device, o->access, o->topic));
      const bool allowed = explained.allowed;
      const std::string& why = explained.reason;
      if (o->json_out) {
        json out{{"device", o->device},
                 {"access", o->access},
                 {"topic", o->topic},
                 {"decision", allowed ? "allow" : "deny"},
                 {"reason", why}};
        if (explained.rule_id) out["rule_id"] = *explained.rule_id;
        std::cout << out.dump(2) << "\n";
      } else {
        std::cout << (allowed ? "allow" : "deny") << ": " << why << "\n";
      }
      return kExitOk;
    });
  }
}

// ---- group, crl, audit -----------------------------------------------------------------------

void add_group(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* group_cmd =
      app.add_subcommand("group", "Groups of devices (device types) that ACL rules can name");
  group_cmd->require_subcommand(1);
  {
    struct Opts {
      std::string name, description;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = group_cmd->add_subcommand("create", "Create a group");
    cmd->add_option("NAME", o->name, "Group name (same characters as a device id)")->required();
    cmd->add_option("--description", o->description,
                    "What the group is for (printable text, at most 256 bytes)");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      if (auto problem = registry::group_name_problem(o->name))
        return make_error(Errc::invalid_input, *problem);
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto group, ops::create_group(*store, o->name, o->description, make_actor()));
      std::cout << "created group " << group.name << "\n";
      return kExitOk;
    });
  }
  {
    auto* cmd = group_cmd->add_subcommand("list", "List groups");
    on_run(cmd, global, exit_code, [](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto groups, ops::list_groups(*store));
      Table table({"GROUP", "CREATED", "DESCRIPTION"});
      for (const auto& g : groups) table.add({g.name, iso_time(g.created_at), g.description});
      table.print(std::cout);
      return kExitOk;
    });
  }
}

// The root CA's own CRL, next to the CRL, when there is an intermediate and the root key is here;
// a root key kept offline is no error (this runs where the key is brought out).
Status write_root_crl_if_possible(registry::Store& store, const ca::Authority& ca,
                                  const Workspace& ws, const PassphraseSource& source) {
  if (!ca.has_intermediate()) return ok_status();
  ONBOARD_TRY(auto passphrase, source.read());
  auto number = write_root_crl(store, ca, ws, passphrase ? &*passphrase : nullptr);
  if (!number.ok() && number.error().code == Errc::not_found) {
    std::cout << "root CRL not written: " << number.error().message << "\n";
    return ok_status();
  }
  if (!number.ok()) return std::move(number).error();
  std::cout << "root CRL " << number->value_or(0) << " written to " << ws.root_crl.string() << "\n";
  return ok_status();
}

void add_crl(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string out, validity = "7d", if_expiring_within;
    PassphraseSource passphrase;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "crl",
      "Write the current CRL (PEM) under the next CRL number; with an intermediate and the root "
      "key in DATA_DIR/ca, also the root's CRL to DATA_DIR/root-crl.pem");
  cmd->add_option("--out", o->out, "Where to write it (default: DATA_DIR/crl.pem)");
  cmd->add_option("--validity", o->validity,
                  "How long the CRL is in force (its next update), e.g. 7d or 36h. A broker that "
                  "loads it (crlfile) refuses every device once it expires")
      ->capture_default_str();
  cmd->add_option(
      "--if-expiring-within", o->if_expiring_within,
      "Refresh mode: rewrite only when the current CRL is missing, unreadable or "
      "expires within this time (e.g. 3d); otherwise leave it. Exits 0 whether it rewrote or not");
  o->passphrase.add_to(*cmd, "the CA key");
  on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
    ONBOARD_TRY(UnixTime validity, ops::parse_duration(o->validity, "--validity",
                                                       ops::kMinCrlValidity, ops::kMaxCrlValidity));
    const std::filesystem::path path = o->out.empty() ? ws.crl : std::filesystem::path(o->out);
    std::string why;
    if (!o->if_expiring_within.empty()) {
      ONBOARD_TRY(UnixTime within,
                  ops::parse_duration(o->if_expiring_within, "--if-expiring-within"));
      auto standing = ops::crl_standing(path, unix_now(), within);
      if (!standing.due) {
        std::cout << path.string() << ": " << standing.why << " (next update "
                  << iso_time(standing.next_update) << "); not rewritten\n";
        return kExitOk;
      }
      why = " (" + standing.why + ")";
    }
    ONBOARD_TRY(auto store, open_registry(ws));
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ONBOARD_TRY(std::uint64_t number, write_crl(*store, ca, path, validity));
    std::cout << "CRL " << number << " written to " << path.string() << ", next update "
              << iso_time(unix_now() + validity) << why << "\n";
    ONBOARD_CHECK(write_root_crl_if_possible(*store, ca, ws, o->passphrase));
    return kExitOk;
  });
}

void add_audit(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* audit = app.add_subcommand("audit", "The hash-chained audit log");
  audit->require_subcommand(1);
  {
    struct Opts {
      std::size_t limit = 100;
      std::int64_t after = 0;
      bool json_out = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = audit->add_subcommand("list", "List audit events, oldest first");
    cmd->add_option("--limit", o->limit, "How many (0: all)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--after", o->after, "Only events after this sequence number");
    cmd->add_flag("--json", o->json_out, "Print JSON");
    on_run(cmd, global, exit_code, [o](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto events, ops::list_audit(*store, o->limit, o->after));
      if (o->json_out) {
        json out = json::array();
        for (const auto& e : events) out.push_back(audit_json(e));
        std::cout << out.dump(2) << "\n";
        return kExitOk;
      }
      Table table({"SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAILS"});
      for (const auto& e : events)
        table.add({std::to_string(e.seq), iso_time(e.at), e.actor, e.action, e.subject, e.details});
      table.print(std::cout);
      return kExitOk;
    });
  }
  {
    auto* cmd =
        audit->add_subcommand("verify", "Check the audit chain: an edited or deleted row is named");
    on_run(cmd, global, exit_code, [](const Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, open_registry(ws));
      ONBOARD_TRY(auto check, store->verify_audit());
      if (!check.ok()) {
        return make_error(Errc::corrupt, "audit log tampered with: " + check.problem);
      }
      std::cout << "audit log intact: " << check.rows_checked << " events, head " << check.head_hash
                << "\n";
      return kExitOk;
    });
  }
}

}  // namespace

void add_registry_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  add_init(app, global, exit_code);
  add_device(app, global, exit_code);
  add_cert(app, global, exit_code);
  add_acl(app, global, exit_code);
  add_group(app, global, exit_code);
  add_crl(app, global, exit_code);
  add_audit(app, global, exit_code);
}

}  // namespace onboard::cli
