#include "registry/pattern.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>
#include <ostream>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace onboard::acl {

namespace {

bool is_placeholder_letter(char c) noexcept { return c == 'd' || c == 'c' || c == 'u'; }

// The levels of a well-formed pattern; empty when it is not well formed, that is when a matcher in
// topic.cpp could answer `undecidable` for a reason other than an unusable substitution: empty or
// too long, a NUL, a wildcard that is not a whole level, '#' before the last level, or '%' not
// followed by d, c or u.
std::vector<PatternLevel> split_levels(std::string_view text) {
  std::vector<PatternLevel> levels;
  if (text.empty() || text.size() > kMaxTopicLength) return {};
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = std::min(text.find('/', start), text.size());
    const std::string_view level = text.substr(start, slash - start);
    PatternLevel out{static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(level.size()),
                     LevelKind::literal};
    if (level == "+") {
      out.kind = LevelKind::plus;
    } else if (level == "#") {
      if (slash != text.size()) return {};
      out.kind = LevelKind::hash;
    } else {
      for (std::size_t i = 0; i < level.size(); ++i) {
        const char c = level[i];
        if (c == '+' || c == '#' || c == '\0') return {};
        if (c == '%') {
          if (i + 1 == level.size() || !is_placeholder_letter(level[i + 1])) return {};
          out.kind = LevelKind::template_;
          ++i;
        }
      }
    }
    levels.push_back(out);
    if (slash == text.size()) return levels;
    start = slash + 1;
  }
}

}  // namespace

Pattern::Pattern(std::string_view text) {
  // The levels follow the header directly, so the header's size must keep them aligned.
  static_assert(sizeof(Node) % alignof(PatternLevel) == 0);
  const std::vector<PatternLevel> levels = split_levels(text);
  const std::size_t bytes = sizeof(Node) + levels.size() * sizeof(PatternLevel) + text.size();
  // Asked for explicitly: the plain operator new need only align for an object of `bytes`, and
  // the tag lives in the address's low four bits (glibc's malloc gives 16 anyway, at no cost).
  void* memory = ::operator new(bytes, kNodeAlignment);
  Node* node = new (memory) Node;
  node->level_count = static_cast<std::uint32_t>(levels.size());
  node->size = text.size();
  node->well_formed = !levels.empty();
  if (!levels.empty()) {
    std::memcpy(node->levels(), levels.data(), levels.size() * sizeof(PatternLevel));
  }
  if (!text.empty()) std::memcpy(node->text(), text.data(), text.size());
  std::uint8_t tag = 0;
  if (!levels.empty() && levels.front().kind == LevelKind::literal)
    tag = level_tag(levels.front().in(text));
  bits_ = reinterpret_cast<std::uintptr_t>(node) | tag;
}

Pattern::Pattern(const Pattern& other) noexcept : bits_(other.bits_) {
  node()->holders.fetch_add(1, std::memory_order_relaxed);
}

Pattern::Pattern(Pattern&& other) noexcept : Pattern(static_cast<const Pattern&>(other)) {
  // A moved-from Pattern keeps its node (and stays a valid pattern): no null state to check for.
}

Pattern& Pattern::operator=(const Pattern& other) noexcept {
  if (bits_ != other.bits_) {
    Pattern copy(other);
    std::swap(bits_, copy.bits_);
  }
  return *this;
}

Pattern& Pattern::operator=(Pattern&& other) noexcept {
  std::swap(bits_, other.bits_);
  return *this;
}

Pattern::~Pattern() {
  // acq_rel: the last holder must see every other holder's reads of the node before freeing it.
  Node* const node = this->node();
  if (node->holders.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    node->~Node();
    ::operator delete(static_cast<void*>(node), kNodeAlignment);
  }
}

std::uint32_t Pattern::holders() const noexcept {
  return node()->holders.load(std::memory_order_acquire);
}

std::ostream& operator<<(std::ostream& out, const Pattern& pattern) {
  return out << pattern.text();
}

Pattern PatternPool::intern_locked(const Pattern& pattern) {
  // Nodes are at least 16-byte aligned: the low bits carry nothing.
  std::optional<Recent>& recent = recent_[(pattern.node_address() >> 4) % recent_.size()];
  if (recent && recent->input.shares_node_with(pattern)) return recent->pooled;
  Pattern pooled = intern_by_text(pattern);
  recent = Recent{pattern, pooled};
  any_recent_ = true;
  return pooled;
}

void PatternPool::forget_recent() noexcept {
  if (!any_recent_) return;
  for (auto& recent : recent_) recent.reset();
  any_recent_ = false;
}

Pattern PatternPool::intern_by_text(const Pattern& pattern) {
  if (auto it = by_text_.find(pattern.text()); it != by_text_.end()) return it->second;
  sweep_if_grown();
  Pattern pooled = pattern;
  by_text_.emplace(pooled.text(), pooled);
  return pooled;
}

Pattern PatternPool::intern_locked(std::string_view text) {
  if (auto it = by_text_.find(text); it != by_text_.end()) return it->second;
  return intern_locked(Pattern(text));
}

std::size_t PatternPool::size() const {
  const std::lock_guard lock(mutex_);
  return by_text_.size();
}

void PatternPool::sweep_if_grown() {
  if (by_text_.size() < 2 * swept_size_ + 64) return;
  // An entry only the pool holds cannot gain a holder except through intern(), which holds the
  // lock, so dropping it here races with nothing.
  std::erase_if(by_text_, [](const auto& entry) { return entry.second.holders() == 1; });
  swept_size_ = by_text_.size();
}

namespace detail {

SplitTopic::SplitTopic(std::string_view topic) noexcept : data_(topic.data()) {
  const std::size_t n = topic.size();
  if (n == 0 || n > kMaxTopicLength) return;
  dollar_ = topic.front() == '$';
  start_[0] = 0;
  bool bad = false;
#if defined(__SSE2__)
  // Sixteen bytes a step, the forbidden bytes ('+', '#', NUL) and the slashes in the same pass:
  // three memchr calls for the validity and one per level cost about 250 instructions for a
  // 26-byte topic, as did a pass eight bytes a step (callgrind); this costs about 140, most of it
  // recording the levels.
  const __m128i slashes = _mm_set1_epi8('/');
  const __m128i pluses = _mm_set1_epi8('+');
  const __m128i hashes = _mm_set1_epi8('#');
  const __m128i nuls = _mm_setzero_si128();
  // The 16 bytes at `bytes`, which are the topic's from offset `at`; only those whose bit is set
  // in `keep` count.
  const auto scan = [&](const char* bytes, std::size_t at, unsigned keep) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
    const __m128i forbidden =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, pluses), _mm_cmpeq_epi8(v, hashes)),
                     _mm_cmpeq_epi8(v, nuls));
    bad = bad || (static_cast<unsigned>(_mm_movemask_epi8(forbidden)) & keep) != 0;
    for (unsigned s = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, slashes))) & keep;
         s != 0; s &= s - 1)
      slash(at + static_cast<std::size_t>(std::countr_zero(s)));
  };
  if (n >= 16) {
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) scan(topic.data() + i, i, 0xffffu);
    // The last bytes: the 16 ending at the topic's end, those already seen left out.
    if (i < n) scan(topic.data() + n - 16, n - 16, (0xffffu << (i - (n - 16))) & 0xffffu);
  } else {
    // Never read past the topic: a short one is copied into a block of its own first.
    alignas(16) char block[16] = {};
    std::memcpy(block, topic.data(), n);
    scan(block, 0, (1u << n) - 1);
  }
#else
  // memchr per forbidden byte and per level: libc's vectorised search reads 32 bytes a step,
  // where a byte loop cost ten instructions per byte of the topic.
  bad = topic.find('+') != topic.npos || topic.find('#') != topic.npos ||
        topic.find('\0') != topic.npos;
  if (!bad) {
    for (std::size_t at = topic.find('/'); at != topic.npos; at = topic.find('/', at + 1))
      slash(at);
  }
#endif
  if (bad) {
    count_ = 0;
    return;
  }
  valid_ = true;
  if (fits_) start_[++count_] = static_cast<std::uint32_t>(n + 1);
}

void PreparedSubstitutions::find_usable(std::size_t i) const noexcept {
  // A value that could widen or blur a match is unusable, as in topic.cpp: '/' would span levels,
  // '+' and '#' would look like wildcards, and an empty value would turn "devices/%d" into
  // "devices/". One pass with four comparisons per byte; find_first_of would search the four
  // bytes once per byte of the value.
  bool ok = !values_[i].empty();
  for (const char c : values_[i]) {
    if (c == '/' || c == '+' || c == '#' || c == '\0') ok = false;
  }
  usable_[i] = ok ? Usable::yes : Usable::no;
}

namespace {

// compare_level of topic.cpp for a template level of a well-formed pattern (every '%' followed by
// d, c or u; no wildcard or NUL), with usability decided once per decision.
Match compare_template(std::string_view level, std::string_view target,
                       const PreparedSubstitutions& subs) noexcept {
  if (level.size() == 2) {
    // The level is one placeholder and nothing else ("%d", the common case): its value is the
    // whole level or not.
    const char letter = level[1];
    if (!subs.usable(letter)) return Match::undecidable;
    return same_level(subs.value(letter), target) ? Match::yes : Match::no;
  }
  std::size_t at = 0;  // position in target
  for (std::size_t i = 0; i < level.size(); ++i) {
    const char c = level[i];
    if (c == '%') {
      const char letter = level[++i];
      if (!subs.usable(letter)) return Match::undecidable;
      const std::string_view value = subs.value(letter);
      if (target.size() - at < value.size() ||
          !same_level(target.substr(at, value.size()), value)) {
        return Match::no;
      }
      at += value.size();
    } else {
      if (at == target.size() || target[at] != c) return Match::no;
      ++at;
    }
  }
  return at == target.size() ? Match::yes : Match::no;
}

}  // namespace

Match match_topic_split(const Pattern& pattern, const SplitTopic& topic,
                        const PreparedSubstitutions& subs, std::size_t from) noexcept {
  // The walk of match_topic in topic.cpp, over levels found once instead of searched for.
  const std::string_view text = pattern.text();
  const std::span<const PatternLevel> levels = pattern.levels();
  for (std::size_t i = from; i < levels.size(); ++i) {
    const PatternLevel& level = levels[i];
    if (level.kind == LevelKind::hash) {
      // '#' also matches the parent level, so whatever is left of the topic (even nothing) is fine.
      return i == 0 && topic.dollar() ? Match::no : Match::yes;
    }
    if (i >= topic.size()) return Match::no;
    switch (level.kind) {
      case LevelKind::plus:
        if (i == 0 && topic.dollar()) return Match::no;
        break;
      case LevelKind::literal:
        if (!same_level(level.in(text), topic[i])) return Match::no;
        break;
      case LevelKind::template_:
        if (const Match m = compare_template(level.in(text), topic[i], subs); m != Match::yes) {
          return m;
        }
        break;
      case LevelKind::hash:
        break;  // handled above
    }
  }
  return topic.size() == levels.size() ? Match::yes : Match::no;
}

}  // namespace detail
}  // namespace onboard::acl
