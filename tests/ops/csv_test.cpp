// The CSV parser `batch register` reads manufacturers' files with: RFC 4180 as spreadsheets export
// it, and errors that name the line an operator must fix.
#include "ops/csv.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "tests/support/result.h"

namespace {

namespace csv = onboard::ops;  // where parse_csv lives: one line to change if it moves
using onboard::Errc;
using onboard::test::must;
using onboard::test::require_error;
using Fields = std::vector<std::string>;

std::vector<csv::CsvRecord> parse(std::string_view text) { return must(csv::parse_csv(text)); }

}  // namespace

TEST_CASE("csv: plain records come back field by field with the line each starts on") {
  auto records = parse("name,type\nsensor one,thermo\nsensor two,hygro\n");
  REQUIRE(records.size() == 3);
  CHECK(records[0].fields == Fields{"name", "type"});
  CHECK(records[0].line == 1);
  CHECK(records[1].fields == Fields{"sensor one", "thermo"});
  CHECK(records[1].line == 2);
  CHECK(records[2].fields == Fields{"sensor two", "hygro"});
  CHECK(records[2].line == 3);
}

TEST_CASE("csv: the header is returned as the first record for the caller to interpret") {
  // The parser knows nothing of columns: a header row is a record like any other, and each
  // record keeps its own field count so that the caller can compare it with the header's.
  auto records = parse("id,name,type\nd1,one\nd2,two,t,extra\n");
  REQUIRE(records.size() == 3);
  CHECK(records[0].fields == Fields{"id", "name", "type"});
  CHECK(records[1].fields.size() == 2);
  CHECK(records[2].fields.size() == 4);
}

TEST_CASE("csv: quoted fields may hold commas and doubled quotes and span lines") {
  auto records = parse(
      "name,location\n"
      "\"Smith, J.\",\"Hall \"\"B\"\"\"\n"
      "\"two\nlines\",x\n"
      "after,y\n");
  REQUIRE(records.size() == 4);
  CHECK(records[1].fields == Fields{"Smith, J.", "Hall \"B\""});
  CHECK(records[2].fields == Fields{"two\nlines", "x"});
  CHECK(records[2].line == 3);
  // The record after a field spanning two lines starts on line 5, not 4: errors stay accurate.
  CHECK(records[3].fields == Fields{"after", "y"});
  CHECK(records[3].line == 5);
}

TEST_CASE("csv: a quoted field that is only a doubled quote is one quote character") {
  auto records = parse("\"\"\"\",\"\"\n");
  REQUIRE(records.size() == 1);
  CHECK(records[0].fields == Fields{"\"", ""});
}

TEST_CASE("csv: CRLF line ends are line ends and leave no carriage return in a field") {
  auto records = parse("a,b\r\nc,d\r\n");
  REQUIRE(records.size() == 2);
  CHECK(records[0].fields == Fields{"a", "b"});
  CHECK(records[1].fields == Fields{"c", "d"});
  CHECK(records[1].line == 2);
  // Inside quotes a CRLF is data and stays as it is.
  auto quoted = parse("\"x\r\ny\",z\r\n");
  REQUIRE(quoted.size() == 1);
  CHECK(quoted[0].fields == Fields{"x\r\ny", "z"});
}

TEST_CASE("csv: a lone carriage return ends a line as old spreadsheets write it") {
  auto records = parse("a,b\rc,d\r");
  REQUIRE(records.size() == 2);
  CHECK(records[0].fields == Fields{"a", "b"});
  CHECK(records[1].fields == Fields{"c", "d"});
  CHECK(records[1].line == 2);
}

TEST_CASE("csv: a UTF-8 byte order mark at the start is skipped and nowhere else") {
  auto records = parse("\xEF\xBB\xBFname\nx\n");
  REQUIRE(records.size() == 2);
  CHECK(records[0].fields == Fields{"name"});  // not "\xEF\xBB\xBFname": the column is found
  // Positive control of what skipping means: a BOM later in the text is data.
  auto later = parse("name\n\xEF\xBB\xBFx\n");
  REQUIRE(later.size() == 2);
  CHECK(later[1].fields == Fields{"\xEF\xBB\xBFx"});
}

TEST_CASE("csv: empty fields are kept in place") {
  auto records = parse("a,,c\n,b,\n,,\n\"\"\n");
  REQUIRE(records.size() == 4);
  CHECK(records[0].fields == Fields{"a", "", "c"});
  CHECK(records[1].fields == Fields{"", "b", ""});
  CHECK(records[2].fields == Fields{"", "", ""});
  CHECK(records[3].fields == Fields{""});  // a quoted empty field is a record
}

TEST_CASE("csv: blank and whitespace-only lines are skipped and later lines keep their numbers") {
  auto records = parse("\nname\n\n   \n\t\nx\n\n");
  REQUIRE(records.size() == 2);
  CHECK(records[0].fields == Fields{"name"});
  CHECK(records[0].line == 2);
  CHECK(records[1].fields == Fields{"x"});
  CHECK(records[1].line == 6);
}

TEST_CASE("csv: spaces inside an unquoted field are data and are not trimmed") {
  auto records = parse(" a , b\n");
  REQUIRE(records.size() == 1);
  CHECK(records[0].fields == Fields{" a ", " b"});
}

TEST_CASE("csv: the last record needs no line end and an empty text has no records") {
  auto records = parse("a,b\nc,d");
  REQUIRE(records.size() == 2);
  CHECK(records[1].fields == Fields{"c", "d"});
  CHECK(parse("").empty());
  CHECK(parse("\n\r\n").empty());
  CHECK(parse("\xEF\xBB\xBF").empty());
}

TEST_CASE("csv: an unterminated quoted field is refused naming the line where it opened") {
  auto result = csv::parse_csv("name\nok\n\"never\nclosed,\nat all\n");
  require_error(result, Errc::invalid_input, "line 3: a quoted field is not closed");
  // Positive control: the same text with the quote closed parses.
  CHECK(csv::parse_csv("name\nok\n\"never\nclosed,\nat all\"\n").ok());
}

TEST_CASE("csv: text after a closing quote is refused naming the line") {
  require_error(csv::parse_csv("a\n\"x\"y,z\n"), Errc::invalid_input,
                "line 2: unexpected text after a closing quote");
  // A space after the quote is text too (RFC 4180 allows only a comma or a line end).
  require_error(csv::parse_csv("\"x\" ,z\n"), Errc::invalid_input,
                "line 1: unexpected text after a closing quote");
  CHECK(csv::parse_csv("\"x\",z\n").ok());
}

TEST_CASE("csv: a quote inside an unquoted field is refused naming the line") {
  require_error(csv::parse_csv("a\nb\nab\"c\n"), Errc::invalid_input,
                "line 3: a quote inside an unquoted field");
  require_error(csv::parse_csv(" \"x\"\n"), Errc::invalid_input,
                "line 1: a quote inside an unquoted field");
  CHECK(csv::parse_csv("\"ab\"\"c\"\n").ok());
}

TEST_CASE("csv: a NUL byte is refused wherever it is") {
  using namespace std::string_literals;
  require_error(csv::parse_csv("a\nb\0c\n"s), Errc::invalid_input,
                "line 2: the file holds a NUL byte");
  require_error(csv::parse_csv("a\n\"b\0c\"\n"s), Errc::invalid_input,
                "line 2: the file holds a NUL byte");
  CHECK(csv::parse_csv("a\nbc\n"s).ok());
}

TEST_CASE("csv: an error after a multi-line quoted field names the line it is really on") {
  // Lines 2 and 3 belong to one quoted field; the bad quote is on line 4.
  require_error(csv::parse_csv("a,b\n\"x\ny\",1\nq\"r,2\n"), Errc::invalid_input, "line 4:");
}

TEST_CASE("csv: with lone carriage return line ends a multi-line quoted field counts its lines") {
  // Outside quotes a lone CR ends a line, so the error and record line numbers of a CR-only file
  // must count a CR inside a quoted field as a line too. Lines: 1 `"a`, 2 `b",1`, 3 `c,2`.
  auto records = parse("\"a\rb\",1\rc,2\r");
  REQUIRE(records.size() == 2);
  CHECK(records[0].fields == Fields{"a\rb", "1"});
  CHECK(records[1].line == 3);
}
