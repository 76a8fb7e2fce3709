#include "registry/location.h"

#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>

namespace onboard::registry {
namespace {

// Long enough for any real path or connection string; bounds what libpq is handed.
constexpr std::size_t kMaxLocationLength = 4096;

constexpr std::string_view kForms =
    "give an absolute path, sqlite:///ABS/PATH, a postgresql:// URI or a libpq keyword string "
    "(host=... dbname=...)";
constexpr std::string_view kNoPassword =
    "the registry location must not contain a password: put it in PGPASSFILE, ~/.pgpass or a "
    "service file (PGSERVICEFILE), where libpq reads it";

struct OptionsFree {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};
using Options = std::unique_ptr<PQconninfoOption, OptionsFree>;

Error invalid(std::string message) { return make_error(Errc::invalid_input, std::move(message)); }

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_keyword_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// libpq's keyword string: the first word is a keyword followed by '=' (spaces allowed around it).
bool looks_like_keywords(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && is_space(text[i])) ++i;
  const std::size_t start = i;
  while (i < text.size() && is_keyword_char(text[i])) ++i;
  if (i == start) return false;
  while (i < text.size() && is_space(text[i])) ++i;
  return i < text.size() && text[i] == '=';
}

// "scheme:" at the start, as in a URL.
bool has_scheme(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  if (std::isalpha(static_cast<unsigned char>(text[0])) == 0) return false;
  return std::all_of(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(colon), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '-' || c == '.';
  });
}

// Whether the text, as written, carries a password where libpq would find one: the word
// "password" followed by '=' (a keyword, or a URI query parameter), or a URI's userinfo with a
// non-empty part after ':' (postgresql://user:secret@host). Checked before libpq sees the text, so
// that even a string libpq cannot parse is refused without repeating libpq's message, which may
// quote the text. A password hidden by percent-encoding (pass%77ord=) is caught after parsing.
bool written_password(std::string_view text, bool uri) {
  for (std::size_t at = 0; at + 8 <= text.size(); ++at) {
    if (!starts_with_nocase(text.substr(at), "password")) continue;
    std::size_t i = at + 8;
    while (i < text.size() && is_space(text[i])) ++i;
    if (i < text.size() && text[i] == '=') return true;
  }
  if (uri) {
    // libpq takes the userinfo as everything before the first '@' that precedes any '/'.
    const auto scheme_end = text.find("://");
    const auto authority = text.substr(scheme_end + 3);
    const auto slash = authority.find('/');
    const auto at = authority.substr(0, slash).find('@');
    if (at != std::string_view::npos) {
      const auto userinfo = authority.substr(0, at);
      const auto colon = userinfo.find(':');
      if (colon != std::string_view::npos && colon + 1 < userinfo.size()) return true;
    }
  }
  return false;
}

// Whether `word` stands in the text as a keyword: followed by '=' (spaces allowed).
bool written_as_keyword(std::string_view text, std::string_view word) {
  for (auto at = text.find(word); at != std::string_view::npos; at = text.find(word, at + 1)) {
    auto i = at + word.size();
    while (i < text.size() && is_space(text[i])) ++i;
    if (i < text.size() && text[i] == '=') return true;
  }
  return false;
}

// libpq's message with every quoted part of the text replaced by "...", except a keyword the text
// names as one (invalid connection option "colour") and the "=" libpq says is missing: a bare
// word (missing "=" after "hunter2") or the whole URI may be quoted, and either may be a secret.
std::string redact_quotes(std::string_view message, std::string_view text) {
  std::string out;
  std::size_t i = 0;
  while (i < message.size()) {
    const auto open = message.find('"', i);
    const auto close = open == std::string_view::npos ? open : message.find('"', open + 1);
    if (close == std::string_view::npos) {
      out += message.substr(i);
      break;
    }
    const auto quoted = message.substr(open + 1, close - open - 1);
    const bool keyword = !quoted.empty() &&
                         std::all_of(quoted.begin(), quoted.end(), is_keyword_char) &&
                         written_as_keyword(text, quoted);
    out += message.substr(i, open + 1 - i);
    out += (keyword || quoted == "=") ? quoted : "...";
    out += '"';
    i = close + 1;
  }
  return out;
}

// libpq's own parser. Its error message quotes parts of the text: only keywords are shown (see
// redact_quotes), and nothing at all when the text has percent-encoding, which could spell a
// password= that written_password could not see.
Result<Options> parse_conninfo(const std::string& text) {
  char* error = nullptr;
  Options options(PQconninfoParse(text.c_str(), &error));
  if (options) return options;
  std::string message;
  if (error != nullptr) {
    message = error;
    PQfreemem(error);
  }
  while (!message.empty() && is_space(message.back())) message.pop_back();
  if (message.empty() || text.find('%') != std::string::npos) {
    return invalid(
        "libpq cannot parse the PostgreSQL connection string (its message is not "
        "shown: with percent-encoding it could quote a password)");
  }
  return invalid("libpq cannot parse the PostgreSQL connection string: " +
                 redact_quotes(message, text));
}

bool has_password_option(const PQconninfoOption* options) {
  for (const auto* o = options; o->keyword != nullptr; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val != nullptr && *o->val != '\0')
      return true;
  }
  return false;
}

Result<Location> parse_postgresql(std::string_view text, bool uri) {
  if (written_password(text, uri)) return invalid(std::string(kNoPassword));
  const std::string owned(text);
  ONBOARD_TRY(auto options, parse_conninfo(owned));
  if (has_password_option(options.get())) return invalid(std::string(kNoPassword));
  return Location{Backend::postgresql, owned};
}

Result<Location> parse_sqlite_url(std::string_view text) {
  constexpr std::string_view kPrefix = "sqlite://";
  if (!starts_with_nocase(text, kPrefix)) {
    return invalid("an sqlite URL must be sqlite:///ABS/PATH (three slashes and an absolute path)");
  }
  const auto rest = text.substr(kPrefix.size());
  if (rest.empty() || rest.front() != '/') {
    return invalid(
        "an sqlite URL names a local file: sqlite:///ABS/PATH, with no host and an "
        "absolute path");
  }
  if (rest.find_first_of("?#") != std::string_view::npos)
    return invalid("an sqlite URL takes no query or fragment ('?' or '#'): sqlite:///ABS/PATH");
  // Nothing is decoded: a '%' would mean one thing to a URL reader and another here.
  if (rest.find('%') != std::string_view::npos)
    return invalid("an sqlite URL is not percent-decoded: give the path as it is, without '%'");
  return Location{Backend::sqlite, std::string(rest)};
}

// Rendering order for display(): where first, then who, then the rest in libpq's order.
constexpr std::array<std::string_view, 5> kLeadingKeywords = {"host", "hostaddr", "port", "dbname",
                                                              "user"};

// A keyword string value, quoted as libpq reads it when it is empty or holds spaces or quotes.
std::string quote_value(std::string_view value) {
  const bool plain = !value.empty() && std::none_of(value.begin(), value.end(), [](char c) {
    return is_space(c) || c == '\'' || c == '\\';
  });
  if (plain) return std::string(value);
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

std::string Location::display() const {
  if (backend == Backend::sqlite) return target;
  // Rebuilt from the parsed options, never from the text: whatever the text holds, no password
  // (libpq's '*' options) and no debug option is shown.
  char* error = nullptr;
  Options options(PQconninfoParse(target.c_str(), &error));
  if (error != nullptr) PQfreemem(error);
  if (!options) return "(a PostgreSQL connection string libpq cannot parse)";
  auto shown = [](const PQconninfoOption& o) {
    return o.val != nullptr && *o.val != '\0' && o.dispchar != nullptr &&
           std::string_view(o.dispchar).find_first_of("*D") == std::string_view::npos;
  };
  std::string out;
  auto append = [&out](const PQconninfoOption& o) {
    if (!out.empty()) out += ' ';
    out += o.keyword;
    out += '=';
    out += quote_value(o.val);
  };
  for (std::string_view keyword : kLeadingKeywords) {
    for (const auto* o = options.get(); o->keyword != nullptr; ++o) {
      if (keyword == o->keyword && shown(*o)) append(*o);
    }
  }
  for (const auto* o = options.get(); o->keyword != nullptr; ++o) {
    const bool leading = std::find(kLeadingKeywords.begin(), kLeadingKeywords.end(),
                                   std::string_view(o->keyword)) != kLeadingKeywords.end();
    if (!leading && shown(*o)) append(*o);
  }
  return out.empty() ? "(PostgreSQL, libpq's defaults)" : out;
}

// The form is told by the start of the text (decision order):
//   empty, too long or holding a NUL byte      refused
//   "/..."                                     an SQLite file
//   "sqlite:..."                               an SQLite URL (sqlite:///ABS/PATH only)
//   "postgresql://..." or "postgres://..."     a libpq URI
//   "word=..."                                 a libpq keyword string
//   "other:..."                                refused: an unknown scheme
//   anything else                              refused: a relative path
// The input is never quoted back in a message (it may hold a password).
Result<Location> parse_location(std::string_view text) {
  if (text.empty()) return invalid("the registry location is empty; " + std::string(kForms));
  if (text.size() > kMaxLocationLength) {
    return invalid("the registry location is longer than " + std::to_string(kMaxLocationLength) +
                   " characters");
  }
  if (text.find('\0') != std::string_view::npos)
    return invalid("the registry location contains a NUL byte");
  if (text.front() == '/') return Location{Backend::sqlite, std::string(text)};
  if (starts_with_nocase(text, "sqlite:")) return parse_sqlite_url(text);
  if (starts_with_nocase(text, "postgresql://") || starts_with_nocase(text, "postgres://"))
    return parse_postgresql(text, true);
  if (looks_like_keywords(text)) return parse_postgresql(text, false);
  if (has_scheme(text)) {
    // The scheme is named only in a URL's shape ("mysql://"): "user:secret@host" has none.
    const auto colon = text.find(':');
    const bool url = text.substr(colon + 1, 2) == "//";
    return invalid("unknown registry location scheme" +
                   (url ? " '" + std::string(text.substr(0, colon)) + "'" : std::string()) + "; " +
                   std::string(kForms));
  }
  return invalid("the registry location is a relative path; " + std::string(kForms));
}

}  // namespace onboard::registry
