#include "cli/commands.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <charconv>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "bundle/link_token.h"
#include "bundle/manifest.h"
#include "bundle/package.h"
#include "bundle/password.h"
#include "bundle/zip.h"
#include "ca/authority.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "cli/table.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "core/files.h"
#include "core/identity.h"
#include "ops/credentials.h"
#include "ops/csv.h"
#include "ops/duration.h"
#include "ops/operations.h"
#include "ops/text.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/store.h"

namespace onboard::cli {
namespace {

using nlohmann::json;

struct BatchRow {
  int line = 0;
  std::string id, name, type, location, firmware, csr_path;
  std::string csr_pem;  // checked; empty when the tool makes the key
  bool skip = false;    // exists already and --skip-existing
};

// Reads and checks the whole CSV. Problems are collected for every row, each naming its line,
// so that the operator fixes the file in one go.
struct ParsedBatch {
  std::vector<BatchRow> rows;
  std::vector<std::string> problems;
};

Result<ParsedBatch> parse_batch_csv(const std::filesystem::path& csv_path, registry::Store& store,
                                    bool skip_existing) {
  ONBOARD_TRY(std::string text, read_file(csv_path, 64u << 20));
  const std::string where = csv_path.string();
  auto records = ops::parse_csv(text);
  if (!records.ok()) {
    return make_error(Errc::invalid_input, where + ": " + records.error().message);
  }
  if (records->empty()) return make_error(Errc::invalid_input, where + ": the file is empty");
  static const std::set<std::string> kKnown = {"id", "name", "type", "location", "firmware", "csr"};
  std::map<std::string, std::size_t> column;
  const auto& header = records->front();
  for (std::size_t i = 0; i < header.fields.size(); ++i) {
    std::string name = header.fields[i];
    if (!kKnown.contains(name)) {
      return make_error(Errc::invalid_input,
                        where + ":" + std::to_string(header.line) + ": unknown column '" +
                            name.substr(0, 40) +
                            "'; the header names columns among id, name, type, location, "
                            "firmware, csr");
    }
    if (!column.emplace(name, i).second) {
      return make_error(Errc::invalid_input, where + ":" + std::to_string(header.line) +
                                                 ": column '" + name + "' appears twice");
    }
  }
  if (!column.contains("name")) {
    return make_error(Errc::invalid_input, where + ":" + std::to_string(header.line) +
                                               ": the header must name a 'name' column");
  }
  ParsedBatch parsed;
  std::set<std::string> ids;
  const auto base_dir = csv_path.parent_path();
  for (std::size_t r = 1; r < records->size(); ++r) {
    const auto& record = (*records)[r];
    auto problem = [&](const std::string& what) {
      parsed.problems.push_back(where + ":" + std::to_string(record.line) + ": " + what);
    };
    if (record.fields.size() != header.fields.size()) {
      problem("expected " + std::to_string(header.fields.size()) + " fields, found " +
              std::to_string(record.fields.size()));
      continue;
    }
    auto field = [&](const char* name) -> std::string {
      auto it = column.find(name);
      return it == column.end() ? std::string() : record.fields[it->second];
    };
    BatchRow row;
    row.line = record.line;
    row.id = field("id");
    row.name = field("name");
    row.type = field("type");
    row.location = field("location");
    row.firmware = field("firmware");
    row.csr_path = field("csr");
    bool ok = true;
    // The rules register_device applies, checked here too to report every row at once.
    for (auto [col, value, limit] : {std::tuple<const char*, const std::string*, std::size_t>{
                                         "name", &row.name, ops::kMaxNameBytes},
                                     {"location", &row.location, ops::kMaxLocationBytes},
                                     {"firmware", &row.firmware, ops::kMaxFirmwareBytes}}) {
      if (auto p = ops::text_problem(col, *value, limit)) {
        problem(*p);
        ok = false;
      }
    }
    if (!ok) continue;  // the other checks would echo the bad text
    if (row.name.empty()) {
      problem("name is empty");
      ok = false;
    }
    if (!row.type.empty()) {
      if (auto p = registry::group_name_problem(row.type)) {
        problem("type: " + *p);
        ok = false;
      }
    }
    if (!row.csr_path.empty()) {
      std::filesystem::path csr_file = row.csr_path;
      if (csr_file.is_relative()) csr_file = base_dir / csr_file;
      auto pem = read_file(csr_file, 1 << 20);
      if (!pem.ok()) {
        problem("csr: " + pem.error().message);
        continue;
      }
      auto checked = ca::read_device_csr(*pem);
      if (!checked.ok()) {
        problem("csr " + row.csr_path + ": " + checked.error().message);
        continue;
      }
      if (row.id.empty()) row.id = checked->device_id;
      if (checked->device_id != row.id) {
        problem("the CSR's CN is '" + checked->device_id + "', not the device id '" + row.id + "'");
        ok = false;
      }
      row.csr_pem = std::move(pem).value();
    }
    if (row.id.empty()) {
      if (device_id_problem(row.name)) {
        problem("name '" + row.name.substr(0, 64) + "' is not a valid device id; add an id column");
        continue;
      }
      row.id = row.name;
    }
    if (auto p = device_id_problem(row.id)) {
      problem("id: " + *p);
      continue;
    }
    if (!ids.insert(row.id).second) {
      problem("device " + row.id + " appears twice in the file");
      continue;
    }
    if (auto existing = store.get_device(row.id); existing.ok()) {
      if (skip_existing) {
        row.skip = true;
      } else {
        problem("device " + row.id +
                " is registered already (pass --skip-existing to leave such rows out)");
        ok = false;
      }
    } else if (existing.error().code != Errc::not_found) {
      return std::move(existing).error();
    }
    if (ok) parsed.rows.push_back(std::move(row));
  }
  return parsed;
}

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
      ONBOARD_TRY(auto parsed, parse_batch_csv(o->csv, *store, o->skip_existing));
      if (!parsed.problems.empty()) {
        for (const auto& p : parsed.problems) std::cerr << p << "\n";
        return make_error(Errc::invalid_input, std::to_string(parsed.problems.size()) +
                                                   " problem(s) in " + o->csv +
                                                   "; nothing was registered");
      }
      std::vector<BatchRow*> todo;
      std::size_t skipped = 0;
      for (auto& row : parsed.rows) {
        if (row.skip) {
          ++skipped;
        } else {
          todo.push_back(&row);
        }
      }
      const bool needs_hold = std::any_of(todo.begin(), todo.end(),
                                          [](const BatchRow* r) { return r->csr_pem.empty(); });
      std::optional<Secret> hold;
      if (needs_hold) {
        ONBOARD_TRY(hold, o->hold.read());
        if (!hold) {
          return make_error(Errc::invalid_input,
                            "rows without a csr get a key made here, kept encrypted until "
                            "bundled: give --hold-passphrase-env VAR or --hold-passphrase-file "
                            "FILE");
        }
        if (auto problem = ops::hold_passphrase_problem(*hold)) {
          return make_error(Errc::invalid_input, "the hold passphrase is too weak: " + *problem);
        }
      }
      ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->ca_passphrase));
      std::string batch_id = o->batch_id;
      bool extended = false;
      if (batch_id.empty()) {
        ONBOARD_TRY(batch_id, ops::random_id("batch-"));
      }
      if (auto existing = store->get_batch(batch_id); existing.ok()) {
        extended = true;
      } else if (existing.error().code == Errc::not_found) {
        ONBOARD_CHECK(store->create_batch(
            batch_id, std::filesystem::path(o->csv).filename().string(), ops::make_actor()));
      } else {
        return std::move(existing).error();
      }

      Progress progress(todo.size());
      std::size_t done = 0, held = 0;
      int first_line = 0, last_line = 0;
      for (BatchRow* row : todo) {
        progress.update(done, row->id);
        auto step = [&]() -> Status {
          ops::RegisterRequest request;
          request.device = registry::NewDevice{row->id,       row->name,     row->type,
                                               row->location, row->firmware, "{}"};
          request.key.csr_pem = row->csr_pem;
          request.key.csr_label = "csr " + row->csr_path;
          request.key.key_alg = alg;
          request.key.hold_passphrase = row->csr_pem.empty() ? &*hold : nullptr;
          request.key.days = o->days;
          request.batch_id = batch_id;
          request.batch_line = row->line;
          auto registered = ops::register_device(*store, ca, request, ops::make_actor());
          if (!registered.ok()) return std::move(registered).error();
          return ok_status();
        };
        if (auto status = step(); !status.ok()) {
          progress.finish();
          std::string done_text = done == 0 ? std::string("no row was registered")
                                            : std::to_string(done) + " row(s) before it (lines " +
                                                  std::to_string(first_line) + " to " +
                                                  std::to_string(last_line) +
                                                  ") are registered in batch " + batch_id;
          return make_error(status.error().code,
                            o->csv + ":" + std::to_string(row->line) + " (device " + row->id +
                                "): " + status.error().message + "; " + done_text +
                                "; the rest are not; fix the cause and rerun with --batch " +
                                batch_id + " --skip-existing");
        }
        if (done == 0) first_line = row->line;
        last_line = row->line;
        ++done;
        if (row->csr_pem.empty()) ++held;
      }
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
