#include "bundle/manifest.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/files.h"
#include "tests/bundle/bundle_fixtures.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::bundle;
using onboard::test::must;
using onboard::test::TempDir;

namespace {

const std::string kFingerprint(64, 'a');

BundleFile file(std::string name, std::string content) {
  BundleFile f;
  f.name = std::move(name);
  f.content = Secret(content);
  return f;
}

BundleFile* find(std::vector<BundleFile>& files, const std::string& name) {
  for (auto& f : files) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("the SHA-256 of known inputs is the published value") {
  CHECK(must(sha256_hex("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(must(sha256_hex("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("a manifest lists every file with size and SHA-256, the devices and the time") {
  const auto b = test::make_device_bundle();
  const auto* manifest_file = &b.files.back();
  REQUIRE(manifest_file->name == kManifestName);
  CHECK(manifest_file->mode == 0644);
  const auto doc = nlohmann::json::parse(manifest_file->content.view());
  CHECK(doc["format"] == "mosquitto-onboard-bundle");
  CHECK(doc["version"] == 1);
  CHECK(doc["created_at"] == "2027-01-15T08:00:00Z");
  REQUIRE(doc["devices"].size() == 1);
  CHECK(doc["devices"][0]["id"] == "sensor-1");
  CHECK(doc["devices"][0]["certificate_sha256"] == b.fingerprint);
  REQUIRE(doc["files"].size() == b.files.size() - 1);
  for (std::size_t i = 0; i + 1 < b.files.size(); ++i) {
    CHECK(doc["files"][i]["name"] == b.files[i].name);
    CHECK(doc["files"][i]["size"] == b.files[i].content.size());
    CHECK(doc["files"][i]["sha256"] == must(sha256_hex(b.files[i].content.view())));
  }
}

TEST_CASE("a manifest round-trips through its JSON text") {
  std::vector<BundleFile> files;
  files.push_back(file("a", "1"));
  files.push_back(file("dir/b", "22"));
  auto manifest = must(describe_bundle(files, {{"dev-1", kFingerprint}, {"dev-2", kFingerprint}},
                                       test::kBundleTime));
  auto parsed = must(parse_manifest(manifest_to_json(manifest)));
  CHECK(parsed.created_at == test::kBundleTime);
  REQUIRE(parsed.devices.size() == 2);
  CHECK(parsed.devices[1].id == "dev-2");
  REQUIRE(parsed.files.size() == 2);
  CHECK(parsed.files[1].name == "dir/b");
  CHECK(parsed.files[1].size == 2);
  CHECK(parsed.files[1].sha256 == manifest.files[1].sha256);
}

TEST_CASE("the manifest's hashes match the files 7-Zip extracts") {
  TempDir dir;
  const auto b = test::make_device_bundle();
  const Secret password("K7QM-2XRA-TT4B-9ZQP-LMNB-VC3D-QWER");
  test::must(write_encrypted_zip(dir / "b.zip", b.files, password, Overwrite::refuse));
  auto result = test::run({"/usr/bin/7z", "x", "-p" + std::string(password.view()),
                           "-o" + (dir / "out").string(), "-y", (dir / "b.zip").string()});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  auto manifest = must(parse_manifest(must(read_file(dir / "out" / kManifestName))));
  REQUIRE(manifest.files.size() == 3);
  for (const auto& entry : manifest.files) {
    INFO(entry.name);
    const std::string content = must(read_file(dir / "out" / entry.name));
    CHECK(content.size() == entry.size);
    CHECK(must(sha256_hex(content)) == entry.sha256);
  }
  // And the verification helper agrees on what our reader returns.
  auto files = must(read_encrypted_zip(dir / "b.zip", password));
  auto verified = must(verify_manifest(files));
  CHECK(verified.devices[0].certificate_sha256 == b.fingerprint);
}

TEST_CASE("verification fails on an altered, missing, extra or resized file") {
  auto b = test::make_device_bundle();
  REQUIRE(verify_manifest(b.files).ok());

  SECTION("altered content of the same size") {
    std::string key(find(b.files, "sensor-1/cert.pem")->content.view());
    key[40] = static_cast<char>(key[40] ^ 1);
    find(b.files, "sensor-1/cert.pem")->content = Secret(key);
    auto result = verify_manifest(b.files);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Errc::corrupt);
    CHECK(result.error().message.find("sensor-1/cert.pem does not match") != std::string::npos);
  }
  SECTION("a listed file missing") {
    b.files.erase(b.files.begin());
    auto result = verify_manifest(b.files);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().message.find("listed but missing") != std::string::npos);
  }
  SECTION("an unlisted file") {
    b.files.push_back(file("extra.txt", "x"));
    auto result = verify_manifest(b.files);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().message.find("extra.txt is in the bundle but not listed") !=
          std::string::npos);
  }
  SECTION("a resized file") {
    find(b.files, "ca.pem")->content.append("\n");
    auto result = verify_manifest(b.files);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().message.find("ca.pem has the wrong size") != std::string::npos);
  }
  SECTION("no manifest") {
    b.files.pop_back();
    auto result = verify_manifest(b.files);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Errc::corrupt);
  }
}

TEST_CASE("a manifest of the wrong shape is corrupt") {
  const std::string hash(64, 'b');
  for (
      const std::string& bad : {
          std::string("not json"),
          std::string("[]"),
          std::string(
              R"({"format":"other","version":1,"created_at":"2027-01-15T08:00:00Z","devices":[],"files":[]})"),
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":2,"created_at":"2027-01-15T08:00:00Z","devices":[],"files":[]})"),
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":1,"created_at":"yesterday","devices":[],"files":[]})"),
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":1,"created_at":"2027-01-15T08:00:00Z","devices":[{"id":"a/b","certificate_sha256":")") +
              hash + R"("}],"files":[]})",
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":1,"created_at":"2027-01-15T08:00:00Z","devices":[],"files":[{"name":"../x","size":1,"sha256":")") +
              hash + R"("}]})",
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":1,"created_at":"2027-01-15T08:00:00Z","devices":[],"files":[{"name":"x","size":-1,"sha256":")") +
              hash + R"("}]})",
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":1,"created_at":"2027-01-15T08:00:00Z","devices":[],"files":[{"name":"x","size":1,"sha256":"ABC"}]})"),
          std::string(
              R"({"format":"mosquitto-onboard-bundle","version":1,"created_at":"2027-01-15T08:00:00Z","devices":[],"files":[{"name":"x","size":1,"sha256":")") +
              hash + R"("},{"name":"x","size":1,"sha256":")" + hash + R"("}]})",
      }) {
    INFO(bad);
    auto parsed = parse_manifest(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error().code == Errc::corrupt);
  }
}

TEST_CASE("describing a bundle refuses bad devices and a file named like the manifest") {
  std::vector<BundleFile> files;
  files.push_back(file("a", "1"));
  CHECK(describe_bundle(files, {}, 0).error().code == Errc::invalid_input);
  CHECK(describe_bundle(files, {{"bad id", kFingerprint}}, 0).error().code == Errc::invalid_input);
  CHECK(describe_bundle(files, {{"dev", "ABCDEF"}}, 0).error().code == Errc::invalid_input);
  CHECK(describe_bundle(files, {{"dev", std::string(64, 'A')}}, 0).error().code ==
        Errc::invalid_input);
  CHECK(describe_bundle(files, {{"dev", kFingerprint}, {"dev", kFingerprint}}, 0).error().code ==
        Errc::invalid_input);
  files.push_back(file(kManifestName, "{}"));
  CHECK(describe_bundle(files, {{"dev", kFingerprint}}, 0).error().code == Errc::invalid_input);
}
