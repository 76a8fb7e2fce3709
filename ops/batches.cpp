#include "ops/batches.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "ca/csr.h"
#include "core/files.h"
#include "core/identity.h"
#include "ops/csv.h"
#include "ops/operations.h"
#include "ops/text.h"
#include "registry/acl.h"

namespace onboard::ops {

Result<CheckedBatch> read_batch_csv(std::string_view text, std::string_view where_text) {
  const std::string where(where_text);
  auto records = parse_csv(text);
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
  CheckedBatch batch;
  for (std::size_t r = 1; r < records->size(); ++r) {
    const auto& record = (*records)[r];
    const std::string row_where = where + ":" + std::to_string(record.line);
    if (record.fields.size() != header.fields.size()) {
      batch.problems.push_back(row_where + ": expected " + std::to_string(header.fields.size()) +
                               " fields, found " + std::to_string(record.fields.size()));
      continue;
    }
    auto field = [&](const char* name) -> std::string {
      auto it = column.find(name);
      return it == column.end() ? std::string() : record.fields[it->second];
    };
    BatchRow row;
    row.line = record.line;
    row.where = row_where;
    row.id = field("id");
    row.name = field("name");
    row.type = field("type");
    row.location = field("location");
    row.firmware = field("firmware");
    row.csr_path = field("csr");
    batch.rows.push_back(std::move(row));
  }
  return batch;
}

Result<CheckedBatch> check_batch_rows(CheckedBatch batch, registry::Store& store,
                                      bool skip_existing, const std::filesystem::path& csr_dir) {
  CheckedBatch checked;
  checked.problems = std::move(batch.problems);
  std::set<std::string> ids;
  for (auto& row : batch.rows) {
    auto problem = [&](const std::string& what) {
      checked.problems.push_back(row.where + ": " + what);
    };
    bool ok = true;
    // The rules register_device applies, checked here too to report every row at once.
    for (auto [col, value, limit] : {std::tuple<const char*, const std::string*, std::size_t>{
                                         "name", &row.name, kMaxNameBytes},
                                     {"location", &row.location, kMaxLocationBytes},
                                     {"firmware", &row.firmware, kMaxFirmwareBytes}}) {
      if (auto p = text_problem(col, *value, limit)) {
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
    std::string pem = row.csr_pem;
    if (!row.csr_path.empty()) {
      std::filesystem::path csr_file = row.csr_path;
      if (csr_file.is_relative()) csr_file = csr_dir / csr_file;
      auto read = read_file(csr_file, 1 << 20);
      if (!read.ok()) {
        problem("csr: " + read.error().message);
        continue;
      }
      pem = std::move(read).value();
    }
    if (!pem.empty()) {
      auto csr = ca::read_device_csr(pem);
      if (!csr.ok()) {
        problem((row.csr_path.empty() ? std::string("csr") : "csr " + row.csr_path) + ": " +
                csr.error().message);
        continue;
      }
      if (row.id.empty()) row.id = csr->device_id;
      if (csr->device_id != row.id) {
        problem("the CSR's CN is '" + csr->device_id + "', not the device id '" + row.id + "'");
        ok = false;
      }
      row.csr_pem = std::move(pem);
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
    if (ok) checked.rows.push_back(std::move(row));
  }
  return checked;
}

Result<BatchRegistered> register_batch(registry::Store& store, const ca::Authority& ca,
                                       const BatchRequest& request,
                                       const std::vector<BatchRow>& rows,
                                       const registry::Actor& actor,
                                       const BatchProgress& progress) {
  const bool needs_hold = std::any_of(
      rows.begin(), rows.end(), [](const BatchRow& r) { return !r.skip && r.csr_pem.empty(); });
  if (needs_hold) {
    if (request.hold_passphrase == nullptr) {
      return make_error(Errc::invalid_input,
                        "rows without a csr get a key made here, kept encrypted until bundled, "
                        "and no hold passphrase was given");
    }
    if (auto problem = hold_passphrase_problem(*request.hold_passphrase)) {
      return make_error(Errc::invalid_input, "the hold passphrase is too weak: " + *problem);
    }
  }
  if (!request.batch_id.empty()) {
    if (auto p = device_id_problem(request.batch_id)) {
      return make_error(Errc::invalid_input, "batch: " + *p);
    }
  }
  BatchRegistered out;
  out.batch_id = request.batch_id;
  if (out.batch_id.empty()) {
    ONBOARD_TRY(out.batch_id, random_id("batch-"));
  }
  if (auto existing = store.get_batch(out.batch_id); existing.ok()) {
    out.extended = true;
  } else if (existing.error().code == Errc::not_found) {
    ONBOARD_CHECK(store.create_batch(out.batch_id, request.source, actor));
  } else {
    return std::move(existing).error();
  }

  for (const BatchRow& row : rows) {
    if (row.skip) {
      ++out.skipped;
      continue;
    }
    if (progress) progress(out.registered.size(), row);
    RegisterRequest device;
    device.device =
        registry::NewDevice{row.id, row.name, row.type, row.location, row.firmware, "{}"};
    device.key.csr_pem = row.csr_pem;
    device.key.csr_label = row.csr_path.empty() ? "csr" : "csr " + row.csr_path;
    device.key.key_alg = request.key_alg;
    device.key.hold_passphrase = row.csr_pem.empty() ? request.hold_passphrase : nullptr;
    device.key.days = request.days;
    device.batch_id = out.batch_id;
    device.batch_line = row.line;
    // Each row its own moment in the audit trail, as when registered one by one.
    const registry::Actor row_actor{actor.name, unix_now()};
    auto registered = register_device(store, ca, device, row_actor);
    if (!registered.ok()) {
      out.failure = std::move(registered).error();
      out.failed_row = &row;
      return out;
    }
    if (out.registered.empty()) out.first_line = row.line;
    out.last_line = row.line;
    out.registered.push_back(row.id);
    if (row.csr_pem.empty()) ++out.keys_held;
  }
  return out;
}

}  // namespace onboard::ops
