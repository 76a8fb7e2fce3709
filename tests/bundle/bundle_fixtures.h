// A device credential bundle made by code: a P-256 key (0600) and its certificate (0644) from a
// test CA, the CA certificate, and their manifest.
#pragma once

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "bundle/manifest.h"
#include "bundle/zip.h"
#include "ca/certificate.h"
#include "ca/keys.h"
#include "tests/ca/fixtures.h"

namespace onboard::test {

// An even time, so the 2-second DOS timestamp holds it exactly.
constexpr UnixTime kBundleTime = 1'800'000'000;

struct DeviceBundle {
  std::string device_id;
  std::string fingerprint;
  std::vector<bundle::BundleFile> files;
};

inline DeviceBundle make_device_bundle(const std::string& device_id = "sensor-1") {
  TestCa root = make_root();
  TestLeaf leaf = make_device(root, device_id);
  DeviceBundle b;
  b.device_id = device_id;
  b.fingerprint = sha256_fingerprint(leaf.cert.get());
  auto add = [&](std::string name, Secret content, mode_t mode) {
    bundle::BundleFile file;
    file.name = std::move(name);
    file.content = std::move(content);
    file.mode = mode;
    file.mtime = kBundleTime;
    b.files.push_back(std::move(file));
  };
  add(device_id + "/key.pem", must(ca::private_key_to_pem(leaf.key.get())), 0600);
  add(device_id + "/cert.pem", Secret(ca::certificate_to_pem(leaf.cert.get())), 0644);
  add("ca.pem", Secret(ca::certificate_to_pem(root.cert.get())), 0644);
  b.files.push_back(
      must(bundle::make_manifest_file(b.files, {{device_id, b.fingerprint}}, kBundleTime)));
  return b;
}

}  // namespace onboard::test
