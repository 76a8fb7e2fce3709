#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "ca/authority.h"
#include "cli/table.h"
#include "ops/operations.h"
#include "ops/workspace.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

}  // namespace

// ---- group --------------------------------------------------------------------------------------

void add_group_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
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
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      if (auto problem = registry::group_name_problem(o->name))
        return make_error(Errc::invalid_input, *problem);
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto group,
                  ops::create_group(*store, o->name, o->description, ops::make_actor()));
      std::cout << "created group " << group.name << "\n";
      return kExitOk;
    });
  }
  {
    auto* cmd = group_cmd->add_subcommand("list", "List groups");
    on_run(cmd, global, exit_code, [](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto groups, ops::list_groups(*store));
      Table table({"GROUP", "CREATED", "DESCRIPTION"});
      for (const auto& g : groups) table.add({g.name, iso_time(g.created_at), g.description});
      table.print(std::cout);
      return kExitOk;
    });
  }
}

}  // namespace onboard::cli
