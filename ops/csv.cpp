#include "ops/csv.h"

namespace onboard::ops {

Result<std::vector<CsvRecord>> parse_csv(std::string_view text) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  std::vector<CsvRecord> records;
  CsvRecord record;
  std::string field;
  int line = 1;
  record.line = 1;
  bool in_quotes = false;
  int quote_line = 0;        // where the open quoted field started
  bool after_quote = false;  // the field's closing quote was seen: only , or a line end may follow
  bool record_has_text = false;
  auto bad = [&](const std::string& why) {
    return make_error(Errc::invalid_input, "line " + std::to_string(line) + ": " + why);
  };
  auto end_record = [&] {
    record.fields.push_back(std::move(field));
    field.clear();
    if (record_has_text) records.push_back(std::move(record));
    record = CsvRecord{};
    record.line = line + 1;
    record_has_text = false;
    after_quote = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\0') return bad("the file holds a NUL byte");
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          in_quotes = false;
          after_quote = true;
        }
      } else {
        // A line ends at LF, CRLF or a lone CR, inside quotes as outside them.
        const bool lone_cr = c == '\r' && (i + 1 == text.size() || text[i + 1] != '\n');
        if (c == '\n' || lone_cr) ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == ',') {
      record.fields.push_back(std::move(field));
      field.clear();
      after_quote = false;
      record_has_text = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_record();
      ++line;
    } else if (after_quote) {
      return bad("unexpected text after a closing quote");
    } else if (c == '"') {
      if (!field.empty()) return bad("a quote inside an unquoted field (quote the whole field)");
      in_quotes = true;
      quote_line = line;
      record_has_text = true;
    } else {
      field.push_back(c);
      if (c != ' ' && c != '\t') record_has_text = true;
    }
  }
  if (in_quotes) {
    line = quote_line;
    return bad("a quoted field is not closed");
  }
  if (record_has_text || !field.empty()) end_record();
  return records;
}

}  // namespace onboard::ops
