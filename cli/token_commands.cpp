#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/table.h"
#include "core/files.h"
#include "ops/operations.h"
#include "ops/views.h"
#include "ops/workspace.h"

namespace onboard::cli {

void add_token_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* token = app.add_subcommand("token", "Bearer tokens for the REST server (onboardctl serve)");
  token->require_subcommand(1);
  {
    struct Opts {
      std::string name, role, client_cert;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = token->add_subcommand(
        "create", "Create a token and print it once, alone on stdout; only its SHA-256 is stored");
    cmd->add_option("--name", o->name, "Token name, written into audit rows as rest:NAME")
        ->required();
    cmd->add_option("--role", o->role, "operator (read and write) or reader (read only)")
        ->required();
    cmd->add_option("--client-cert", o->client_cert,
                    "Bind the credential to this client certificate (PEM) instead of printing a "
                    "bearer token: for 'serve --client-ca'");
    cmd->callback([o, &global, &exit_code] {
      exit_code = run_action([&]() -> Result<int> {
        ONBOARD_TRY(auto ws, workspace(global));
        ONBOARD_TRY(auto store, ops::open_registry(ws));
        if (!o->client_cert.empty()) {
          ONBOARD_TRY(std::string pem, read_file(o->client_cert, 1 << 20));
          ONBOARD_TRY(auto credential, ops::create_certificate_credential(*store, o->name, o->role,
                                                                          pem, ops::make_actor()));
          std::cout << "token " << credential.name << " (" << to_string(credential.role)
                    << ") bound to the client certificate " << o->client_cert << "\n";
          return kExitOk;
        }
        ONBOARD_TRY(auto created,
                    ops::create_api_token(*store, o->name, o->role, ops::make_actor()));
        // The token alone on stdout, so `TOKEN=$(onboardctl token create ...)` just works.
        std::cout << created.plaintext.view() << std::endl;
        std::cerr << "token " << created.token.name << " (" << to_string(created.token.role)
                  << ") created; it is shown only now\n";
        return kExitOk;
      });
    });
  }
  {
    auto json_out = std::make_shared<bool>(false);
    auto* cmd = token->add_subcommand("list", "List tokens (names and roles, never the tokens)");
    cmd->add_flag("--json", *json_out, "Print JSON");
    cmd->callback([json_out, &global, &exit_code] {
      exit_code = run_action([&]() -> Result<int> {
        ONBOARD_TRY(auto ws, workspace(global));
        ONBOARD_TRY(auto store, ops::open_registry(ws));
        ONBOARD_TRY(auto tokens, ops::list_api_tokens(*store));
        if (*json_out) {
          nlohmann::json out = nlohmann::json::array();
          for (const auto& t : tokens) out.push_back(ops::token_json(t));
          std::cout << out.dump(2) << "\n";
          return kExitOk;
        }
        Table table({"NAME", "ROLE", "CREATED", "REVOKED"});
        for (const auto& t : tokens) {
          table.add({t.name, std::string(to_string(t.role)), iso_time(t.created_at),
                     t.revoked_at ? iso_time(*t.revoked_at) : std::string("-")});
        }
        table.print(std::cout);
        return kExitOk;
      });
    });
  }
  {
    auto name = std::make_shared<std::string>();
    auto* cmd = token->add_subcommand("revoke", "Revoke a token: the server refuses it at once");
    cmd->add_option("NAME", *name, "Token name")->required();
    cmd->callback([name, &global, &exit_code] {
      exit_code = run_action([&]() -> Result<int> {
        ONBOARD_TRY(auto ws, workspace(global));
        ONBOARD_TRY(auto store, ops::open_registry(ws));
        ONBOARD_TRY(bool changed, ops::revoke_api_token(*store, *name, ops::make_actor()));
        std::cout << "token " << *name << (changed ? " revoked" : " was already revoked") << "\n";
        return kExitOk;
      });
    });
  }
}

}  // namespace onboard::cli
