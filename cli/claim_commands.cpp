// onboardctl claim: the credentials devices enroll themselves with (docs/provisioning.md).
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "ca/authority.h"
#include "cli/commands.h"
#include "cli/table.h"
#include "core/time.h"
#include "ops/claims.h"
#include "ops/credentials.h"
#include "ops/duration.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/id_pattern.h"
#include "registry/store.h"

namespace onboard::cli {
namespace {

using nlohmann::json;

void add_claim_create(CLI::App& claim_cmd, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string name, expires, type, id_pattern, out, password_out, key_alg = "p256",
                                                                    broker = "localhost:8883";
    std::int64_t quota = 0;
    bool force = false;
    PassphraseSource passphrase, password{"password"};
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = claim_cmd.add_subcommand(
      "create",
      "Issue a claim: a short-lived certificate and key that devices use to ask for their own "
      "certificate over MQTT, packaged in an AES-256 zip");
  cmd->add_option("NAME", o->name, "The claim's name (letters, digits, '.', '_', '-')")->required();
  cmd->add_option("--quota", o->quota, "How many devices may enroll with it (1 to 10000000)")
      ->required();
  cmd->add_option("--expires", o->expires,
                  "How long it is valid: 90m, 36h, 7d (1 minute to 365 days); its certificate "
                  "expires then too")
      ->required();
  cmd->add_option("--type", o->type, "The type (group) enrolled devices get (default: none)");
  cmd->add_option("--id-pattern", o->id_pattern,
                  "The client ids devices may take, matched against the whole id: letters, "
                  "digits, '_', '-', '\\.', '.' (any id character), [classes] and ? * + {n,m}; "
                  "no groups or alternation (default: any device id)");
  cmd->add_option("--out", o->out, "The zip to write")->required();
  cmd->add_option("--password-out", o->password_out,
                  "Write the zip's password to this new 0600 file instead of printing it");
  o->password.add_to(*cmd,
                     "a zip password of your own (checked for strength; default: a generated "
                     "140-bit one)");
  cmd->add_option("--key-alg", o->key_alg,
                  "The claim key's algorithm: " + std::string(ca::kKeyAlgNames))
      ->capture_default_str();
  cmd->add_option("--broker", o->broker, "HOST[:PORT] the devices connect to, for claim.json")
      ->capture_default_str();
  cmd->add_flag("--force", o->force, "Replace existing output files");
  o->passphrase.add_to(*cmd, "the CA key");
  cmd->footer(
      "The zip holds ca-chain.pem, claim.crt, claim.key and claim.json. A client connecting with "
      "the claim certificate may only publish to $provision/<its client id>/csr and subscribe to "
      "$provision/<its client id>/+ (docs/provisioning.md). The broker's plugin hands the CSR to "
      "`onboardctl serve --provision-token-file` to sign. The password is shown once and stored "
      "nowhere.");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    ops::ClaimRequest request;
    request.claim.name = o->name;
    request.claim.quota = o->quota;
    request.claim.id_pattern = o->id_pattern;
    request.claim.device_type = o->type;
    request.out = o->out;
    request.replace = o->force;
    ONBOARD_TRY(request.lifetime,
                ops::parse_duration(o->expires, "--expires", 60, ops::kMaxClaimLifetime));
    ONBOARD_TRY(request.key_alg, ops::key_alg_option(o->key_alg));
    ONBOARD_TRY(request.broker, bundle::parse_broker_address(o->broker));
    if (o->quota < 1 || o->quota > registry::kMaxClaimQuota) {
      return make_error(Errc::invalid_input,
                        "--quota must be 1 to " + std::to_string(registry::kMaxClaimQuota));
    }
    if (!o->id_pattern.empty()) {
      if (auto problem = registry::id_pattern_problem(o->id_pattern))
        return make_error(Errc::invalid_input, "--id-pattern: " + *problem);
    }
    ONBOARD_TRY(std::optional<Secret> own_password, o->password.read());
    if (own_password) request.password = &*own_password;
    if (!o->password_out.empty()) {
      const auto password_path = std::filesystem::absolute(o->password_out).lexically_normal();
      if (password_path == std::filesystem::absolute(o->out).lexically_normal())
        return make_error(Errc::invalid_input, "--password-out names the zip itself");
      if (!o->force && std::filesystem::exists(password_path)) {
        return make_error(Errc::conflict,
                          o->password_out + " exists already; pass --force to replace it");
      }
    }
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ops::CredentialWriter password_file;
    auto write_password = [&](const ops::ClaimCreated& made) -> Status {
      if (o->password_out.empty()) return ok_status();
      Secret line(made.password.view());
      line.append("\n");
      std::vector<ops::OutputFile> files;
      files.push_back({o->password_out, std::move(line), 0600});
      return password_file.write(std::move(files), o->force);
    };
    auto created = ops::create_claim(*store, ca, request, ops::make_actor(), write_password);
    if (!created.ok()) {
      password_file.undo();
      return std::move(created).error();
    }
    const auto& c = created->claim;
    std::cout << "claim " << c.name << "  " << created->zip.string() << "\n"
              << "  quota        " << c.quota << " device" << (c.quota == 1 ? "" : "s") << "\n"
              << "  expires      " << iso_time(c.expires_at) << "\n"
              << "  id pattern   " << c.id_pattern << "\n"
              << "  type         " << (c.device_type.empty() ? "-" : c.device_type) << "\n"
              << "  serial       " << created->serial_hex << "\n"
              << "  sha256       " << created->zip_sha256 << " (zip)\n";
    if (o->password_out.empty()) {
      std::cout << "  password     " << created->password.view() << "\n"
                << "The password is shown only this once: send it by another channel than the "
                   "zip.\n";
    } else {
      std::cout << "password written to " << o->password_out << " (0600)\n";
    }
    return kExitOk;
  });
}

void add_claim_list(CLI::App& claim_cmd, const GlobalOptions& global, int& exit_code) {
  auto json_out = std::make_shared<bool>(false);
  auto* cmd = claim_cmd.add_subcommand("list", "List the claims");
  cmd->add_flag("--json", *json_out, "Print JSON");
  on_run(cmd, global, exit_code, [json_out](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto claims, store->list_claims());
    const UnixTime now = unix_now();
    if (*json_out) {
      json all = json::array();
      for (const auto& c : claims) all.push_back(ops::claim_json(c, now));
      std::cout << all.dump(2) << "\n";
      return kExitOk;
    }
    Table table({"NAME", "STATE", "USED", "QUOTA", "EXPIRES", "TYPE", "ID PATTERN"});
    for (const auto& c : claims) {
      table.add({c.name, ops::claim_state(c, now), std::to_string(c.quota_used),
                 std::to_string(c.quota), iso_time(c.expires_at),
                 c.device_type.empty() ? "-" : c.device_type, c.id_pattern});
    }
    table.print(std::cout);
    return kExitOk;
  });
}

void add_claim_show(CLI::App& claim_cmd, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string name;
    bool json_out = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = claim_cmd.add_subcommand("show", "Show one claim");
  cmd->add_option("NAME", o->name, "The claim's name")->required();
  cmd->add_flag("--json", o->json_out, "Print JSON");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto c, store->get_claim(o->name));
    const UnixTime now = unix_now();
    if (o->json_out) {
      std::cout << ops::claim_json(c, now).dump(2) << "\n";
      return kExitOk;
    }
    std::cout << "claim        " << c.name << "\n"
              << "state        " << ops::claim_state(c, now) << "\n"
              << "quota        " << c.quota_used << " of " << c.quota << " used\n"
              << "expires      " << iso_time(c.expires_at) << "\n"
              << "id pattern   " << c.id_pattern << "\n"
              << "type         " << (c.device_type.empty() ? "-" : c.device_type) << "\n"
              << "certificate  " << c.certificate_sha256 << "\n"
              << "created      " << iso_time(c.created_at) << " by " << c.created_by << "\n";
    if (c.revoked_at) std::cout << "revoked      " << iso_time(*c.revoked_at) << "\n";
    return kExitOk;
  });
}

void add_claim_revoke(CLI::App& claim_cmd, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string name, reason = "cessationOfOperation";
    PassphraseSource passphrase;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = claim_cmd.add_subcommand(
      "revoke",
      "Revoke a claim (final): its certificate goes on the CRL and the broker disconnects and "
      "refuses its clients");
  cmd->add_option("NAME", o->name, "The claim's name")->required();
  cmd->add_option("--reason", o->reason, std::string(kRevocationReasonNames))
      ->capture_default_str();
  o->passphrase.add_to(*cmd, "the CA key (to sign the CRL)");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    auto reason = parse_revocation_reason(o->reason);
    if (!reason) {
      return make_error(Errc::invalid_input,
                        "--reason must be one of " + std::string(kRevocationReasonNames));
    }
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ONBOARD_TRY(auto revoked,
                ops::revoke_claim(*store, ca, ws.crl, o->name, *reason, ops::make_actor()));
    if (revoked.outcome.already_revoked) {
      std::cout << "claim " << o->name << " was already revoked\n";
      return kExitOk;
    }
    std::cout << "revoked claim " << o->name << " (certificate " << revoked.outcome.serial_hex
              << ")\n";
    if (revoked.crl_number)
      std::cout << "CRL " << *revoked.crl_number << " written to " << ws.crl.string() << "\n";
    return kExitOk;
  });
}

}  // namespace

void add_claim_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* claim_cmd =
      app.add_subcommand("claim", "Claims: credentials devices enroll themselves with over MQTT");
  claim_cmd->require_subcommand(1);
  add_claim_create(*claim_cmd, global, exit_code);
  add_claim_list(*claim_cmd, global, exit_code);
  add_claim_show(*claim_cmd, global, exit_code);
  add_claim_revoke(*claim_cmd, global, exit_code);
}

}  // namespace onboard::cli
