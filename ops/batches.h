// `batch register` as an operation, shared by the CLI (rows from a CSV file) and POST /v1/batches
// (rows from JSON): check every row first, reporting every problem at once, then register each
// row in its own transaction into one batch, which `bundle create --batch` packages later.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ca/authority.h"
#include "ca/keys.h"
#include "core/error.h"
#include "core/secret.h"
#include "registry/store.h"

namespace onboard::ops {

struct BatchRow {
  int line = 0;       // where the row came from: a CSV line, a JSON request's 1-based position
  std::string where;  // how problems name the row: "FILE.csv:LINE", "devices[INDEX]"
  std::string id, name, type, location, firmware;
  std::string csr_path;  // a CSR file (CSV only), read by check_batch_rows
  std::string csr_pem;   // the device's CSR; empty: a key is made here and held
  bool skip = false;     // registered already, and skip_existing
};

struct CheckedBatch {
  std::vector<BatchRow> rows;         // the good rows
  std::vector<std::string> problems;  // one per bad row, each starting with its `where`
};

// Parses the CSV text of `batch register --csv` (a header naming columns among id, name, type,
// location, firmware, csr; name required) into rows. A malformed file or header is an Error;
// a row with the wrong number of fields is a problem.
Result<CheckedBatch> read_batch_csv(std::string_view text, std::string_view where);

// Checks every row as register_device would (free text, type, CSR and its CN, device id), and
// more: an id appears once, and a registered device is a problem unless skip_existing (then the
// row is marked skip). Without an id, the id is the CSR's CN, else the name. CSR files are read
// relative to `csr_dir`.
Result<CheckedBatch> check_batch_rows(CheckedBatch batch, registry::Store& store,
                                      bool skip_existing, const std::filesystem::path& csr_dir);

struct BatchRequest {
  std::string batch_id;  // empty: a new random one; an existing batch is extended
  std::string source;    // recorded with a new batch: the CSV's file name, "rest"
  ca::KeyAlg key_alg = ca::KeyAlg::p256;
  int days = 365;
  const Secret* hold_passphrase = nullptr;  // needed when a row has no CSR
};

struct BatchRegistered {
  std::string batch_id;
  bool extended = false;                // the batch existed before
  std::vector<std::string> registered;  // device ids, in row order
  std::size_t keys_held = 0;            // rows without a CSR
  std::size_t skipped = 0;
  int first_line = 0, last_line = 0;  // of the registered rows
  // The row that failed: the rows before it stay registered in the batch, the rest are not.
  std::optional<Error> failure;
  const BatchRow* failed_row = nullptr;
};

// Called before each row is registered (a progress bar).
using BatchProgress = std::function<void(std::size_t done, const BatchRow& next)>;

// Registers the checked rows (skip rows left out) into the batch, creating it when new. An Error
// means nothing was registered.
Result<BatchRegistered> register_batch(registry::Store& store, const ca::Authority& ca,
                                       const BatchRequest& request,
                                       const std::vector<BatchRow>& rows,
                                       const registry::Actor& actor,
                                       const BatchProgress& progress = {});

}  // namespace onboard::ops
