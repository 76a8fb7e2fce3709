// An ACL rule's topic pattern, split into levels once when it is made, and the pool that makes
// equal patterns of a snapshot share one copy.
//
// Why: the broker asks for a decision on every PUBLISH, every SUBSCRIBE filter and every delivered
// message, and a decision weighs every rule of a device and its groups. Re-scanning each pattern's
// text for '/' and '%' per rule and per decision cost most of a decision's instructions; a fleet
// also repeats the same few patterns ("telemetry/%d/+") on every device, so a million devices
// held ten million copies of a few dozen strings. A Pattern is a pointer to one immutable node
// holding the text and its levels; copies share the node, and a PatternPool hands every equal
// pattern of a snapshot the same node.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iosfwd>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "registry/topic.h"

namespace onboard::acl {

// What one level of a well-formed pattern is, decided once when the pattern is made.
enum class LevelKind : std::uint8_t {
  literal,    // plain bytes, compared as they are
  template_,  // holds %d, %c or %u: compared in place with the substitutions
  plus,       // '+'
  hash,       // '#', always the last level
};

struct PatternLevel {
  std::uint32_t offset;  // into the pattern's text
  std::uint32_t size;
  LevelKind kind;
  std::string_view in(std::string_view text) const noexcept { return text.substr(offset, size); }
};

class Pattern {
 public:
  Pattern() : Pattern(std::string_view()) {}
  // Implicit, so that rules are written with their text: Rule{id, "devices/%d/#", ...}.
  Pattern(std::string_view text);
  Pattern(const std::string& text) : Pattern(std::string_view(text)) {}
  Pattern(const char* text) : Pattern(std::string_view(text)) {}

  Pattern(const Pattern& other) noexcept;
  Pattern(Pattern&& other) noexcept;
  Pattern& operator=(const Pattern& other) noexcept;
  Pattern& operator=(Pattern&& other) noexcept;
  ~Pattern();

  std::string_view text() const noexcept { return {node()->text(), node()->size}; }
  bool empty() const noexcept { return node()->size == 0; }
  // Well formed: pattern_problem would accept its structure (levels, wildcards, placeholders), so
  // the levels below are what the interpreted matchers in topic.h would find. A pattern that is
  // not well formed has no levels and is matched by those interpreted matchers.
  bool well_formed() const noexcept { return node()->well_formed; }
  std::span<const PatternLevel> levels() const noexcept {
    return {node()->levels(), node()->level_count};
  }
  // Which node this is: equal for patterns that share one (see shares_node_with).
  std::uintptr_t node_address() const noexcept { return bits_ & ~kTagMask; }
  // Do two patterns share one node (what PatternPool makes of equal texts)?
  bool shares_node_with(const Pattern& other) const noexcept { return bits_ == other.bits_; }

  // The first-level tag: 1 to 15 when the pattern is well formed and its first level is a plain
  // literal (no placeholder, no wildcard), then level_tag(that level); 0 otherwise. Two literal
  // levels with different tags differ, so a decision whose topic's first level has another tag
  // can pass the rule over without reading its node (most rules of a device start with another
  // word than the topic). Equal tags say nothing: the levels are compared as before. Kept in the
  // node pointer's low bits (nodes are 16-byte aligned), so that it costs no memory, is read from
  // the rule itself, and is set by the constructor that makes the node: no pattern exists
  // without its tag, and no tag outlives its pattern.
  std::uint8_t first_level_tag() const noexcept {
    return static_cast<std::uint8_t>(bits_ & kTagMask);
  }
  // The tag a literal first level `level` has (of a pattern, a topic or a filter): 1 to 15, from
  // its size and its first and last bytes, so that a topic's costs a few instructions.
  static std::uint8_t level_tag(std::string_view level) noexcept {
    const std::uint32_t mixed =
        level.empty()
            ? 0u
            : static_cast<std::uint32_t>(level.size()) |
                  static_cast<std::uint32_t>(static_cast<unsigned char>(level.front())) << 8 |
                  static_cast<std::uint32_t>(static_cast<unsigned char>(level.back())) << 16;
    // Fibonacci hashing, then scaled onto 1..15.
    const std::uint32_t spread = mixed * 0x9E3779B1u;
    return static_cast<std::uint8_t>(1 + ((static_cast<std::uint64_t>(spread) * 15) >> 32));
  }

  friend bool operator==(const Pattern& pattern, std::string_view text) noexcept {
    return pattern.text() == text;
  }

 private:
  // One allocation per distinct pattern: this header, then level_count PatternLevels, then the
  // text. Defined here so that the decision path's accessors inline.
  struct Node {
    std::atomic<std::uint32_t> holders{1};
    std::uint32_t level_count = 0;  // 0 when the pattern is not well formed
    std::size_t size = 0;           // bytes of text
    bool well_formed = false;

    PatternLevel* levels() noexcept { return reinterpret_cast<PatternLevel*>(this + 1); }
    const PatternLevel* levels() const noexcept {
      return reinterpret_cast<const PatternLevel*>(this + 1);
    }
    char* text() noexcept { return reinterpret_cast<char*>(levels() + level_count); }
    const char* text() const noexcept {
      return reinterpret_cast<const char*>(levels() + level_count);
    }
  };
  friend class PatternPool;
  // How many Patterns hold this node; PatternPool drops entries only it still holds.
  std::uint32_t holders() const noexcept;

  static constexpr std::uintptr_t kTagMask = 15;
  // Nodes are allocated at this alignment, so that an address never uses the tag's bits.
  static constexpr std::align_val_t kNodeAlignment{kTagMask + 1};
  Node* node() const noexcept { return reinterpret_cast<Node*>(bits_ & ~kTagMask); }

  std::uintptr_t bits_;  // the node's address, with first_level_tag() in its low four bits
};

std::ostream& operator<<(std::ostream& out, const Pattern& pattern);

// Hands out one node per distinct pattern text. Snapshot::build makes a pool and with_changes
// passes it on to the next snapshot, so equal patterns share a node across a snapshot's lifetime.
// Thread-safe: snapshots are derived on the plugin's watcher thread, and more than one derivation
// of the same snapshot may run at once. Never used on the decision path.
class PatternPool {
 public:
  // Holds the pool's lock while a snapshot interns all of its rules: one lock per build instead of
  // one per rule.
  class Session {
   public:
    explicit Session(PatternPool& pool) : pool_(pool), lock_(pool.mutex_) {}
    ~Session() { pool_.forget_recent(); }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    // The pooled equivalent of `pattern` (the same text, the pool's node).
    Pattern intern(const Pattern& pattern) { return pool_.intern_locked(pattern); }
    // The same, made from text only when the pool does not hold it yet: a loader that reads ten
    // million rules allocates one node per distinct pattern, not one per rule.
    Pattern intern_text(std::string_view text) { return pool_.intern_locked(text); }

   private:
    PatternPool& pool_;
    std::lock_guard<std::mutex> lock_;
  };

  Pattern intern(const Pattern& pattern) { return Session(*this).intern(pattern); }
  Pattern intern_text(std::string_view text) { return Session(*this).intern_text(text); }
  std::size_t size() const;

 private:
  Pattern intern_locked(const Pattern& pattern);
  Pattern intern_locked(std::string_view text);
  void forget_recent() noexcept;
  Pattern intern_by_text(const Pattern& pattern);
  // Drops patterns that no rule holds any more, once the pool has doubled since the last sweep:
  // amortised constant per intern, and a pool never grows past twice what is in use.
  void sweep_if_grown();

  mutable std::mutex mutex_;
  std::unordered_map<std::string_view, Pattern> by_text_;  // keys view their value's text
  std::size_t swept_size_ = 0;
  // The nodes interned lately, by address: rules handed to a build were interned by the loader
  // already, so most lookups are of a node seen a moment ago, and checking its address is cheaper
  // than hashing its text (a million-device build interns ten million rules). Each entry holds its
  // input node, so the address cannot be reused by another pattern while the entry lives; emptied
  // when the session ends.
  struct Recent {
    Pattern input;
    Pattern pooled;
  };
  std::array<std::optional<Recent>, 64> recent_;
  bool any_recent_ = false;
};

namespace detail {

// a == b for the short strings of topic levels, without a call: libc's memcmp costs about twenty
// instructions a call, most of them for lengths a level never has. Reads only bytes of a and b.
inline bool same_level(std::string_view a, std::string_view b) noexcept {
  const std::size_t n = a.size();
  if (n != b.size()) return false;
  const char* p = a.data();
  const char* q = b.data();
  const auto load8 = [](const char* at) {
    std::uint64_t v;
    std::memcpy(&v, at, 8);
    return v;
  };
  const auto load4 = [](const char* at) {
    std::uint32_t v;
    std::memcpy(&v, at, 4);
    return v;
  };
  if (n >= 8) {
    // Eight bytes a step, the last step ending at the end (overlapping the one before).
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      if (load8(p + i) != load8(q + i)) return false;
    }
    return load8(p + n - 8) == load8(q + n - 8);
  }
  if (n >= 4) return load4(p) == load4(q) && load4(p + n - 4) == load4(q + n - 4);
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] != q[i]) return false;
  }
  return true;
}

// A topic name split into levels once per decision, so that each rule compares levels instead of
// searching the topic for '/' again. Topics deeper than kMaxLevels are not split (fits() is false)
// and are matched by the interpreted matcher.
class SplitTopic {
 public:
  static constexpr std::size_t kMaxLevels = 16;
  explicit SplitTopic(std::string_view topic) noexcept;
  // is_valid_topic(topic), found in the same pass over the topic as the levels.
  bool valid() const noexcept { return valid_; }
  bool fits() const noexcept { return fits_; }
  std::size_t size() const noexcept { return count_; }
  std::string_view operator[](std::size_t i) const noexcept {
    return {data_ + start_[i], start_[i + 1] - start_[i] - 1};
  }
  bool dollar() const noexcept { return dollar_; }

 private:
  // Marks the '/' at `at` as the end of a level.
  void slash(std::size_t at) noexcept {
    if (count_ + 1 == kMaxLevels) {
      fits_ = false;  // too deep: only the validity is still looked for
      return;
    }
    start_[++count_] = static_cast<std::uint32_t>(at + 1);
  }

  const char* data_;
  // Level i is the bytes from start_[i] to just before start_[i + 1] (one past its '/'); written
  // only as far as the levels go: a decision does not zero what it does not use.
  std::uint32_t start_[kMaxLevels + 1];
  std::uint32_t count_ = 0;
  bool valid_ = false;
  bool fits_ = true;
  bool dollar_ = false;
};

// The substitutions of one decision, each checked for usability at most once instead of once per
// placeholder per rule; a value no rule uses (most rules use only %d) is never checked.
class PreparedSubstitutions {
 public:
  explicit PreparedSubstitutions(const Substitutions& subs) noexcept
      : values_{subs.device_id, subs.client_id, subs.username} {}
  // With the usability already known, as usable_mask() found it for the same values: a binding
  // that decides many times for one client checks its values once.
  PreparedSubstitutions(const Substitutions& subs, std::uint8_t usable_mask) noexcept
      : values_{subs.device_id, subs.client_id, subs.username},
        usable_{known(usable_mask, 0), known(usable_mask, 1), known(usable_mask, 2)} {}
  // For 'd', 'c' or 'u' (a well-formed pattern has no other placeholder letter).
  std::string_view value(char letter) const noexcept { return values_[index(letter)]; }
  bool usable(char letter) const noexcept {
    const std::size_t i = index(letter);
    if (usable_[i] == Usable::unknown) find_usable(i);
    return usable_[i] == Usable::yes;
  }
  // Bit 0, 1 and 2: whether the device id, the client id and the username are usable.
  std::uint8_t usable_mask() const noexcept {
    return static_cast<std::uint8_t>(usable('d') | usable('c') << 1 | usable('u') << 2);
  }
  Substitutions values() const noexcept { return {values_[0], values_[1], values_[2]}; }

 private:
  enum class Usable : std::uint8_t { unknown, yes, no };
  static std::size_t index(char letter) noexcept {
    return letter == 'd' ? 0 : letter == 'c' ? 1 : 2;
  }
  void find_usable(std::size_t i) const noexcept;
  static Usable known(std::uint8_t mask, int bit) noexcept {
    return (mask >> bit & 1) != 0 ? Usable::yes : Usable::no;
  }
  std::string_view values_[3];
  mutable Usable usable_[3] = {Usable::unknown, Usable::unknown, Usable::unknown};
};

// Same answers as match_topic(pattern.text(), topic, subs) for a well-formed pattern and a valid
// topic that fits; compares the pre-split levels and never re-reads the pattern's text for
// structure. `from`: the pattern's levels before it are literal levels the caller has found
// equal to the topic's (acl::evaluate compares the first one itself), so the walk starts there.
Match match_topic_split(const Pattern& pattern, const SplitTopic& topic,
                        const PreparedSubstitutions& subs, std::size_t from = 0) noexcept;

}  // namespace detail
}  // namespace onboard::acl
