// DeliveryStore: held keys, batches and bundles.
#include "registry/store_internal.h"

#include "core/identity.h"

namespace onboard::registry::sql {

void SqlStore::hold_key(std::string_view device_id, const NewCertificate& certificate,
                        UnixTime now) {
  if (certificate.held_key_pem.empty()) return;
  prepare(db_,
          "INSERT INTO held_keys (device_id, certificate_sha256, encrypted_pem, created_at) "
          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device_id) DO UPDATE SET "
          "certificate_sha256 = excluded.certificate_sha256, "
          "encrypted_pem = excluded.encrypted_pem, created_at = excluded.created_at",
          device_id, certificate.sha256_fingerprint, certificate.held_key_pem, now)
      .exec();
}

// The connection runs with secure_delete on (see open_registry_file), so the row's bytes are
// overwritten with zeros in the page, not merely unlinked.
void SqlStore::erase_held_key(std::string_view device_id) {
  prepare(db_, "DELETE FROM held_keys WHERE device_id = ?1", device_id).exec();
}

Result<std::optional<HeldKey>> SqlStore::held_key(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("read held key", [&]() -> Result<std::optional<HeldKey>> {
    if (!subject_exists(SubjectKind::device, device_id)) {
      return make_error(Errc::not_found, "device " + std::string(device_id) + " does not exist");
    }
    auto query = prepare(db_,
                         "SELECT device_id, certificate_sha256, encrypted_pem, created_at "
                         "FROM held_keys WHERE device_id = ?1",
                         device_id);
    if (!query.step()) return std::optional<HeldKey>();
    return std::optional<HeldKey>(
        HeldKey{query.text(0), query.text(1), query.text(2), query.int64(3)});
  });
}

Status SqlStore::create_batch(std::string_view id, std::string_view source, const Actor& actor) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "batch id: " + *problem);
  }
  return write("create batch", actor, [&]() -> Status {
    auto existing = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", id);
    if (existing.step()) {
      return make_error(Errc::conflict, "batch " + std::string(id) + " already exists");
    }
    prepare(db_, "INSERT INTO batches (id, source, created_at) VALUES (?1, ?2, ?3)", id, source,
            actor.now)
        .exec();
    record_audit(actor, "batch.create", id, {{"source", source}});
    return ok_status();
  });
}

Result<Batch> SqlStore::get_batch(std::string_view id) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "batch id: " + *problem);
  }
  return read("read batch", [&]() -> Result<Batch> {
    auto query = prepare(db_, "SELECT id, source, created_at FROM batches WHERE id = ?1", id);
    if (!query.step()) {
      return make_error(Errc::not_found, "batch " + std::string(id) + " does not exist");
    }
    Batch batch{query.text(0), query.text(1), query.int64(2), {}};
    auto members = prepare(
        db_, "SELECT device_id, line FROM batch_devices WHERE batch_id = ?1 ORDER BY line", id);
    while (members.step()) {
      batch.devices.push_back({members.text(0), members.int64(1)});
    }
    return batch;
  });
}

Result<Device> SqlStore::register_device_in_batch(const NewDevice& input,
                                                  const NewCertificate& certificate,
                                                  std::string_view batch_id, std::int64_t line,
                                                  const Actor& actor) {
  return insert_device(input, certificate, batch_id, line, actor);
}

std::optional<BundleRecord> SqlStore::load_bundle(std::string_view id) {
  auto query = prepare(db_,
                       "SELECT id, batch_id, path, sha256, size, with_keys, created_at, "
                       "downloaded_at, downloaded_by FROM bundles WHERE id = ?1",
                       id);
  if (!query.step()) return std::nullopt;
  BundleRecord b;
  b.id = query.text(0);
  b.batch_id = query.text_or_null(1).value_or("");
  b.path = query.text(2);
  b.sha256 = query.text(3);
  b.size = query.int64(4);
  b.with_keys = query.int32(5) != 0;
  b.created_at = query.int64(6);
  if (!query.is_null(7)) b.downloaded_at = query.int64(7);
  b.downloaded_by = query.text_or_null(8).value_or("");
  auto devices = prepare(db_,
                         "SELECT device_id, certificate_sha256 FROM bundle_devices "
                         "WHERE bundle_id = ?1 ORDER BY device_id",
                         id);
  while (devices.step()) {
    b.devices.push_back({devices.text(0), devices.text(1)});
  }
  return b;
}

Result<BundleRecord> SqlStore::record_bundle(const BundleRecord& input, const Actor& actor) {
  auto bad = [](std::string why) { return make_error(Errc::invalid_input, std::move(why)); };
  if (auto problem = device_id_problem(input.id)) return bad("bundle id: " + *problem);
  if (input.claim.empty() && input.devices.empty())
    return bad("a bundle holds at least one device");
  if (!input.claim.empty()) {
    if (!input.devices.empty()) return bad("a claim's bundle holds no device");
    if (auto problem = claim_name_problem(input.claim)) return bad(*problem);
  }
  if (input.path.empty()) return bad("a bundle needs the path it was written to");
  if (!normalize_fingerprint(input.sha256)) return bad("a bundle's SHA-256 must be 64 hex digits");
  for (const auto& d : input.devices) ONBOARD_CHECK(check_device_id(d.device_id));

  auto recorded = write("record bundle", actor, [&]() -> Result<BundleRecord> {
    if (load_bundle(input.id)) {
      return make_error(Errc::conflict, "bundle " + input.id + " already exists");
    }
    if (!input.batch_id.empty()) {
      auto batch = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", input.batch_id);
      if (!batch.step()) {
        return make_error(Errc::not_found, "batch " + input.batch_id + " does not exist");
      }
    }
    if (!input.claim.empty()) {
      auto claim = load_claim(input.claim);
      if (!claim) return make_error(Errc::not_found, "claim " + input.claim + " does not exist");
      if (claim->status != ClaimStatus::active) {
        return make_error(Errc::conflict,
                          "claim " + input.claim + " is revoked and cannot be bundled");
      }
    }
    // Re-checked under the write lock: a device revoked or disabled since the caller read it
    // must not be delivered.
    for (const auto& d : input.devices) {
      auto device = load_device(d.device_id);
      if (!device) return make_error(Errc::not_found, "device " + d.device_id + " does not exist");
      if (device->status != DeviceStatus::active) {
        return make_error(Errc::conflict, "device " + d.device_id + " is " +
                                              std::string(to_string(device->status)) +
                                              " and cannot be bundled");
      }
      auto certificate = prepare(db_,
                                 "SELECT 1 FROM certificates WHERE sha256_fingerprint = ?1 AND "
                                 "device_id = ?2 AND status = 'active'",
                                 d.certificate_sha256, d.device_id);
      if (!certificate.step()) {
        return make_error(Errc::conflict, "the certificate bundled for " + d.device_id +
                                              " is no longer its active certificate");
      }
    }
    prepare(db_,
            "INSERT INTO bundles (id, batch_id, path, sha256, size, with_keys, created_at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            input.id, input.batch_id.empty() ? std::optional<std::string>() : input.batch_id,
            input.path, *normalize_fingerprint(input.sha256), input.size, input.with_keys ? 1 : 0,
            actor.now)
        .exec();
    nlohmann::json wiped = nlohmann::json::array();
    for (const auto& d : input.devices) {
      prepare(db_,
              "INSERT INTO bundle_devices (bundle_id, device_id, certificate_sha256) "
              "VALUES (?1, ?2, ?3)",
              input.id, d.device_id, d.certificate_sha256)
          .exec();
      if (!input.with_keys) continue;
      auto erased = prepare(db_,
                            "DELETE FROM held_keys WHERE device_id = ?1 AND "
                            "certificate_sha256 = ?2",
                            d.device_id, d.certificate_sha256);
      if (erased.exec() > 0) wiped.push_back(d.device_id);
    }
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& d : input.devices) devices.push_back(d.device_id);
    nlohmann::json details{{"devices", devices},
                           {"sha256", *normalize_fingerprint(input.sha256)},
                           {"batch", input.batch_id},
                           {"keys_wiped", wiped}};
    if (!input.claim.empty()) details["claim"] = input.claim;
    record_audit(actor, "bundle.create", input.id, details);
    return *load_bundle(input.id);
  });
  // The erased keys' old bytes may outlive the commit in the database's own files (SQLite's WAL);
  // the backend clears them as far as it can (the keys there are encrypted anyway).
  if (recorded.ok() && recorded->with_keys) db_.scrub();
  return recorded;
}

Result<BundleRecord> SqlStore::get_bundle(std::string_view id) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "bundle id: " + *problem);
  }
  return read("read bundle", [&]() -> Result<BundleRecord> {
    if (auto bundle = load_bundle(id)) return *bundle;
    return make_error(Errc::not_found, "bundle " + std::string(id) + " does not exist");
  });
}

Result<std::vector<BundleRecord>> SqlStore::bundles_of_device(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("list bundles", [&]() -> Result<std::vector<BundleRecord>> {
    auto query = prepare(db_,
                         "SELECT b.id FROM bundle_devices d JOIN bundles b ON b.id = d.bundle_id "
                         "WHERE d.device_id = ?1 ORDER BY b.created_at, b.id",
                         device_id);
    std::vector<std::string> ids;
    while (query.step()) ids.push_back(query.text(0));
    std::vector<BundleRecord> bundles;
    for (const auto& id : ids) bundles.push_back(*load_bundle(id));
    return bundles;
  });
}

Result<BundleRecord> SqlStore::claim_bundle_download(std::string_view id,
                                                     std::string_view downloaded_by,
                                                     const Actor& actor) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "bundle id: " + *problem);
  }
  return write("claim bundle download", actor, [&]() -> Result<BundleRecord> {
    // Conditional on downloaded_at IS NULL: of two concurrent claims exactly one changes a row.
    auto claim = prepare(db_,
                         "UPDATE bundles SET downloaded_at = ?1, downloaded_by = ?2 "
                         "WHERE id = ?3 AND downloaded_at IS NULL",
                         actor.now, downloaded_by, id);
    if (claim.exec() == 0) {
      if (!load_bundle(id)) {
        return make_error(Errc::not_found, "bundle " + std::string(id) + " does not exist");
      }
      return make_error(Errc::conflict,
                        "bundle " + std::string(id) + " has been downloaded already");
    }
    record_audit(actor, "bundle.download", id, {{"by", downloaded_by}});
    return *load_bundle(id);
  });
}

}  // namespace onboard::registry::sql
