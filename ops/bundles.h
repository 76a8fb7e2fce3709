// `bundle create` as an operation, shared by the CLI and POST /v1/bundles: package devices'
// certificates (and the keys the tool made and holds for them) into AES-256 zips, then record the
// bundles, which erases the server's encrypted copies of the packaged keys.
//
// Two steps, so that a front end can check its own outputs against the plan (the CLI's password
// file must not be an archive) before anything is written: plan_bundles reads and checks
// everything and writes nothing; write_bundles writes every archive, calls before_record, and
// records the bundles.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bundle/package.h"
#include "ca/authority.h"
#include "core/error.h"
#include "core/secret.h"
#include "registry/store.h"

namespace onboard::ops {

struct BundleRequest {
  std::vector<std::string> device_ids;  // these devices, or
  std::string batch_id;                 // every device of this batch (not both)
  // Where the archives go. By default `out` is the zip (one bundle). With split, one bundle per
  // device, `out` a directory (created) holding DEVICE.zip each. With name_by_id, `out` is a
  // directory (created) holding BUNDLE-ID.zip each, which no request can choose or collide with.
  std::filesystem::path out;
  bool split = false;
  bool name_by_id = false;
  bool replace = false;  // replace existing archives (their old content is put back on failure)
  bundle::BrokerAddress broker;  // for the connection examples in the bundle
  // The caller's own password (checked for strength) for every bundle; else each bundle gets a
  // generated one.
  const Secret* password = nullptr;
  // Asked only when a device's key is held: the passphrase it is encrypted under, or an error
  // saying how to give one. Without it such a device is refused.
  std::function<Result<const Secret*>()> hold_passphrase;
};

// One device to package, read and checked before anything is written.
struct PackedDevice {
  registry::Device device;
  registry::Certificate certificate;  // its active certificate
  std::optional<registry::HeldKey> held;
};

// One archive to write.
struct PlannedBundle {
  std::string id;                    // "bdl-" + 20 hex digits
  std::filesystem::path path;        // absolute
  std::vector<std::size_t> devices;  // indices into BundlePlan::devices
  Secret password;
  bool password_generated = false;
  std::size_t keys = 0;  // held keys packaged (then erased from the server)
  std::string sha256;    // of the written zip
  std::int64_t size = 0;
  // Internal to write_bundles: the old content of `path` under replace, to put back.
  std::optional<Secret> replaced;
  mode_t replaced_mode = 0600;
  bool written = false;
};

struct BundlePlan {
  std::vector<PackedDevice> devices;
  std::vector<PlannedBundle> bundles;
  std::string batch_id;
  bundle::BrokerAddress broker;
  bool replace = false;
  const Secret* hold_passphrase = nullptr;  // set when a device's key is held
};

// Refuses (nothing written): no device or a device named twice, an unknown device or batch, an
// empty batch, a device that is not active or has no active certificate, a held key without the
// hold passphrase, a weak own password, an existing archive without replace.
Result<BundlePlan> plan_bundles(registry::Store& store, const BundleRequest& request);

struct BundlesWritten {
  std::vector<std::size_t> recorded;  // indices into plan.bundles, recorded and valid
  // A bundle the registry refused: it and the ones after it were removed; the ones recorded
  // before it stay valid (their keys are gone from the server, so their passwords must still be
  // shown).
  std::optional<Error> failure;
};
// Runs once every archive is written, before any is recorded (the CLI writes its password file
// here). An error removes the archives (an old file under replace is put back); nothing is
// recorded and the held keys stay where they were.
using BeforeRecordBundles = std::function<Status(const BundlePlan&)>;

// Writes every archive of `plan`, calls before_record, then records each bundle. An Error means
// nothing was recorded and no archive is left behind.
Result<BundlesWritten> write_bundles(registry::Store& store, const ca::Authority& ca,
                                     BundlePlan& plan, const registry::Actor& actor,
                                     const BeforeRecordBundles& before_record = {});

}  // namespace onboard::ops
