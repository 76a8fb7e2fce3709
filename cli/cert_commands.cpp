#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/key_options.h"
#include "cli/table.h"
#include "ops/credentials.h"
#include "ops/operations.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/acl.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

}  // namespace

// ---- cert ------------------------------------------------------------------------------------

void add_cert_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
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
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto certs, ops::list_certificates(*store, o->id));
      if (o->json_out) {
        json out = json::array();
        for (const auto& c : certs) out.push_back(ops::certificate_json(c, true));
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
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    std::optional<Secret> hold_passphrase;
    ONBOARD_TRY(auto plan, key_plan(o->key, hold_passphrase));
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ops::CredentialWriter outputs;
    auto renewed = ops::renew_certificate(*store, ca, ws.crl, o->id, plan, ops::make_actor(),
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

}  // namespace onboard::cli
