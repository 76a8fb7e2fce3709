#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/table.h"
#include "ops/operations.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/acl.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

}  // namespace

// ---- audit --------------------------------------------------------------------------------------

void add_audit_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
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
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto events, ops::list_audit(*store, o->limit, o->after));
      if (o->json_out) {
        json out = json::array();
        for (const auto& e : events) out.push_back(ops::audit_json(e));
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
    auto* cmd = audit->add_subcommand(
        "verify",
        "Check the audit chain (an edited or deleted row is named) and that the devices, "
        "certificates, rules, groups and API tokens are as the log recorded them (an entity "
        "changed behind the registry's back is named)");
    on_run(cmd, global, exit_code, [](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto check, store->verify_audit());
      if (!check.ok() && check.entity.empty()) {
        return make_error(Errc::corrupt, "audit log tampered with: " + check.problem);
      }
      if (!check.ok()) {
        return make_error(Errc::corrupt,
                          "registry state differs from the audit log: " + check.problem);
      }
      std::cout << "audit log intact: " << check.rows_checked << " events, head " << check.head_hash
                << "\n"
                << "registry state matches the log: " << check.entities_checked
                << " devices, certificates, rules, groups, tokens and claims\n";
      return kExitOk;
    });
  }
}

}  // namespace onboard::cli
