// The claim gate's pure parts: the id pattern, the snapshot's connect verdict for a claim
// certificate, and the topics a claim client may use.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "registry/claim_recovery.h"
#include "registry/id_pattern.h"
#include "registry/snapshot.h"
#include "tests/support/result.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::must;

namespace {

constexpr UnixTime kNow = 1'700'000'000;
const std::string kClaimFp(64, 'c');
const std::string kDeviceFp(64, 'd');

ClaimAccess claim(std::string name = "factory-1") {
  ClaimAccess c;
  c.name = std::move(name);
  c.certificate_sha256 = kClaimFp;
  c.not_before = kNow - 10;
  c.not_after = kNow + 3600;
  c.quota = 3;
  c.quota_used = 0;
  c.id_pattern = "sensor-[0-9]{4}";
  return c;
}

std::shared_ptr<const Snapshot> snapshot_with(ClaimAccess c) {
  DeviceAccess device;
  device.id = "sensor-0001";
  device.certificates.push_back({kDeviceFp, "01", CertificateStatus::active, 0, kNow + 3600});
  return Snapshot::build({device}, {}, 1)->with_claims({std::move(c)});
}

ConnectReason verdict(const Snapshot& s, std::string_view client_id, UnixTime now = kNow) {
  return s.connect_verdict({kClaimFp, "factory-1", client_id}, now, false).reason;
}

}  // namespace

TEST_CASE("an id pattern matches whole ids only") {
  auto p = must(IdPattern::compile("sensor-[0-9]{4}"));
  CHECK(p.matches("sensor-0042"));
  CHECK_FALSE(p.matches("sensor-042"));
  CHECK_FALSE(p.matches("sensor-00421"));
  CHECK_FALSE(p.matches("xsensor-0042"));
  auto q = must(IdPattern::compile("[a-f]+_x?\\.v{1,3}.*"));
  CHECK(q.matches("abc_x.vv"));
  CHECK(q.matches("f_.vvv-anything.9"));
  CHECK(q.matches("abc_x.vvvv"));    // '.*' takes the fourth v
  CHECK_FALSE(q.matches("abc_x."));  // at least one v
  CHECK_FALSE(q.matches("abc_xx.v"));
  CHECK_FALSE(q.matches("g_.v"));
  auto any = must(IdPattern::compile(kAnyIdPattern));
  CHECK(any.matches("dev-1"));
  CHECK_FALSE(any.matches(""));
  CHECK_FALSE(any.matches("dev/1"));
}

TEST_CASE("an id pattern outside the restricted syntax is refused with the reason") {
  auto problem = [](std::string_view p) { return id_pattern_problem(p).value_or("(none)"); };
  CHECK_THAT(problem("a|b"), Catch::Contains("'|' is not supported"));
  CHECK_THAT(problem("(ab)+"), Catch::Contains("'(' is not supported"));
  CHECK_THAT(problem("^abc$"), Catch::Contains("not supported"));
  CHECK_THAT(problem("[^a]"), Catch::Contains("negated"));
  CHECK_THAT(problem("[a-"), Catch::Contains("not closed"));
  CHECK_THAT(problem("a{3"), Catch::Contains("not closed"));
  CHECK_THAT(problem("a{999}"), Catch::Contains("'{' needs a count"));
  CHECK_THAT(problem("a**"), Catch::Contains("quantifier cannot follow"));
  CHECK_THAT(problem("*a"), Catch::Contains("follows no character"));
  CHECK_THAT(problem("a/b"), Catch::Contains("'/' is not supported"));
  CHECK_THAT(problem(""), Catch::Contains("empty"));
  CHECK_THAT(problem(std::string(300, 'a')), Catch::Contains("the limit is 256"));
  CHECK_THAT(problem("a{128}b{128}c{128}d{128}e"), Catch::Contains("too complex"));
  CHECK(problem("[z-a]").find("bad range") != std::string::npos);
}

TEST_CASE("matching is linear even for patterns that make a backtracking matcher explode") {
  auto p = must(IdPattern::compile("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"));
  const std::string id(64, 'a');
  // A backtracking matcher tries every way of splitting 64 letters over 16 stars, on the order of
  // 1e15 attempts, and never returns; the simulation does 64 steps over 17 states. The bound is
  // only there to fail instead of hanging, far above what a slowed-down (sanitizer) build needs.
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(p.matches(id));
  CHECK(p.matches(id + "b"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}

TEST_CASE("a claim certificate connects only with a free id its pattern allows") {
  auto s = snapshot_with(claim());
  const auto accepted = s->connect_verdict({kClaimFp, "factory-1", "sensor-0002"}, kNow, false);
  CHECK(accepted.accepted());
  CHECK(accepted.claim == "factory-1");
  CHECK(accepted.device_id.empty());
  CHECK(verdict(*s, "sensor-02") == ConnectReason::claim_id_not_allowed);
  CHECK(verdict(*s, "sensor-0002/x") == ConnectReason::claim_id_not_allowed);
  CHECK(verdict(*s, "sensor-0001") == ConnectReason::claim_id_registered);
  // The registered device itself still connects as before.
  CHECK(s->connect_verdict({kDeviceFp, "sensor-0001", "sensor-0001"}, kNow, false).accepted());
  // A stale registry refuses claims as everyone.
  CHECK(s->connect_verdict({kClaimFp, "factory-1", "sensor-0002"}, kNow, true).reason ==
        ConnectReason::registry_stale);
}

TEST_CASE("an expired revoked or used-up claim is refused at connect") {
  CHECK(verdict(*snapshot_with(claim()), "sensor-0002", kNow + 3601) ==
        ConnectReason::claim_expired);
  auto revoked = claim();
  revoked.status = ClaimStatus::revoked;
  CHECK(verdict(*snapshot_with(revoked), "sensor-0002") == ConnectReason::claim_revoked);
  auto cert_revoked = claim();
  cert_revoked.certificate_status = CertificateStatus::revoked;
  CHECK(verdict(*snapshot_with(cert_revoked), "sensor-0002") == ConnectReason::claim_revoked);
  auto used = claim();
  used.quota_used = used.quota;
  CHECK(verdict(*snapshot_with(used), "sensor-0002") == ConnectReason::claim_used_up);
  auto broken = claim();
  broken.id_pattern = "(";  // stored damaged: no id is allowed
  CHECK(verdict(*snapshot_with(broken), "sensor-0002") == ConnectReason::claim_id_not_allowed);
  // Claims go with their snapshot: a later device change keeps them.
  auto s = snapshot_with(claim())->with_changes({}, {}, {}, 2);
  CHECK(s->find_claim("factory-1") != nullptr);
  CHECK(verdict(*s, "sensor-0002") == ConnectReason::accepted);
}

TEST_CASE("a claim client may use only its own provision topics") {
  CHECK(claim_topic_allowed("s-1", acl::kPublish, "$provision/s-1/csr"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kPublish, "$provision/s-2/csr"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kPublish, "$provision/s-1/accepted"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kPublish, "$provision/s-1/csr/x"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kPublish, "$provision/s-1"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kPublish, "devices/s-1/x"));
  CHECK(claim_topic_allowed("s-1", acl::kSubscribe, "$provision/s-1/+"));
  CHECK(claim_topic_allowed("s-1", acl::kSubscribe, "$provision/s-1/accepted"));
  CHECK(claim_topic_allowed("s-1", acl::kSubscribe, "$provision/s-1/rejected"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kSubscribe, "$provision/s-1/#"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kSubscribe, "$provision/+/accepted"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kSubscribe, "$provision/s-1/csr"));
  CHECK(claim_topic_allowed("s-1", acl::kRead, "$provision/s-1/accepted"));
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kRead, "$provision/s-1/csr"));
  CHECK_FALSE(claim_topic_allowed("", acl::kPublish, "$provision//csr"));
  CHECK(claim_username("factory-1") == "claim:factory-1");
  // A claim client's topics never include a renewal.
  CHECK_FALSE(claim_topic_allowed("s-1", acl::kPublish, "$provision/s-1/renew"));
}

TEST_CASE("a device may renew only itself on its own provision topics") {
  CHECK(renewal_topic_allowed("d-1", acl::kPublish, "$provision/d-1/renew"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kPublish, "$provision/d-2/renew"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kPublish, "$provision/d-1/csr"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kPublish, "$provision/d-1/accepted"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kPublish, "$provision/d-1/renew/x"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kPublish, "$provision/d-10/renew"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kPublish, "$provision/+/renew"));
  CHECK(renewal_topic_allowed("d-1", acl::kSubscribe, "$provision/d-1/+"));
  CHECK(renewal_topic_allowed("d-1", acl::kSubscribe, "$provision/d-1/accepted"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kSubscribe, "$provision/d-1/renew"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kSubscribe, "$provision/#"));
  CHECK(renewal_topic_allowed("d-1", acl::kRead, "$provision/d-1/rejected"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kRead, "$provision/d-1/renew"));
  CHECK_FALSE(renewal_topic_allowed("d-1", acl::kRead, "$provision/d-2/accepted"));
  CHECK_FALSE(renewal_topic_allowed("", acl::kPublish, "$provision//renew"));
}

namespace {

// A device the claim (type "sensor") enrolled `ago` seconds before kNow: its one certificate was
// issued then (not_before backdated as the CA does).
DeviceAccess enrolled_device(std::string id, UnixTime ago, std::string type = "sensor") {
  DeviceAccess device;
  device.id = std::move(id);
  device.type = std::move(type);
  const UnixTime issued = kNow - ago;
  device.certificates.push_back({std::string(64, 'e'), "0e", CertificateStatus::active,
                                 issued - kRecoveryIssueBackdate, issued + 365 * 86400});
  return device;
}

// The claim of claim(), created two hours before kNow.
ClaimAccess older_claim() {
  ClaimAccess c = claim();
  c.not_before = kNow - 7200;
  return c;
}

bool may_recover(const DeviceAccess& device, ClaimAccess c = older_claim(), UnixTime now = kNow) {
  if (c.device_type.empty()) c.device_type = "sensor";
  auto s = Snapshot::build({device}, {}, 1)->with_claims({std::move(c)});
  return claim_recovery_allowed(*s, *s->find_claim("factory-1"), device.id, now);
}

// recently_enrolled on the device's record in a snapshot.
bool recently_enrolled_in_snapshot(const DeviceAccess& device, UnixTime now) {
  const auto s = Snapshot::build({device}, {}, 1);
  const auto* record = s->find_device(device.id);
  REQUIRE(record != nullptr);
  return recently_enrolled(*record, now);
}

}  // namespace

TEST_CASE("a claim may ask again only for a device of its kind enrolled within the last hour") {
  // Enrolled ten minutes ago, of the claim's type and pattern: allowed (the positive control).
  const auto fresh = enrolled_device("sensor-0007", 600);
  CHECK(may_recover(fresh));
  CHECK(recently_enrolled_in_snapshot(fresh, kNow));
  // Past the window; at its edge.
  CHECK_FALSE(may_recover(enrolled_device("sensor-0007", kClaimRecoveryWindow + 1)));
  CHECK(may_recover(enrolled_device("sensor-0007", kClaimRecoveryWindow)));
  // The signer's clock ahead of the broker's: issued "in the future", within the backdate, is
  // enrolled just now (the device connecting right after is remembered as seen); beyond it the
  // certificate is not valid yet here.
  const auto ahead = enrolled_device("sensor-0007", -120);
  CHECK(recently_enrolled_in_snapshot(ahead, kNow));
  CHECK(may_recover(ahead));
  CHECK(
      recently_enrolled_in_snapshot(enrolled_device("sensor-0007", -kRecoveryIssueBackdate), kNow));
  CHECK_FALSE(recently_enrolled_in_snapshot(
      enrolled_device("sensor-0007", -kRecoveryIssueBackdate - 1), kNow));
  CHECK_FALSE(may_recover(enrolled_device("sensor-0007", -kRecoveryIssueBackdate - 1)));
  // Another type (so another claim's), an id outside the pattern.
  CHECK_FALSE(may_recover(enrolled_device("sensor-0007", 600, "meter")));
  CHECK_FALSE(may_recover(enrolled_device("meter-0007", 600)));
  // Renewed (two certificates), its certificate revoked, the device disabled.
  auto renewed = fresh;
  renewed.certificates.push_back(renewed.certificates.front());
  renewed.certificates.back().sha256_fingerprint = std::string(64, 'f');
  CHECK_FALSE(may_recover(renewed));
  auto revoked = fresh;
  revoked.certificates.front().status = CertificateStatus::revoked;
  CHECK_FALSE(may_recover(revoked));
  auto disabled = fresh;
  disabled.status = DeviceStatus::disabled;
  CHECK_FALSE(may_recover(disabled));
  // A device enrolled before the claim existed is none of its enrolments.
  auto later_claim = older_claim();
  later_claim.not_before = kNow - 60;
  CHECK_FALSE(may_recover(fresh, later_claim));
  // The claim revoked or expired: never; used up: still (the lost answer may be the last unit's).
  auto revoked_claim = older_claim();
  revoked_claim.status = ClaimStatus::revoked;
  CHECK_FALSE(may_recover(fresh, revoked_claim));
  auto expired_claim = older_claim();
  expired_claim.not_after = kNow - 1;
  CHECK_FALSE(may_recover(fresh, expired_claim));
  auto used = older_claim();
  used.quota_used = used.quota;
  CHECK(may_recover(fresh, used));
  // The gate itself still says registered (or used up): the plugin decides the recovery.
  auto s = Snapshot::build({fresh}, {}, 1)->with_claims({claim()});
  CHECK(verdict(*s, "sensor-0007") == ConnectReason::claim_id_registered);
}
