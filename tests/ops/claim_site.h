// What the enrolment tests start from: a real SQLite registry, a real CA (P-256 root) and claims
// made by the real `claim create` operation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ca/authority.h"
#include "core/time.h"
#include "ops/claims.h"
#include "registry/sqlite_store.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

namespace onboard::test {

struct ClaimSite {
  TempDir dir;
  std::unique_ptr<registry::Store> store;
  std::unique_ptr<ca::Authority> ca;
  registry::Actor actor{"provision:broker", unix_now()};

  explicit ClaimSite(const std::string& root_name) {
    store = must(registry::open_sqlite_store(dir / "registry.db", registry::OpenMode::read_write));
    ca::CaInitOptions options;
    options.common_name = root_name;
    options.root_key_alg = ca::KeyAlg::p256;
    ca = std::make_unique<ca::Authority>(
        must(ca::Authority::create(dir / "data", options, unix_now())));
  }
  // A claim valid for an hour.
  void add_claim(const std::string& name, std::int64_t quota, const std::string& pattern = "",
                 const std::string& type = "") {
    ops::ClaimRequest request;
    request.claim = registry::NewClaim{name, quota, pattern, type};
    request.lifetime = 3600;
    request.out = dir / (name + ".zip");
    must(ops::create_claim(*store, *ca, request, actor));
  }
  std::int64_t quota_used(const std::string& claim) {
    return must(store->get_claim(claim)).quota_used;
  }
  std::int64_t devices() { return must(store->count_devices({})); }
};

}  // namespace onboard::test
