#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/rule_table.h"
#include "ops/operations.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/acl.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

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

}  // namespace

// ---- acl -------------------------------------------------------------------------------------

void add_acl_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
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
    on_run(cmd, global, exit_code, [o, allow](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto subject, o->subject.get());
      // Checked here too, to name the options; ops::add_rule checks the same in its own words.
      if (!acl::parse_access(o->access))
        return make_error(Errc::invalid_input,
                          "--access must be publish, subscribe, read or readwrite");
      if (auto problem = acl::pattern_problem(o->topic))
        return make_error(Errc::invalid_input, "--topic: " + *problem);
      if (o->priority < -ops::kMaxRulePriority || o->priority > ops::kMaxRulePriority)
        return make_error(Errc::invalid_input, "--priority must be within ±1000000");
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ops::RuleRequest rule{subject.first,
                            subject.second,
                            o->access,
                            o->topic,
                            allow ? registry::RuleEffect::allow : registry::RuleEffect::deny,
                            o->priority};
      ONBOARD_TRY(auto record, ops::add_rule(*store, rule, ops::make_actor()));
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
    on_run(cmd, global, exit_code, [id](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(std::int64_t rule_id, ops::parse_rule_id(*id));
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_CHECK(ops::remove_rule(*store, rule_id, ops::make_actor()));
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
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto subject, o->subject.get());
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto rules, ops::list_rules(*store, subject.first, subject.second));
      if (o->json_out) {
        json out = json::array();
        for (const auto& r : rules) out.push_back(ops::rule_json(r));
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
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
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
      ONBOARD_TRY(auto store, ops::open_registry(ws));
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

}  // namespace onboard::cli
