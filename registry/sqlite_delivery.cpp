// DeliveryStore on SQLite: held keys, batches and bundles.
#include "registry/sqlite_store_internal.h"

#include "core/identity.h"

namespace onboard::registry::sqlite {

void SqliteStore::hold_key(std::string_view device_id, const NewCertificate& certificate,
                           UnixTime now) {
  if (certificate.held_key_pem.empty()) return;
  prepare(db_,
          "INSERT OR REPLACE INTO held_keys (device_id, certificate_sha256, encrypted_pem, "
          "created_at) VALUES (?1, ?2, ?3, ?4)",
          device_id, certificate.sha256_fingerprint, certificate.held_key_pem, now)
      .exec();
}

// The connection runs with secure_delete on (see open_registry_file), so the row's bytes are
// overwritten with zeros in the page, not merely unlinked.
void SqliteStore::erase_held_key(std::string_view device_id) {
  prepare(db_, "DELETE FROM held_keys WHERE device_id = ?1", device_id).exec();
}

Result<std::optional<HeldKey>> SqliteStore::held_key(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("read held key", [&]() -> Result<std::optional<HeldKey>> {
    if (!subject_exists(SubjectKind::device, device_id)) {
      return make_error(Errc::not_found, "device " + std::string(device_id) + " does not exist");
    }
    auto query = prepare(db_,
                         "SELECT device_id, certificate_sha256, encrypted_pem, created_at "
                         "FROM held_keys WHERE device_id = ?1",
                         device_id);
    if (!query.executeStep()) return std::optional<HeldKey>();
    return std::optional<HeldKey>(
        HeldKey{query.getColumn(0).getString(), query.getColumn(1).getString(),
                query.getColumn(2).getString(), query.getColumn(3).getInt64()});
  });
}

Status SqliteStore::create_batch(std::string_view id, std::string_view source, const Actor& actor) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "batch id: " + *problem);
  }
  return write("create batch", actor, [&]() -> Status {
    auto existing = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", id);
    if (existing.executeStep()) {
      return make_error(Errc::conflict, "batch " + std::string(id) + " already exists");
    }
    prepare(db_, "INSERT INTO batches (id, source, created_at) VALUES (?1, ?2, ?3)", id, source,
            actor.now)
        .exec();
    record_audit(actor, "batch.create", id, {{"source", source}});
    return ok_status();
  });
}

Result<Batch> SqliteStore::get_batch(std::string_view id) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "batch id: " + *problem);
  }
  return read("read batch", [&]() -> Result<Batch> {
    auto query = prepare(db_, "SELECT id, source, created_at FROM batches WHERE id = ?1", id);
    if (!query.executeStep()) {
      return make_error(Errc::not_found, "batch " + std::string(id) + " does not exist");
    }
    Batch batch{query.getColumn(0).getString(),
                query.getColumn(1).getString(),
                query.getColumn(2).getInt64(),
                {}};
    auto members = prepare(
        db_, "SELECT device_id, line FROM batch_devices WHERE batch_id = ?1 ORDER BY line", id);
    while (members.executeStep()) {
      batch.devices.push_back({members.getColumn(0).getString(), members.getColumn(1).getInt64()});
    }
    return batch;
  });
}

Result<Device> SqliteStore::register_device_in_batch(const NewDevice& input,
                                                     const NewCertificate& certificate,
                                                     std::string_view batch_id, std::int64_t line,
                                                     const Actor& actor) {
  return insert_device(input, certificate, batch_id, line, actor);
}

std::optional<BundleRecord> SqliteStore::load_bundle(std::string_view id) {
  auto query = prepare(db_,
                       "SELECT id, batch_id, path, sha256, size, with_keys, created_at, "
                       "downloaded_at, downloaded_by FROM bundles WHERE id = ?1",
                       id);
  if (!query.executeStep()) return std::nullopt;
  BundleRecord b;
  b.id = query.getColumn(0).getString();
  b.batch_id = text_or_null(query.getColumn(1)).value_or("");
  b.path = query.getColumn(2).getString();
  b.sha256 = query.getColumn(3).getString();
  b.size = query.getColumn(4).getInt64();
  b.with_keys = query.getColumn(5).getInt() != 0;
  b.created_at = query.getColumn(6).getInt64();
  if (!query.getColumn(7).isNull()) b.downloaded_at = query.getColumn(7).getInt64();
  b.downloaded_by = text_or_null(query.getColumn(8)).value_or("");
  auto devices = prepare(db_,
                         "SELECT device_id, certificate_sha256 FROM bundle_devices "
                         "WHERE bundle_id = ?1 ORDER BY device_id",
                         id);
  while (devices.executeStep()) {
    b.devices.push_back({devices.getColumn(0).getString(), devices.getColumn(1).getString()});
  }
  return b;
}

Result<BundleRecord> SqliteStore::record_bundle(const BundleRecord& input, const Actor& actor) {
  auto bad = [](std::string why) { return make_error(Errc::invalid_input, std::move(why)); };
  if (auto problem = device_id_problem(input.id)) return bad("bundle id: " + *problem);
  if (input.devices.empty()) return bad("a bundle holds at least one device");
  if (input.path.empty()) return bad("a bundle needs the path it was written to");
  if (!normalize_fingerprint(input.sha256)) return bad("a bundle's SHA-256 must be 64 hex digits");
  for (const auto& d : input.devices) ONBOARD_CHECK(check_device_id(d.device_id));

  auto recorded = write("record bundle", actor, [&]() -> Result<BundleRecord> {
    if (load_bundle(input.id)) {
      return make_error(Errc::conflict, "bundle " + input.id + " already exists");
    }
    if (!input.batch_id.empty()) {
      auto batch = prepare(db_, "SELECT 1 FROM batches WHERE id = ?1", input.batch_id);
      if (!batch.executeStep()) {
        return make_error(Errc::not_found, "batch " + input.batch_id + " does not exist");
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
      if (!certificate.executeStep()) {
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
    record_audit(actor, "bundle.create", input.id,
                 {{"devices", devices},
                  {"sha256", *normalize_fingerprint(input.sha256)},
                  {"batch", input.batch_id},
                  {"keys_wiped", wiped}});
    return *load_bundle(input.id);
  });
  if (recorded.ok() && recorded->with_keys) {
    // The erased rows' old page images still sit in the WAL until a checkpoint copies the zeroed
    // pages back and the log is truncated. Best effort: a busy reader only delays it (the keys
    // there are encrypted anyway).
    try {
      db_.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (...) {
    }
  }
  return recorded;
}

Result<BundleRecord> SqliteStore::get_bundle(std::string_view id) {
  if (auto problem = device_id_problem(id)) {
    return make_error(Errc::invalid_input, "bundle id: " + *problem);
  }
  return read("read bundle", [&]() -> Result<BundleRecord> {
    if (auto bundle = load_bundle(id)) return *bundle;
    return make_error(Errc::not_found, "bundle " + std::string(id) + " does not exist");
  });
}

Result<std::vector<BundleRecord>> SqliteStore::bundles_of_device(std::string_view device_id) {
  ONBOARD_CHECK(check_device_id(device_id));
  return read("list bundles", [&]() -> Result<std::vector<BundleRecord>> {
    auto query = prepare(db_,
                         "SELECT b.id FROM bundle_devices d JOIN bundles b ON b.id = d.bundle_id "
                         "WHERE d.device_id = ?1 ORDER BY b.created_at, b.id",
                         device_id);
    std::vector<std::string> ids;
    while (query.executeStep()) ids.push_back(query.getColumn(0).getString());
    std::vector<BundleRecord> bundles;
    for (const auto& id : ids) bundles.push_back(*load_bundle(id));
    return bundles;
  });
}

Result<BundleRecord> SqliteStore::claim_bundle_download(std::string_view id,
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

}  // namespace onboard::registry::sqlite
