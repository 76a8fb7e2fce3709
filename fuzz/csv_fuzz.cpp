// ops/csv.h and ops/batches.h: parse_csv reads the file of `batch register --csv`, and
// read_batch_csv turns its records into rows. Invariants: an accepted parse has records whose
// lines are >= 1, strictly increasing and within the text's line count, with no NUL in any field;
// the records written back (every field quoted, " doubled, LF between records) parse to exactly
// the same fields, record for record (a quoted field always makes its record non-blank, so none is
// dropped the second time); read_batch_csv refuses exactly when the parse or the header does
// (always with invalid_input), and otherwise returns one row or one problem per record after the
// header, each named by the file label and the record's line, a row holding the record's fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ops/batches.h"
#include "ops/csv.h"

namespace {

using onboard::Errc;
using onboard::ops::CsvRecord;

constexpr std::string_view kLabel = "devices.csv";

std::string csv_field(std::string_view field) {
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string write_back(const std::vector<CsvRecord>& records) {
  std::string out;
  for (std::size_t r = 0; r < records.size(); ++r) {
    if (r > 0) out += '\n';
    for (std::size_t f = 0; f < records[r].fields.size(); ++f) {
      if (f > 0) out += ',';
      out += csv_field(records[r].fields[f]);
    }
  }
  return out;
}

// The lines of `text` as parse_csv counts them: LF, CRLF and a lone CR each end one.
int line_count(std::string_view text) {
  int lines = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' || (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n')))
      ++lines;
  }
  return lines;
}

// What read_batch_csv must accept as a header: known columns, each once, one of them "name".
bool good_header(const CsvRecord& header) {
  static const std::set<std::string> kKnown = {"id", "name", "type", "location", "firmware", "csr"};
  std::set<std::string> seen;
  for (const auto& name : header.fields) {
    if (!kKnown.contains(name) || !seen.insert(name).second) return false;
  }
  return seen.contains("name");
}

std::string field_of(const CsvRecord& header, const CsvRecord& record, std::string_view column) {
  for (std::size_t i = 0; i < header.fields.size(); ++i)
    if (header.fields[i] == column) return record.fields[i];
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = ops::parse_csv(text);
  auto batch = ops::read_batch_csv(text, kLabel);
  if (!parsed.ok()) {
    if (parsed.error().code != Errc::invalid_input) std::abort();
    if (batch.ok() || batch.error().code != Errc::invalid_input) std::abort();
    return 0;
  }
  const auto& records = *parsed;
  const int lines = line_count(text);
  int previous = 0;
  for (const auto& record : records) {
    if (record.line < 1 || record.line <= previous || record.line > lines) std::abort();
    previous = record.line;
    if (record.fields.empty()) std::abort();
    for (const auto& field : record.fields)
      if (field.find('\0') != std::string::npos) std::abort();
  }

  auto again = ops::parse_csv(write_back(records));
  if (!again.ok() || again->size() != records.size()) std::abort();
  for (std::size_t r = 0; r < records.size(); ++r)
    if ((*again)[r].fields != records[r].fields) std::abort();

  const bool should_accept = !records.empty() && good_header(records.front());
  if (!batch.ok()) {
    if (should_accept || batch.error().code != Errc::invalid_input) std::abort();
    if (!batch.error().message.starts_with(kLabel)) std::abort();
    return 0;
  }
  if (!should_accept) std::abort();
  if (batch->rows.size() + batch->problems.size() != records.size() - 1) std::abort();
  const auto& header = records.front();
  std::size_t row = 0, problem = 0;
  for (std::size_t r = 1; r < records.size(); ++r) {
    const auto& record = records[r];
    const std::string where = std::string(kLabel) + ":" + std::to_string(record.line);
    if (record.fields.size() != header.fields.size()) {
      if (problem >= batch->problems.size() || !batch->problems[problem].starts_with(where + ": "))
        std::abort();
      ++problem;
      continue;
    }
    if (row >= batch->rows.size()) std::abort();
    const auto& got = batch->rows[row++];
    if (got.where != where || got.line != record.line) std::abort();
    if (got.id != field_of(header, record, "id") || got.name != field_of(header, record, "name") ||
        got.type != field_of(header, record, "type") ||
        got.location != field_of(header, record, "location") ||
        got.firmware != field_of(header, record, "firmware") ||
        got.csr_path != field_of(header, record, "csr") || !got.csr_pem.empty() || got.skip)
      std::abort();
  }
  return 0;
}
