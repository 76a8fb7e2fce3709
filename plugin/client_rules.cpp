#include "plugin/client_rules.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace onboard::plugin {
namespace {

// Can `value` be written into a pattern's text in place of a placeholder, with the same answers
// as substituting it while matching? It must be a value the matchers use (not empty, no '/', '+',
// '#' or NUL: see PreparedSubstitutions::usable) and must not read as a placeholder itself ('%').
// Any other value leaves the rule to acl::evaluate's own substitution.
bool writable(std::string_view value) noexcept {
  if (value.empty()) return false;
  return std::none_of(value.begin(), value.end(), [](char c) {
    return c == '/' || c == '+' || c == '#' || c == '\0' || c == '%';
  });
}

bool has_placeholder(const acl::Pattern& pattern) noexcept {
  const auto levels = pattern.levels();
  return std::any_of(levels.begin(), levels.end(), [](const acl::PatternLevel& level) {
    return level.kind == acl::LevelKind::template_;
  });
}

// The rule with its placeholders written in, or the rule as it is when that is not certain to
// give the same answers.
acl::Rule compile(const acl::Rule& rule, const acl::Substitutions& subs) {
  if (!rule.pattern.well_formed() || !has_placeholder(rule.pattern)) return rule;
  const std::string_view text = rule.pattern.text();
  std::string out;
  out.reserve(text.size() + 32);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 1 < text.size()) {
      const char letter = text[i + 1];
      const std::string_view value = letter == 'd'   ? subs.device_id
                                     : letter == 'c' ? subs.client_id
                                     : letter == 'u' ? subs.username
                                                     : std::string_view();
      if (letter == 'd' || letter == 'c' || letter == 'u') {
        if (!writable(value)) return rule;
        out += value;
        ++i;
        continue;
      }
    }
    out += text[i];
  }
  acl::Rule compiled = rule;
  compiled.pattern = acl::Pattern(out);
  // Longer than a topic may be, or otherwise not the same structure: keep the original.
  if (!compiled.pattern.well_formed() ||
      compiled.pattern.levels().size() != rule.pattern.levels().size())
    return rule;
  return compiled;
}

}  // namespace

ClientRules::ClientRules(ClientRules&& other) noexcept { *this = std::move(other); }

ClientRules& ClientRules::operator=(ClientRules&& other) noexcept {
  if (this != &other) {
    release_device();
    verified_ = std::exchange(other.verified_, 0);
    device_ = std::exchange(other.device_, nullptr);
    groups_serial_ = other.groups_serial_;
    shard_ = other.shard_;
    set_count_ = std::exchange(other.set_count_, 0);
    cached_ = std::exchange(other.cached_, 0);
    pattern_bytes_ = std::exchange(other.pattern_bytes_, 0);
    sets_ = other.sets_;
    client_id_data_ = other.client_id_data_;
    client_id_size_ = other.client_id_size_;
    compiled_ = std::move(other.compiled_);
    other.compiled_.clear();
    topic_ = std::move(other.topic_);
    answers_ = other.answers_;
  }
  return *this;
}

ClientRules::~ClientRules() { release_device(); }

void ClientRules::release_device() noexcept {
  if (device_ != nullptr) std::exchange(device_, nullptr)->release();
}

void ClientRules::bind(const registry::Snapshot& snapshot, const SnapshotChanges& changes,
                       std::string_view username, std::string_view client_id) {
  const auto shard = static_cast<std::uint16_t>(registry::Snapshot::device_shard(username));
  const std::uint64_t verified = changes.last_change(shard);
  // The same record (held, so not another one at a freed address), the same groups and the same
  // client id: the same rules, compiled the same way, with the same answers.
  const bool same_groups = verified_ != 0 && client_id_data_ != nullptr &&
                           snapshot.groups_serial() == groups_serial_ &&
                           client_id == this->client_id();
  const registry::SnapshotDevice* device = snapshot.find_device(username);
  if (same_groups && device == device_ && shard == shard_) {
    client_id_data_ = client_id.data();  // the same text; the storage given now is the one to view
    verified_ = verified;
    return;
  }
  verified_ = 0;
  set_count_ = 0;
  cached_ = 0;
  compiled_.clear();
  pattern_bytes_ = 0;
  release_device();
  if (device != nullptr) device->hold();
  device_ = device;
  groups_serial_ = snapshot.groups_serial();
  shard_ = shard;
  // Longer than MQTT allows: not kept in 16 bits, so denied everything (fail closed), and kept
  // empty so that no later binding mistakes it for another.
  const bool storable = client_id.size() <= 0xffff;
  client_id_data_ = storable ? client_id.data() : nullptr;
  client_id_size_ = storable ? static_cast<std::uint16_t>(client_id.size()) : 0;
  if (storable && device != nullptr && device->status() == registry::DeviceStatus::active) {
    const registry::GroupAccess* type_group =
        device->type().empty() ? nullptr : snapshot.find_group(device->type());
    const registry::GroupAccess* default_group = snapshot.find_group(registry::kDefaultGroup);
    // The same sets in the same order as registry::check_device_access: ties between equally
    // placed rules go to the first, which is the one reported.
    std::array<std::span<const acl::Rule>, 3> sets{};
    std::size_t n = 0;
    sets[n++] = device->rules();
    if (type_group != nullptr) sets[n++] = type_group->rules;
    if (default_group != nullptr) sets[n++] = default_group->rules;
    // find_device matched the username exactly: it is the device id.
    const std::string_view device_id = device->id();
    const acl::Substitutions subs{device_id, client_id, device_id};
    // Sets without a placeholder are used where the snapshot holds them; the others are copied
    // with their placeholders written in. Reserved first, so that the spans stay put.
    // Within a memory budget per client: the groups' sets first (the fleet-wide rules such as
    // "default"'s `devices/%d/#` carry most traffic), then the device's own. A set left out is
    // evaluated with its placeholders, which gives the same answers a little slower.
    std::size_t to_copy = 0, budget = kCompiledBudget;
    std::array<bool, 3> copy{};
    for (std::size_t i = n; i-- > 0;) {
      std::size_t cost = 0;
      bool placeholders = false;
      for (const acl::Rule& r : sets[i]) {
        cost += sizeof(acl::Rule);
        if (!has_placeholder(r.pattern)) continue;
        placeholders = true;
        cost += kAllocationOverhead + 24 + r.pattern.levels().size() * sizeof(acl::PatternLevel) +
                r.pattern.text().size() + 2 * device->id().size() + client_id.size();
      }
      copy[i] = placeholders && cost <= budget;
      if (copy[i]) {
        budget -= cost;
        to_copy += sets[i].size();
      }
    }
    compiled_.reserve(to_copy);
    for (std::size_t i = 0; i < n; ++i) {
      if (!copy[i]) {
        sets_[i] = sets[i];
        continue;
      }
      const std::size_t first = compiled_.size();
      for (const acl::Rule& rule : sets[i]) {
        compiled_.push_back(compile(rule, subs));
        const acl::Pattern& pattern = compiled_.back().pattern;
        if (!pattern.shares_node_with(rule.pattern)) {
          // Its own node: a header, the levels and the text (registry/pattern.h). Near what the
          // budget counted, not within it: the estimate counts the device id twice and the client
          // id once, and a pattern with more placeholders writes them in more often. Still far
          // below 16 bits (the budget admits a few short patterns), and capped there anyway.
          pattern_bytes_ = static_cast<std::uint16_t>(std::min<std::size_t>(
              0xffff, pattern_bytes_ + kAllocationOverhead + 24 +
                          pattern.levels().size() * sizeof(acl::PatternLevel) +
                          pattern.text().size()));
        }
      }
      sets_[i] = std::span<const acl::Rule>(compiled_.data() + first, sets[i].size());
    }
    // 1 to 3 sets: the device's own set at least.
    set_count_ =
        static_cast<std::uint8_t>(n | acl::detail::PreparedSubstitutions(subs).usable_mask() << 2);
  }
  verified_ = verified;
}

acl::Evaluation ClientRules::check(acl::Access access, std::string_view topic_or_filter) {
  if (set_count() == 0) return acl::Evaluation{acl::Decision::deny, nullptr};
  if (access != acl::kPublish && access != acl::kSubscribe && access != acl::kRead)
    return acl::Evaluation{acl::Decision::deny, nullptr};
  const std::size_t i = slot(access);
  const bool same_topic = topic_or_filter == topic_;
  if (same_topic && (cached_ & (1u << i)) != 0) return answers_[i];
  const std::string_view device_id = device_->id();
  const acl::Substitutions subs{device_id, client_id(), device_id};
  const acl::Evaluation answer =
      acl::evaluate(std::span<const std::span<const acl::Rule>>(sets_.data(), set_count()), access,
                    topic_or_filter, acl::detail::PreparedSubstitutions(subs, usable_mask()));
  if (!same_topic) {
    // A topic with a NUL in it is not kept: kept() compares the kept topic as a C string. Every
    // such topic or filter is invalid, which evaluate() answers with a deny and no rule (and only
    // such input), so that answer is not kept instead of searching every topic for a NUL.
    const bool refused = answer.decision == acl::Decision::deny && answer.rule == nullptr;
    if (topic_or_filter.size() > kMaxCachedTopic || refused) return answer;
    topic_.assign(topic_or_filter);
    cached_ = 0;
  }
  answers_[i] = answer;
  cached_ |= static_cast<std::uint8_t>(1u << i);
  return answer;
}

std::size_t ClientRules::heap_bytes() const noexcept {
  std::size_t bytes = pattern_bytes_;
  if (compiled_.capacity() > 0)
    bytes += kAllocationOverhead + compiled_.capacity() * sizeof(acl::Rule);
  if (topic_.capacity() > 15) bytes += kAllocationOverhead + topic_.capacity() + 1;
  return bytes;
}

void SnapshotChanges::record(const registry::Snapshot* previous, const registry::Snapshot& next,
                             std::uint64_t generation) noexcept {
  if (previous == nullptr || previous->groups_serial() != next.groups_serial()) {
    shards_.fill(generation);
    return;
  }
  for (std::size_t shard = 0; shard < shards_.size(); ++shard) {
    if (!next.shares_device_shard(*previous, shard)) shards_[shard] = generation;
  }
}

acl::Evaluation decide(ClientRules& rules, const registry::Snapshot& snapshot,
                       const SnapshotChanges& changes, std::string_view username,
                       std::string_view client_id, acl::Access access,
                       std::string_view topic_or_filter) {
  if (!rules.current(changes)) rules.bind(snapshot, changes, username, client_id);
  assert(rules.bound_for(username, client_id));
  return rules.check(access, topic_or_filter);
}

}  // namespace onboard::plugin
