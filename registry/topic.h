// MQTT topic names, subscription filters and the ACL rule patterns that guard them. Pure functions
// of their arguments: no I/O, no allocation on the matching paths, nothing throws. The broker
// plugin calls the matchers once per delivered message.
//
// A rule pattern is a subscription filter whose literal levels may hold the placeholders %d
// (device id), %c (client id) and %u (username). A placeholder is compared in place against the
// value it stands for, never spliced into a string, so a value cannot act as a wildcard. A value
// that is empty or holds '/', '+', '#' or NUL is unusable: a level that needs it matches nothing.
// There is no escape for a literal '%'; topics holding '%' can only be granted through wildcards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace onboard::acl {

// The MQTT limit on topic names and filters (a two-byte length prefix).
inline constexpr std::size_t kMaxTopicLength = 65535;

// A PUBLISH topic name: 1..65535 bytes, no '+', '#' or NUL. UTF-8 validity is the broker's job; it
// refuses malformed topics before any ACL check.
bool is_valid_topic(std::string_view topic) noexcept;

// A SUBSCRIBE filter (MQTT 3.1.1 §4.7, 5.0 §4.7): 1..65535 bytes, no NUL, '+' only as a whole
// level, '#' only as the whole last level.
bool is_valid_filter(std::string_view filter) noexcept;

struct Substitutions {
  std::string_view device_id;
  std::string_view client_id;
  std::string_view username;
};

// Does the pattern match this topic name? False for an invalid topic, an invalid pattern, or a
// level that needs an unusable substitution. Empty levels are levels ("a//b", "/a", "a/"); "a/#"
// also matches "a"; a topic starting with '$' never matches a leading '+' or '#' (MQTT §4.7.2).
bool pattern_matches_topic(std::string_view pattern, std::string_view topic,
                           const Substitutions& subs) noexcept;

// For SUBSCRIBE: is every topic the filter can match also matched by the pattern? Exact, not an
// approximation: "devices/%d/#" covers "devices/dev1/+/temp", "devices/dev1/#" and
// "devices/dev1", but neither "devices/#" nor "devices/+/x".
bool pattern_covers_filter(std::string_view pattern, std::string_view filter,
                           const Substitutions& subs) noexcept;

// Is there a topic that both the pattern and the filter match? Exact as well, so a deny rule
// checked with it never misses an overlap.
bool pattern_intersects_filter(std::string_view pattern, std::string_view filter,
                               const Substitutions& subs) noexcept;

// Why `pattern` cannot be stored as a rule, in words for the operator; nullopt when it can. Refuses
// everything the matchers would treat as malformed, and patterns that can never match a topic the
// broker accepts (bytes that are not UTF-8, or code points Mosquitto refuses in topics).
std::optional<std::string> pattern_problem(std::string_view pattern);

// Three-valued forms, for evaluate(): `undecidable` means the pattern is malformed or a level needs
// an unusable substitution, so the answer depends on how one reads it. An allow rule must then not
// grant and a deny rule must still deny. The topic or filter must already be valid (checked once by
// the caller instead of once per rule); the pattern is checked as far as the match reads it.
enum class Match : std::uint8_t { no, yes, undecidable };
namespace detail {
Match match_topic(std::string_view pattern, std::string_view topic,
                  const Substitutions& subs) noexcept;
Match match_covers(std::string_view pattern, std::string_view filter,
                   const Substitutions& subs) noexcept;
Match match_intersects(std::string_view pattern, std::string_view filter,
                       const Substitutions& subs) noexcept;
// One literal pattern level (no '/', placeholders allowed) against one topic or filter level.
Match compare_level(std::string_view pattern_level, std::string_view target_level,
                    const Substitutions& subs) noexcept;
}  // namespace detail

}  // namespace onboard::acl
