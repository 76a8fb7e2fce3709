#include "cli/commands.h"

#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "ca/authority.h"
#include "ops/credentials.h"
#include "ops/crl_refresh.h"
#include "ops/duration.h"
#include "ops/workspace.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

// The root CA's own CRL, next to the CRL, when there is an intermediate and the root key is here;
// a root key kept offline is no error (this runs where the key is brought out).
Status write_root_crl_if_possible(registry::Store& store, const ca::Authority& ca,
                                  const ops::Workspace& ws, const PassphraseSource& source) {
  if (!ca.has_intermediate()) return ok_status();
  ONBOARD_TRY(auto passphrase, source.read());
  auto number = ops::write_root_crl(store, ca, ws, passphrase ? &*passphrase : nullptr);
  if (!number.ok() && number.error().code == Errc::not_found) {
    std::cout << "root CRL not written: " << number.error().message << "\n";
    return ok_status();
  }
  if (!number.ok()) return std::move(number).error();
  std::cout << "root CRL " << number->value_or(0) << " written to " << ws.root_crl.string() << "\n";
  return ok_status();
}

}  // namespace

// ---- crl ----------------------------------------------------------------------------------------

void add_crl_command(CLI::App& app, const GlobalOptions& global, int& exit_code) {
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
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
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
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ONBOARD_TRY(std::uint64_t number, ops::write_crl(*store, ca, path, validity));
    std::cout << "CRL " << number << " written to " << path.string() << ", next update "
              << iso_time(unix_now() + validity) << why << "\n";
    ONBOARD_CHECK(write_root_crl_if_possible(*store, ca, ws, o->passphrase));
    return kExitOk;
  });
}

}  // namespace onboard::cli
