#include "registry/acl.h"

#include <catch2/catch.hpp>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

namespace {

using namespace onboard::acl;

const Substitutions kDev1{"dev1", "dev1", "dev1"};

Rule allow(std::int64_t id, std::string_view pattern, std::uint8_t access, int priority = 0) {
  return Rule{id, std::string(pattern), access, Effect::allow, priority};
}
Rule deny(std::int64_t id, std::string_view pattern, std::uint8_t access, int priority = 0) {
  return Rule{id, std::string(pattern), access, Effect::deny, priority};
}

// Evaluates against one rule set.
Evaluation check(const std::vector<Rule>& rules, Access access, std::string_view topic,
                 const Substitutions& subs = kDev1) {
  const std::span<const Rule> sets[] = {rules};
  return evaluate(sets, access, topic, subs);
}

std::int64_t decided_by(const Evaluation& e) { return e.rule == nullptr ? -1 : e.rule->id; }

}  // namespace

TEST_CASE("an allow rule whose pattern matches the topic allows the publish and names itself",
          "[acl]") {
  const std::vector<Rule> rules{allow(1, "other/#", kPublish), allow(2, "devices/%d/#", kPublish)};
  const Evaluation e = check(rules, kPublish, "devices/dev1/telemetry");
  CHECK(e.decision == Decision::allow);
  REQUIRE(e.rule != nullptr);
  CHECK(e.rule == &rules[1]);
}

TEST_CASE("when no rule applies the answer is no_match, without a rule", "[acl]") {
  const std::vector<Rule> none;
  CHECK(check(none, kPublish, "a").decision == Decision::no_match);
  CHECK(check(none, kPublish, "a").rule == nullptr);
  CHECK(evaluate({}, kRead, "a", kDev1).decision == Decision::no_match);

  const std::vector<Rule> rules{allow(1, "devices/%d/#", kReadWrite)};
  const Evaluation other_device = check(rules, kPublish, "devices/dev2/telemetry");
  CHECK(other_device.decision == Decision::no_match);
  CHECK(other_device.rule == nullptr);
}

TEST_CASE("a deny beats an allow of equal priority, whatever their order", "[acl]") {
  const Rule a = allow(1, "devices/#", kReadWrite);
  const Rule d = deny(2, "devices/+/admin", kReadWrite);
  for (const auto& rules : {std::vector<Rule>{a, d}, std::vector<Rule>{d, a}}) {
    const Evaluation e = check(rules, kPublish, "devices/dev1/admin");
    CHECK(e.decision == Decision::deny);
    CHECK(decided_by(e) == 2);
    CHECK(check(rules, kPublish, "devices/dev1/status").decision == Decision::allow);
  }
}

TEST_CASE("a higher priority rule overrides a lower priority one of either effect", "[acl]") {
  const std::vector<Rule> allow_over_deny{deny(1, "devices/#", kPublish, 0),
                                          allow(2, "devices/%d/#", kPublish, 10)};
  Evaluation e = check(allow_over_deny, kPublish, "devices/dev1/x");
  CHECK(e.decision == Decision::allow);
  CHECK(decided_by(e) == 2);
  e = check(allow_over_deny, kPublish, "devices/dev2/x");
  CHECK(e.decision == Decision::deny);
  CHECK(decided_by(e) == 1);

  const std::vector<Rule> deny_over_allow{allow(1, "#", kPublish, -5),
                                          deny(2, "devices/%d/config", kPublish, 5)};
  e = check(deny_over_allow, kPublish, "devices/dev1/config");
  CHECK(e.decision == Decision::deny);
  CHECK(decided_by(e) == 2);
  CHECK(check(deny_over_allow, kPublish, "devices/dev1/other").decision == Decision::allow);
}

TEST_CASE("among equal rules the first one in rule-set order is reported", "[acl]") {
  const std::vector<Rule> own{allow(1, "devices/%d/#", kPublish), allow(2, "#", kPublish)};
  const std::vector<Rule> group{deny(3, "devices/+/x", kPublish), deny(4, "other/#", kPublish)};
  const std::span<const Rule> both[] = {own, group};
  CHECK(decided_by(evaluate(both, kPublish, "devices/dev1/y", kDev1)) == 1);
  CHECK(decided_by(evaluate(both, kPublish, "devices/dev1/x", kDev1)) == 3);
  const std::span<const Rule> own_only[] = {own};
  CHECK(decided_by(evaluate(own_only, kPublish, "z", kDev1)) == 2);
}

TEST_CASE("a group's rule and a device's own rule are weighed together", "[acl]") {
  const std::vector<Rule> own{allow(1, "fleet/#", kPublish, 0)};
  const std::vector<Rule> group{deny(2, "fleet/firmware/#", kPublish, 1)};
  const std::span<const Rule> sets[] = {own, group};
  const Evaluation e = evaluate(sets, kPublish, "fleet/firmware/v2", kDev1);
  CHECK(e.decision == Decision::deny);
  CHECK(e.rule == &group[0]);
  CHECK(evaluate(sets, kPublish, "fleet/status", kDev1).rule == &own[0]);
}

TEST_CASE("a rule only counts for the kinds of access in its mask", "[acl]") {
  const std::vector<Rule> publish_only{allow(1, "#", kPublish)};
  CHECK(check(publish_only, kPublish, "a").decision == Decision::allow);
  CHECK(check(publish_only, kSubscribe, "a").decision == Decision::no_match);
  CHECK(check(publish_only, kRead, "a").decision == Decision::no_match);

  const std::vector<Rule> read_only{allow(1, "#", kRead)};
  CHECK(check(read_only, kRead, "a").decision == Decision::allow);
  CHECK(check(read_only, kPublish, "a").decision == Decision::no_match);
  CHECK(check(read_only, kSubscribe, "a").decision == Decision::no_match);

  const std::vector<Rule> subscribe_only{allow(1, "#", kSubscribe)};
  CHECK(check(subscribe_only, kSubscribe, "a/#").decision == Decision::allow);
  CHECK(check(subscribe_only, kRead, "a").decision == Decision::no_match);

  // A deny for another kind of access does not shadow an allow.
  const std::vector<Rule> mixed{allow(1, "#", kReadWrite), deny(2, "#", kPublish)};
  CHECK(check(mixed, kRead, "a").decision == Decision::allow);
  CHECK(check(mixed, kPublish, "a").decision == Decision::deny);
}

TEST_CASE("readwrite grants publish, subscribe and read", "[acl]") {
  const std::vector<Rule> rules{allow(1, "devices/%d/#", kReadWrite)};
  CHECK(check(rules, kPublish, "devices/dev1/a").decision == Decision::allow);
  CHECK(check(rules, kSubscribe, "devices/dev1/#").decision == Decision::allow);
  CHECK(check(rules, kRead, "devices/dev1/a").decision == Decision::allow);
  const std::vector<Rule> two{allow(1, "x", kPublish | kRead)};
  CHECK(check(two, kRead, "x").decision == Decision::allow);
  CHECK(check(two, kSubscribe, "x").decision == Decision::no_match);
}

TEST_CASE("an invalid topic or filter is denied even under an allow-everything rule", "[acl]") {
  const std::vector<Rule> rules{allow(1, "#", kReadWrite)};
  for (std::string_view topic : {"", "a/+", "a/#", "#"}) {
    CAPTURE(topic);
    const Evaluation e = check(rules, kPublish, topic);
    CHECK(e.decision == Decision::deny);
    CHECK(e.rule == nullptr);
    CHECK(check(rules, kRead, topic).decision == Decision::deny);
  }
  for (std::string_view filter : {"", "a/#/b", "a+", "a/b#"}) {
    CAPTURE(filter);
    const Evaluation e = check(rules, kSubscribe, filter);
    CHECK(e.decision == Decision::deny);
    CHECK(e.rule == nullptr);
  }
  CHECK(check(rules, kPublish, std::string_view("a\0", 2)).decision == Decision::deny);
  CHECK(check(rules, kPublish, std::string(65536, 'a')).decision == Decision::deny);
}

TEST_CASE("a check must ask for exactly one kind of access", "[acl]") {
  const std::vector<Rule> rules{allow(1, "#", kReadWrite)};
  for (int access : {0, 3, 7, 8, 0x10}) {
    CAPTURE(access);
    const Evaluation e = check(rules, static_cast<Access>(access), "a");
    CHECK(e.decision == Decision::deny);
    CHECK(e.rule == nullptr);
  }
}

TEST_CASE("a subscription is allowed only if an allow rule covers the whole filter", "[acl]") {
  const std::vector<Rule> rules{allow(1, "devices/%d/#", kSubscribe)};
  CHECK(check(rules, kSubscribe, "devices/dev1/+/temp").decision == Decision::allow);
  CHECK(check(rules, kSubscribe, "devices/dev1/#").decision == Decision::allow);
  CHECK(check(rules, kSubscribe, "devices/dev1").decision == Decision::allow);
  // Partly inside the grant is not enough: the broker cannot trim a subscription.
  CHECK(check(rules, kSubscribe, "devices/#").decision == Decision::no_match);
  CHECK(check(rules, kSubscribe, "devices/+/temp").decision == Decision::no_match);
  CHECK(check(rules, kSubscribe, "#").decision == Decision::no_match);
}

TEST_CASE("a subscription is denied if a deny rule overlaps any part of the filter", "[acl]") {
  const std::vector<Rule> rules{allow(1, "devices/%d/#", kSubscribe),
                                deny(2, "devices/+/secrets/#", kSubscribe)};
  Evaluation e = check(rules, kSubscribe, "devices/dev1/#");
  CHECK(e.decision == Decision::deny);
  CHECK(decided_by(e) == 2);
  e = check(rules, kSubscribe, "devices/dev1/+");  // would receive devices/dev1/secrets
  CHECK(e.decision == Decision::deny);
  CHECK(check(rules, kSubscribe, "devices/dev1/status/#").decision == Decision::allow);
  CHECK(check(rules, kSubscribe, "devices/dev1/+/x").decision == Decision::deny);
  CHECK(check(rules, kSubscribe, "devices/dev1").decision == Decision::allow);
}

TEST_CASE("'$' topics are not reached through leading wildcards in rules", "[acl]") {
  const std::vector<Rule> rules{allow(1, "#", kReadWrite), allow(2, "+/broker/+", kReadWrite)};
  CHECK(check(rules, kRead, "$SYS/broker/uptime").decision == Decision::no_match);
  CHECK(check(rules, kPublish, "$SYS/broker").decision == Decision::no_match);
  CHECK(check(rules, kSubscribe, "$SYS/#").decision == Decision::no_match);
  CHECK(check(rules, kSubscribe, "#").decision == Decision::allow);  // it never delivers $SYS

  // A leading-wildcard deny does not reach them either; only a "$SYS/..." rule does.
  const std::vector<Rule> sys{allow(1, "$SYS/#", kRead), deny(2, "#", kRead)};
  CHECK(check(sys, kRead, "$SYS/broker/uptime").decision == Decision::allow);
}

TEST_CASE("an unusable substitution never grants and never lifts a deny", "[acl]") {
  // The plugin makes client id, username and device id equal and valid; this is the safety net.
  const Substitutions bad{"dev1", "dev1/admin", "+"};
  const std::vector<Rule> grants{allow(1, "clients/%c/#", kReadWrite),
                                 allow(2, "users/%u/#", kReadWrite)};
  CHECK(check(grants, kPublish, "clients/dev1/admin/x", bad).decision == Decision::no_match);
  CHECK(check(grants, kPublish, "users/+/x", bad).decision == Decision::deny);  // invalid topic
  CHECK(check(grants, kPublish, "users/anyone/x", bad).decision == Decision::no_match);
  CHECK(check(grants, kSubscribe, "users/+/#", bad).decision == Decision::no_match);

  // Read literally, the deny below would cover clients/dev1/admin/config. With the value unusable
  // it cannot be matched level by level, so it applies wherever it might.
  const std::vector<Rule> denies{allow(1, "clients/#", kReadWrite),
                                 deny(2, "clients/%c/config", kReadWrite)};
  Evaluation e = check(denies, kPublish, "clients/dev1/admin/config", bad);
  CHECK(e.decision == Decision::deny);
  CHECK(decided_by(e) == 2);
  CHECK(check(denies, kSubscribe, "clients/#", bad).decision == Decision::deny);
  // Levels before the unusable one still rule the deny out.
  CHECK(check(denies, kPublish, "other", bad).decision == Decision::no_match);
  const std::vector<Rule> deny_elsewhere{allow(1, "#", kReadWrite),
                                         deny(2, "admin/%c", kReadWrite)};
  CHECK(check(deny_elsewhere, kPublish, "clients/x", bad).decision == Decision::allow);
}

TEST_CASE("a malformed stored pattern never grants and a malformed deny still denies", "[acl]") {
  const std::vector<Rule> grants{allow(1, "a/#/b", kReadWrite), allow(2, "a+", kReadWrite),
                                 allow(3, "%x", kReadWrite), allow(4, "", kReadWrite)};
  CHECK(check(grants, kPublish, "a/x/b").decision == Decision::no_match);
  CHECK(check(grants, kPublish, "a").decision == Decision::no_match);
  CHECK(check(grants, kSubscribe, "a/#").decision == Decision::no_match);
  CHECK(check(grants, kPublish, "%x").decision == Decision::no_match);

  const std::vector<Rule> denies{allow(1, "#", kReadWrite), deny(2, "a/#/b", kReadWrite)};
  CHECK(check(denies, kPublish, "a/x/b").decision == Decision::deny);
  CHECK(check(denies, kSubscribe, "a/#").decision == Decision::deny);
  CHECK(check(denies, kPublish, "b").decision == Decision::allow);
  const std::vector<Rule> empty_deny{allow(1, "#", kReadWrite), deny(2, "", kReadWrite)};
  CHECK(check(empty_deny, kPublish, "b").decision == Decision::deny);
}

TEST_CASE("access masks read and print as publish, subscribe, read and readwrite", "[acl]") {
  CHECK(parse_access("publish") == std::uint8_t{kPublish});
  CHECK(parse_access("subscribe") == std::uint8_t{kSubscribe});
  CHECK(parse_access("read") == std::uint8_t{kRead});
  CHECK(parse_access("readwrite") == std::uint8_t{kReadWrite});
  CHECK(parse_access("publish|read") == std::uint8_t{kPublish | kRead});
  CHECK(parse_access("publish|subscribe|read") == std::uint8_t{kReadWrite});
  for (std::string_view bad :
       {"", "write", "Publish", "publish|", "|read", "publish read", "publish||read", "all"}) {
    CAPTURE(bad);
    CHECK(parse_access(bad) == std::nullopt);
  }
  for (std::uint8_t mask = 1; mask <= kReadWrite; ++mask) {
    CAPTURE(int{mask});
    CHECK(parse_access(access_name(mask)) == mask);
  }
  CHECK(access_name(kReadWrite) == "readwrite");
  CHECK(access_name(kPublish | kSubscribe) == "publish|subscribe");
  CHECK(access_name(0) == "invalid");
  CHECK(access_name(8) == "invalid");
}

TEST_CASE("effects and decisions have stable names", "[acl]") {
  CHECK(parse_effect("allow") == Effect::allow);
  CHECK(parse_effect("deny") == Effect::deny);
  CHECK(parse_effect("Deny") == std::nullopt);
  CHECK(parse_effect("") == std::nullopt);
  CHECK(to_string(Effect::allow) == "allow");
  CHECK(to_string(Effect::deny) == "deny");
  CHECK(to_string(Decision::allow) == "allow");
  CHECK(to_string(Decision::deny) == "deny");
  CHECK(to_string(Decision::no_match) == "no_match");
}
