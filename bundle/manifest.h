// manifest.json: what a bundle holds, so the recipient can check it arrived whole.
//
//   {
//     "format": "mosquitto-onboard-bundle",
//     "version": 1,
//     "created_at": "2026-11-28T14:00:00Z",
//     "devices": [ { "id": "sensor-1", "certificate_sha256": "<64 hex>" } ],
//     "files": [ { "name": "sensor-1/cert.pem", "size": 1234, "sha256": "<64 hex>" } ]
//   }
//
// Every file of the bundle is listed except manifest.json itself. The manifest travels inside the
// encrypted archive, so its hashes prove completeness and catch damage, not forgery: the AES
// archive's per-entry HMAC under the password is what authenticates the contents.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bundle/zip.h"
#include "core/error.h"
#include "core/time.h"

namespace onboard::bundle {

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr int kManifestVersion = 1;

struct ManifestDevice {
  std::string id;                  // a valid device id
  std::string certificate_sha256;  // lower-case hex of the certificate DER's SHA-256
};

struct ManifestFile {
  std::string name;
  std::uint64_t size = 0;
  std::string sha256;  // lower-case hex
};

struct Manifest {
  UnixTime created_at = 0;
  std::vector<ManifestDevice> devices;
  std::vector<ManifestFile> files;
};

// Describes `files` (none may be called manifest.json) and `devices`. Errors: invalid_input (a
// bad device id or fingerprint, a duplicate device, no devices, a file named manifest.json),
// crypto.
Result<Manifest> describe_bundle(const std::vector<BundleFile>& files,
                                 const std::vector<ManifestDevice>& devices, UnixTime created_at);

// The manifest as JSON text (pretty-printed, stable key order, ending in a newline).
std::string manifest_to_json(const Manifest& manifest);

// Parses and checks a manifest's shape; anything unexpected is Errc::corrupt.
Result<Manifest> parse_manifest(std::string_view json);

// Builds the manifest and returns it as a BundleFile (0644, mtime `created_at`) ready to add to
// the archive.
Result<BundleFile> make_manifest_file(const std::vector<BundleFile>& files,
                                      const std::vector<ManifestDevice>& devices,
                                      UnixTime created_at);

// Checks a bundle's files against the manifest.json among them: it is present and parses, every
// listed file is present with the listed size and SHA-256, and no file is unlisted. Returns the
// manifest. Errors: corrupt, naming the first file that does not match.
Result<Manifest> verify_manifest(const std::vector<BundleFile>& files);

}  // namespace onboard::bundle
