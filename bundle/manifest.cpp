#include "bundle/manifest.h"

#include <openssl/evp.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "core/digest.h"
#include "core/identity.h"
#include "core/ossl.h"
#include "core/time.h"

namespace onboard::bundle {
namespace {

using nlohmann::json;
constexpr std::string_view kFormat = "mosquitto-onboard-bundle";

bool is_sha256_hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Error corrupt(const std::string& what) { return make_error(Errc::corrupt, "manifest: " + what); }

}  // namespace

Result<Manifest> describe_bundle(const std::vector<BundleFile>& files,
                                 const std::vector<ManifestDevice>& devices, UnixTime created_at) {
  if (devices.empty())
    return make_error(Errc::invalid_input, "a bundle is for at least one device");
  if (created_at < 0)
    return make_error(Errc::invalid_input, "a bundle's creation time is before 1970");
  Manifest manifest;
  manifest.created_at = created_at;
  std::set<std::string_view> ids;
  for (const auto& device : devices) {
    if (auto problem = device_id_problem(device.id)) {
      return make_error(Errc::invalid_input, *problem);
    }
    if (!ids.insert(device.id).second) {
      return make_error(Errc::invalid_input, "device " + device.id + " is listed twice");
    }
    if (!is_sha256_hex(device.certificate_sha256)) {
      return make_error(Errc::invalid_input, "the certificate fingerprint of " + device.id +
                                                 " is not 64 lower-case hex digits");
    }
    manifest.devices.push_back(device);
  }
  for (const auto& file : files) {
    if (file.name == kManifestName) {
      return make_error(Errc::invalid_input, "a bundle file may not be named manifest.json");
    }
    ONBOARD_TRY(std::string hash, sha256_hex(file.content.view()));
    manifest.files.push_back({file.name, file.content.size(), std::move(hash)});
  }
  return manifest;
}

std::string manifest_to_json(const Manifest& manifest) {
  json devices = json::array();
  for (const auto& d : manifest.devices) {
    devices.push_back({{"id", d.id}, {"certificate_sha256", d.certificate_sha256}});
  }
  json files = json::array();
  for (const auto& f : manifest.files) {
    files.push_back({{"name", f.name}, {"size", f.size}, {"sha256", f.sha256}});
  }
  // nlohmann::json keeps keys sorted, so the text is stable for the same content.
  const json doc = {{"format", std::string(kFormat)},
                    {"version", kManifestVersion},
                    {"created_at", iso_time(manifest.created_at)},
                    {"devices", devices},
                    {"files", files}};
  return doc.dump(2) + "\n";
}

Result<Manifest> parse_manifest(std::string_view text) {
  const json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return corrupt("not a JSON object");
  if (!doc.contains("format") || !doc["format"].is_string() ||
      doc["format"].get<std::string>() != kFormat) {
    return corrupt("unknown format");
  }
  if (!doc.contains("version") || !doc["version"].is_number_integer() ||
      doc["version"].get<long long>() != kManifestVersion) {
    return corrupt("unknown version");
  }
  if (!doc.contains("created_at") || !doc["created_at"].is_string()) {
    return corrupt("created_at is missing");
  }
  const auto created = parse_iso_time(doc["created_at"].get<std::string>());
  if (!created) return corrupt("created_at is not a UTC time like 2026-01-31T12:00:00Z");
  Manifest manifest;
  manifest.created_at = *created;

  if (!doc.contains("devices") || !doc["devices"].is_array()) return corrupt("devices is missing");
  for (const auto& d : doc["devices"]) {
    if (!d.is_object() || !d.contains("id") || !d["id"].is_string() ||
        !d.contains("certificate_sha256") || !d["certificate_sha256"].is_string()) {
      return corrupt("a device entry lacks id or certificate_sha256");
    }
    ManifestDevice device{d["id"].get<std::string>(), d["certificate_sha256"].get<std::string>()};
    if (device_id_problem(device.id) || !is_sha256_hex(device.certificate_sha256)) {
      return corrupt("a device entry has a bad id or fingerprint");
    }
    manifest.devices.push_back(std::move(device));
  }
  if (!doc.contains("files") || !doc["files"].is_array()) return corrupt("files is missing");
  std::set<std::string> names;
  for (const auto& f : doc["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("size") ||
        !f["size"].is_number_unsigned() || !f.contains("sha256") || !f["sha256"].is_string()) {
      return corrupt("a file entry lacks name, size or sha256");
    }
    ManifestFile file{f["name"].get<std::string>(), f["size"].get<std::uint64_t>(),
                      f["sha256"].get<std::string>()};
    if (entry_name_problem(file.name) || file.name == kManifestName ||
        !is_sha256_hex(file.sha256)) {
      return corrupt("a file entry has a bad name or hash");
    }
    if (!names.insert(file.name).second) return corrupt(file.name + " is listed twice");
    manifest.files.push_back(std::move(file));
  }
  return manifest;
}

Result<BundleFile> make_manifest_file(const std::vector<BundleFile>& files,
                                      const std::vector<ManifestDevice>& devices,
                                      UnixTime created_at) {
  ONBOARD_TRY(Manifest manifest, describe_bundle(files, devices, created_at));
  BundleFile file;
  file.name = kManifestName;
  file.content = Secret(manifest_to_json(manifest));
  file.mode = 0644;
  file.mtime = created_at;
  return file;
}

Result<Manifest> verify_manifest(const std::vector<BundleFile>& files) {
  const BundleFile* manifest_file = nullptr;
  for (const auto& file : files) {
    if (file.name == kManifestName) manifest_file = &file;
  }
  if (manifest_file == nullptr) return make_error(Errc::corrupt, "the bundle has no manifest.json");
  ONBOARD_TRY(Manifest manifest, parse_manifest(manifest_file->content.view()));

  std::set<std::string_view> listed;
  for (const auto& entry : manifest.files) {
    listed.insert(entry.name);
    const BundleFile* found = nullptr;
    for (const auto& file : files) {
      if (file.name == entry.name) found = &file;
    }
    if (found == nullptr) return corrupt(entry.name + " is listed but missing");
    if (found->content.size() != entry.size) return corrupt(entry.name + " has the wrong size");
    ONBOARD_TRY(std::string hash, sha256_hex(found->content.view()));
    if (hash != entry.sha256) return corrupt(entry.name + " does not match its SHA-256");
  }
  for (const auto& file : files) {
    if (file.name != kManifestName && listed.count(file.name) == 0) {
      return corrupt(file.name + " is in the bundle but not listed");
    }
  }
  return manifest;
}

}  // namespace onboard::bundle
