// Delivery: the keys held for packaging, batches of devices registered together, and the bundles
// that deliver them.
//
// Writes follow the Store contract (store.h): each mutating method is one transaction with its
// audit row (and its change row where the broker's picture changes), and no exception escapes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "registry/model.h"

namespace onboard::registry {

class DeliveryStore {
 public:
  virtual ~DeliveryStore() = default;

  // Keys held for packaging. register_device and add_certificate store one when the certificate
  // carries held_key_pem (replacing an older one); add_certificate without one, when it
  // supersedes, and revoke_device delete the device's held key in the same transaction.
  // nullopt: no server copy exists.
  virtual Result<std::optional<HeldKey>> held_key(std::string_view device_id) = 0;

  // Batches: create_batch records an empty batch; register_device_in_batch registers a device
  // like DeviceStore::register_device and adds it to the batch in the same transaction. An
  // unknown batch is Errc::not_found.
  virtual Status create_batch(std::string_view id, std::string_view source, const Actor& actor) = 0;
  virtual Result<Batch> get_batch(std::string_view id) = 0;
  virtual Result<Device> register_device_in_batch(const NewDevice& device,
                                                  const NewCertificate& certificate,
                                                  std::string_view batch_id, std::int64_t line,
                                                  const Actor& actor) = 0;

  // Bundles. record_bundle re-checks under the write lock that every device is active and that
  // each listed certificate is its active one (Errc::conflict otherwise, and nothing is
  // written), records the bundle, and deletes the held keys of the devices whose keys it holds
  // (with_keys and a matching certificate) -- erased from the file, not just unlinked. A claim's
  // bundle (BundleRecord::claim, no devices): the claim must exist (Errc::not_found) and be active
  // (Errc::conflict). Duplicate bundle id: Errc::conflict.
  virtual Result<BundleRecord> record_bundle(const BundleRecord& bundle, const Actor& actor) = 0;
  virtual Result<BundleRecord> get_bundle(std::string_view id) = 0;
  virtual Result<std::vector<BundleRecord>> bundles_of_device(std::string_view device_id) = 0;
  // Marks the bundle downloaded, once: a second claim is Errc::conflict (the REST server answers
  // 410 Gone); an unknown bundle Errc::not_found.
  virtual Result<BundleRecord> claim_bundle_download(std::string_view id,
                                                     std::string_view downloaded_by,
                                                     const Actor& actor) = 0;
};

}  // namespace onboard::registry
