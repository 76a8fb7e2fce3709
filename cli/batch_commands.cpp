#include "cli/commands.h"

#include <unistd.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bundle/link_token.h"
#include "ca/authority.h"
#include "ca/keys.h"
#include "cli/table.h"
#include "core/files.h"
#include "core/identity.h"
#include "ops/batches.h"
#include "ops/credentials.h"
#include "ops/operations.h"
#include "ops/text.h"
#include "ops/workspace.h"
#include "registry/store.h"

namespace onboard::cli {
namespace {

using nlohmann::json;

// A one-line progress bar on stderr, only when it is a terminal.
class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}
  void update(std::size_t done, const std::string& label) {
    if (!tty_ || total_ == 0) return;
    constexpr std::size_t kWidth = 30;
    const std::size_t filled = done * kWidth / total_;
    std::cerr << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] "
              << done << "/" << total_ << " " << label.substr(0, 40) << "\x1b[K" << std::flush;
  }
  void finish() {
    if (tty_) std::cerr << "\r\x1b[K" << std::flush;
  }

 private:
  std::size_t total_;
  bool tty_;
};

}  // namespace

// ---- batch register, show --------------------------------------------------------------------

void add_batch_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* batch = app.add_subcommand("batch", "Register many devices from a CSV file at once");
  batch->require_subcommand(1);
  {
    struct Opts {
      std::string csv, batch_id, key_alg = "p256";
      int days = 365;
      bool skip_existing = false;
      PassphraseSource hold{"hold-passphrase"};
      PassphraseSource ca_passphrase;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = batch->add_subcommand("register", "Register the devices of a CSV file as a batch");
    cmd->add_option("--csv", o->csv,
                    "CSV file with a header naming its columns: name (required), id, type, "
                    "location, firmware, csr (a PEM CSR file, relative to the CSV's directory)")
        ->required();
    cmd->add_option("--batch", o->batch_id,
                    "Batch id (default: a new random one); an existing batch is extended");
    cmd->add_option(
           "--key-alg", o->key_alg,
           "Algorithm of the keys made for rows without a csr: " + std::string(ca::kKeyAlgNames))
        ->capture_default_str();
    cmd->add_option("--days", o->days, "Certificate validity in days")->capture_default_str();
    cmd->add_flag("--skip-existing", o->skip_existing,
                  "Leave out rows whose device is registered already (to finish an interrupted "
                  "batch)");
    o->hold.add_to(*cmd,
                   "the keys made here, which it encrypts until they are bundled (required when "
                   "a row has no csr)");
    o->ca_passphrase.add_to(*cmd, "the CA key");
    cmd->footer(
        "The file is checked whole first: if any row is bad, every bad row is reported with its "
        "line number and nothing is registered. Then each row is registered in its own "
        "transaction; if one fails (disk full, CA key), the rows before it stay registered in "
        "the batch and the message says which; rerun with --batch ID --skip-existing. The id "
        "column is optional: without it the id is the CSR's CN, else the name.");
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_CHECK(ops::check_validity_days(o->days));
      ONBOARD_TRY(ca::KeyAlg alg, ops::key_alg_option(o->key_alg));
      if (!o->batch_id.empty()) {
        if (auto p = device_id_problem(o->batch_id)) {
          return make_error(Errc::invalid_input, "--batch: " + *p);
        }
      }
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      const std::filesystem::path csv_path = o->csv;
      ONBOARD_TRY(std::string text, read_file(csv_path, 64u << 20));
      ONBOARD_TRY(auto rows, ops::read_batch_csv(text, csv_path.string()));
      ONBOARD_TRY(auto parsed, ops::check_batch_rows(std::move(rows), *store, o->skip_existing,
                                                     csv_path.parent_path()));
      if (!parsed.problems.empty()) {
        for (const auto& p : parsed.problems) std::cerr << p << "\n";
        return make_error(Errc::invalid_input, std::to_string(parsed.problems.size()) +
                                                   " problem(s) in " + o->csv +
                                                   "; nothing was registered");
      }
      const auto todo = static_cast<std::size_t>(std::count_if(
          parsed.rows.begin(), parsed.rows.end(), [](const ops::BatchRow& r) { return !r.skip; }));
      const bool needs_hold =
          std::any_of(parsed.rows.begin(), parsed.rows.end(),
                      [](const ops::BatchRow& r) { return !r.skip && r.csr_pem.empty(); });
      std::optional<Secret> hold;
      if (needs_hold) {
        ONBOARD_TRY(hold, o->hold.read());
        if (!hold) {
          return make_error(Errc::invalid_input,
                            "rows without a csr get a key made here, kept encrypted until "
                            "bundled: give --hold-passphrase-env VAR or --hold-passphrase-file "
                            "FILE");
        }
      }
      ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->ca_passphrase));
      ops::BatchRequest request;
      request.batch_id = o->batch_id;
      request.source = csv_path.filename().string();
      request.key_alg = alg;
      request.days = o->days;
      request.hold_passphrase = hold ? &*hold : nullptr;
      Progress progress(todo);
      ONBOARD_TRY(auto registered,
                  ops::register_batch(*store, ca, request, parsed.rows, ops::make_actor(),
                                      [&](std::size_t done, const ops::BatchRow& next) {
                                        progress.update(done, next.id);
                                      }));
      const std::size_t done = registered.registered.size();
      if (registered.failure) {
        progress.finish();
        const auto& row = *registered.failed_row;
        std::string done_text = done == 0 ? std::string("no row was registered")
                                          : std::to_string(done) + " row(s) before it (lines " +
                                                std::to_string(registered.first_line) + " to " +
                                                std::to_string(registered.last_line) +
                                                ") are registered in batch " + registered.batch_id;
        return make_error(registered.failure->code,
                          o->csv + ":" + std::to_string(row.line) + " (device " + row.id +
                              "): " + registered.failure->message + "; " + done_text +
                              "; the rest are not; fix the cause and rerun with --batch " +
                              registered.batch_id + " --skip-existing");
      }
      const std::string& batch_id = registered.batch_id;
      const bool extended = registered.extended;
      const std::size_t held = registered.keys_held, skipped = registered.skipped;
      progress.update(done, "");
      progress.finish();
      std::cout << "batch " << batch_id << (extended ? " (extended)" : "") << "\n"
                << "  registered   " << done << " device(s)\n"
                << "  keys         " << held << " made here, held encrypted until bundled; "
                << (done - held) << " from CSRs\n";
      if (skipped > 0) std::cout << "  skipped      " << skipped << " registered already\n";
      std::cout << "next: onboardctl bundle create --batch " << batch_id
                << " --out FILE.zip [--split]\n";
      return kExitOk;
    });
  }
  {
    struct Opts {
      std::string id;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = batch->add_subcommand("show", "List a batch's devices");
    cmd->add_option("BATCH", o->id, "Batch id")->required();
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto store, ops::open_registry(ws));
      ONBOARD_TRY(auto found, store->get_batch(o->id));
      std::cout << "batch " << found.id << " from " << ops::terminal_safe(found.source)
                << ", created " << iso_time(found.created_at) << "\n";
      Table table({"LINE", "DEVICE", "STATUS", "SERVER KEY COPY"});
      for (const auto& member : found.devices) {
        ONBOARD_TRY(auto device, store->get_device(member.device_id));
        ONBOARD_TRY(auto held, store->held_key(member.device_id));
        table.add({std::to_string(member.line), member.device_id,
                   std::string(to_string(device.status)), held ? "held (encrypted)" : "none"});
      }
      table.print(std::cout);
      return kExitOk;
    });
  }
}

}  // namespace onboard::cli
