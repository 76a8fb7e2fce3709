// onboardctl: the operator's tool for the mosquitto-onboard CA and device registry.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/cli.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  // Every file this tool creates starts private; group access is granted explicitly where needed.
  ::umask(077);
  using namespace onboard::cli;

  CLI::App app{
      "onboardctl: onboard IoT devices onto a Mosquitto broker with an internal CA and a "
      "live device registry"};
  app.name("onboardctl");
  app.require_subcommand(1);
  app.set_version_flag("--version", "onboardctl 0.1.0");
  GlobalOptions global;
  app.add_option("--data-dir", global.data_dir,
                 std::string("Data directory (CA, CRL and the registry unless --registry puts it "
                             "elsewhere); default $ONBOARD_DATA_DIR, else ") +
                     kDefaultDataDir)
      ->envname("ONBOARD_DATA_DIR");
  add_registry_option(app, global);

  int exit_code = kExitOk;
  add_commands(app, global, exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << '\n';
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::cerr << "onboardctl: " << e.what() << "\nRun with --help for usage.\n";
    return kExitUsage;
  }
  return exit_code;
}
