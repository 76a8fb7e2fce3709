#include "ops/claims.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <system_error>

#include "bundle/password.h"
#include "bundle/zip.h"
#include "core/digest.h"
#include "core/files.h"
#include "core/identity.h"
#include "core/time.h"
#include "ops/operations.h"
#include "registry/id_pattern.h"

namespace onboard::ops {
namespace {

Status check_request(const ClaimRequest& r) {
  auto bad = [](std::string why) { return make_error(Errc::invalid_input, std::move(why)); };
  if (auto problem = registry::claim_name_problem(r.claim.name)) return bad(*problem);
  if (r.claim.quota < 1 || r.claim.quota > registry::kMaxClaimQuota)
    return bad("quota must be 1 to " + std::to_string(registry::kMaxClaimQuota));
  if (auto problem = registry::id_pattern_problem(r.claim.id_pattern)) return bad(*problem);
  if (!r.claim.device_type.empty()) {
    if (auto problem = registry::group_name_problem(r.claim.device_type)) {
      return bad("type: " + *problem);
    }
  }
  if (r.lifetime < 60 || r.lifetime > kMaxClaimLifetime)
    return bad("a claim lives from 1 minute to 365 days");
  if (r.password != nullptr) {
    if (auto problem = bundle::password_problem(*r.password))
      return bad("the zip password is too weak: " + *problem);
  }
  return ok_status();
}

// What a device (or whoever flashes it) needs to know besides the certificate, in the zip.
std::string claim_zip_json(const registry::Claim& claim, const ClaimRequest& r) {
  nlohmann::json j = {
      {"claim", claim.name},
      {"expires_at", iso_time(claim.expires_at)},
      {"quota", claim.quota},
      {"client_id_pattern", claim.id_pattern},
      {"device_type", claim.device_type},
      {"broker", {{"host", r.broker.host}, {"port", r.broker.port}}},
      {"topics",
       {{"request", "$provision/<client id>/csr"},
        {"accepted", "$provision/<client id>/accepted"},
        {"rejected", "$provision/<client id>/rejected"}}},
      {"files", {{"certificate", "claim.crt"}, {"key", "claim.key"}, {"ca_chain", "ca-chain.pem"}}},
      {"protocol", "docs/provisioning.md"}};
  return j.dump(2) + "\n";
}

}  // namespace

Result<ClaimCreated> create_claim(registry::Store& store, const ca::Authority& ca,
                                  const ClaimRequest& input, const registry::Actor& actor,
                                  const BeforeRecordClaim& before_record) {
  ClaimRequest r = input;
  if (r.claim.id_pattern.empty()) r.claim.id_pattern = std::string(registry::kAnyIdPattern);
  ONBOARD_CHECK(check_request(r));
  if (auto existing = store.get_claim(r.claim.name); existing.ok()) {
    return make_error(Errc::conflict, "claim " + r.claim.name + " already exists");
  } else if (existing.error().code != Errc::not_found) {
    return std::move(existing).error();
  }
  ClaimCreated out;
  if (r.as_bundle) {
    ONBOARD_TRY(out.bundle_id, random_id("bdl-"));
    std::error_code ec;
    std::filesystem::create_directories(r.out, ec);
    if (ec || !std::filesystem::is_directory(r.out)) {
      return make_error(Errc::io, "cannot use " + r.out.string() + " as the output directory" +
                                      (ec ? ": " + ec.message() : std::string()));
    }
    r.out /= out.bundle_id + ".zip";
  }
  out.zip = std::filesystem::absolute(r.out).lexically_normal();
  std::error_code ec;
  if (!r.replace && std::filesystem::exists(out.zip, ec)) {
    return make_error(Errc::conflict,
                      out.zip.string() + " exists already; pass --force to replace it");
  }
  if (r.password != nullptr) {
    out.password = Secret(r.password->view());
  } else {
    ONBOARD_TRY(out.password, bundle::generate_password());
    out.password_generated = true;
  }

  ONBOARD_TRY(auto key, ca::generate_key(r.key_alg));
  ca::CertificateRequest cert_request;
  cert_request.profile = ca::Profile::device;  // a TLS client certificate, CN = the claim's name
  cert_request.common_name = r.claim.name;
  cert_request.organization = "mosquitto-onboard claim";
  cert_request.public_key = key.get();
  cert_request.not_before = actor.now - 300;
  cert_request.not_after = actor.now + r.lifetime;
  ONBOARD_TRY(auto issued, ca.issue(std::move(cert_request)));
  ONBOARD_TRY(Secret key_pem, ca::private_key_to_pem(key.get()));
  out.serial_hex = issued.info.serial_hex;

  registry::Claim preview{r.claim.name,
                          issued.info.sha256_fingerprint,
                          r.claim.quota,
                          0,
                          issued.info.not_after,
                          r.claim.id_pattern,
                          r.claim.device_type,
                          registry::ClaimStatus::active,
                          actor.now,
                          actor.name,
                          std::nullopt};
  std::vector<bundle::BundleFile> files;
  files.push_back({"ca-chain.pem", Secret(ca.chain_pem()), 0644, actor.now});
  files.push_back({"claim.crt", Secret(issued.pem), 0644, actor.now});
  files.push_back({"claim.key", std::move(key_pem), 0600, actor.now});
  files.push_back({"claim.json", Secret(claim_zip_json(preview, r)), 0644, actor.now});
  ONBOARD_CHECK(bundle::write_encrypted_zip(out.zip, files, out.password,
                                            r.replace ? Overwrite::replace : Overwrite::refuse));
  auto remove_zip = [&] {
    std::error_code ignored;
    std::filesystem::remove(out.zip, ignored);
  };
  auto bytes = read_file(out.zip, std::uint64_t{1} << 30);
  if (!bytes.ok()) {
    remove_zip();
    return std::move(bytes).error();
  }
  auto digest = sha256_hex(*bytes);
  if (!digest.ok()) {
    remove_zip();
    return std::move(digest).error();
  }
  out.zip_sha256 = std::move(digest).value();
  out.zip_size = static_cast<std::int64_t>(bytes->size());
  out.claim = preview;
  if (before_record) {
    if (auto status = before_record(out); !status.ok()) {
      remove_zip();
      return std::move(status).error();
    }
  }
  auto recorded =
      store.create_claim(r.claim, new_certificate(issued.info, std::move(issued.pem)), actor);
  if (!recorded.ok()) {
    remove_zip();
    return std::move(recorded).error();
  }
  out.claim = std::move(recorded).value();
  if (!r.as_bundle) return out;
  registry::BundleRecord bundle;
  bundle.id = out.bundle_id;
  bundle.path = out.zip.string();
  bundle.sha256 = out.zip_sha256;
  bundle.size = out.zip_size;
  bundle.with_keys = true;  // the claim's key
  bundle.claim = out.claim.name;
  if (auto bundled = store.record_bundle(bundle, actor); !bundled.ok()) {
    remove_zip();
    std::string what = "claim " + out.claim.name + " was recorded but its bundle could not be (" +
                       bundled.error().message + "); ";
    auto revoked =
        store.revoke_claim(out.claim.name, RevocationReason::cessation_of_operation, actor);
    what += revoked.ok() ? "it was revoked, create another"
                         : "revoking it failed too (" + revoked.error().message + "): revoke it";
    // Not a busy registry to retry: the name is taken now. A claim revoked meanwhile stays a
    // conflict; anything else is the server's failure.
    return make_error(bundled.error().code == Errc::conflict ? Errc::conflict : Errc::internal,
                      std::move(what));
  }
  return out;
}

Result<ClaimPage> list_claims(registry::Store& store, std::size_t limit, std::string_view after) {
  if (limit < 1) return make_error(Errc::invalid_input, "a page lists at least one claim");
  ONBOARD_TRY(auto all, store.list_claims());  // claims are few
  // Byte order here, whatever collation the registry's database sorts by: `after` must match it.
  std::sort(all.begin(), all.end(),
            [](const registry::Claim& a, const registry::Claim& b) { return a.name < b.name; });
  ClaimPage page;
  for (auto& claim : all) {
    if (!after.empty() && claim.name <= after) continue;
    if (page.claims.size() == limit) {
      page.next_after = page.claims.back().name;
      break;
    }
    page.claims.push_back(std::move(claim));
  }
  return page;
}

Result<ClaimRevoked> revoke_claim(registry::Store& store, const ca::Authority& ca,
                                  const std::filesystem::path& crl_path, std::string_view name,
                                  RevocationReason reason, const registry::Actor& actor) {
  ClaimRevoked revoked;
  ONBOARD_TRY(revoked.outcome, store.revoke_claim(name, reason, actor));
  if (!revoked.outcome.already_revoked) {
    ONBOARD_TRY(revoked.crl_number,
                rewrite_crl(store, ca, crl_path, "revoked claim " + std::string(name), actor));
  }
  return revoked;
}

}  // namespace onboard::ops
