// Writes the seeds of the fuzz corpora that only the project's own code can make valid: signed
// link tokens, AES-256 archives, CSRs, a manifest, snapshot cache files and OCSP requests. Usage:
// fuzz_make_seeds CORPUS_DIR. The text seeds (topics, options, broker configurations) are written
// by hand.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/ocsp.h>
#include "bundle/link_token.h"
#include "bundle/manifest.h"
#include "bundle/zip.h"
#include "core/encoding.h"

#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/digest.h"
#include "fuzz/fuzz_secrets.h"
#include "registry/snapshot_cache.h"

namespace {

using namespace onboard;
namespace fs = std::filesystem;

template <class T>
T must(Result<T> result, const char* what) {
  if (!result) {
    std::fprintf(stderr, "make_seeds: %s: %s\n", what, result.error().message.c_str());
    std::exit(1);
  }
  return std::move(result).value();
}

void write(const fs::path& path, std::string_view data) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bundle::BundleFile file(std::string name, std::string_view content, mode_t mode) {
  return bundle::BundleFile{std::move(name), Secret(content), mode, fuzz::kNow};
}

void link_tokens(const fs::path& dir) {
  const Secret secret{std::string_view(fuzz::kLinkSecret)};
  const Secret other{std::string_view("another-server-secret-0123456789")};
  const std::string valid =
      must(bundle::make_link_token("batch-2026.11_a", fuzz::kNow + 3600, secret), "token");
  write(dir / "valid", valid);
  write(dir / "valid-long-id",
        must(bundle::make_link_token(std::string(64, 'b'), fuzz::kNow + 1, secret), "token"));
  write(dir / "expired", must(bundle::make_link_token("old", fuzz::kNow - 1, secret), "token"));
  write(dir / "other-secret",
        must(bundle::make_link_token("batch-2026.11_a", fuzz::kNow + 3600, other), "token"));
  write(dir / "truncated", std::string_view(valid).substr(0, valid.size() - 3));
  std::string flipped = valid;
  flipped[5] = flipped[5] == 'A' ? 'B' : 'A';
  write(dir / "flipped", flipped);
  write(dir / "padded", valid + "=");
}

void archives(const fs::path& dir) {
  const Secret password{std::string_view(fuzz::kZipPassword)};
  std::vector<bundle::BundleFile> files;
  files.push_back(file("sensor-1/cert.pem", "-----BEGIN CERTIFICATE-----\nAA==\n", 0644));
  files.push_back(file("sensor-1/key.pem", "-----BEGIN PRIVATE KEY-----\nAA==\n", 0600));
  files.push_back(file("README.txt", "", 0644));
  const fs::path valid = dir / "valid.zip";
  fs::create_directories(dir);
  fs::remove(valid);
  if (!bundle::write_encrypted_zip(valid, files, password, Overwrite::refuse)) std::exit(1);
  std::vector<bundle::BundleFile> one;
  one.push_back(file("a", "x", 0644));
  const fs::path other = dir / "other-password.zip";
  fs::remove(other);
  if (!bundle::write_encrypted_zip(other, one, Secret(std::string_view("not-the-password")),
                                   Overwrite::refuse)) {
    std::exit(1);
  }
  // Damaged copies: a flipped byte in the first entry's data, and a cut-off central directory.
  std::string bytes = read(valid);
  std::string damaged = bytes;
  damaged[80] = static_cast<char>(damaged[80] ^ 0x01);
  write(dir / "flipped-data.zip", damaged);
  write(dir / "truncated.zip", std::string_view(bytes).substr(0, bytes.size() - 30));
}

void csrs(const fs::path& dir) {
  auto p256 = must(ca::generate_key(ca::KeyAlg::p256), "key");
  auto ed25519 = must(ca::generate_key(ca::KeyAlg::ed25519), "key");
  write(dir / "p256.pem", ca::csr_to_pem(must(ca::make_csr(p256.get(), "sensor-1"), "csr").get()));
  write(dir / "ed25519.pem",
        ca::csr_to_pem(must(ca::make_csr(ed25519.get(), "gw.hall-7_01"), "csr").get()));
  // A CN that is not a device id: parses, then is refused by the check.
  write(dir / "bad-cn.pem", ca::csr_to_pem(must(ca::make_csr(p256.get(), "a/b+#"), "csr").get()));
  const std::string pem = ca::csr_to_pem(must(ca::make_csr(p256.get(), "sensor-2"), "csr").get());
  std::string tampered = pem;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  write(dir / "tampered.pem", tampered);
}

// OCSP requests as clients send them (SHA-1 and SHA-256 CertIDs, with and without a nonce, two
// IDs), the base64 of one as GET /ocsp/ carries it, and near misses.
void ocsp_requests(const fs::path& dir) {
  auto key = must(ca::generate_key(ca::KeyAlg::p256), "key");
  ca::KeySigner signer(std::move(key));
  ca::CertificateRequest root;
  root.profile = ca::Profile::root_ca;
  root.common_name = "Seed Root";
  root.public_key = signer.public_key();
  root.not_before = 1'800'000'000;
  root.not_after = root.not_before + 86400;
  auto root_cert = must(ca::issue_certificate(root, nullptr, signer), "root");
  auto request = [&](const EVP_MD* md, int ids, bool nonce) {
    OCSP_REQUEST* req = OCSP_REQUEST_new();
    for (int i = 0; i < ids; ++i)
      OCSP_request_add0_id(req, OCSP_cert_to_id(md, root_cert.get(), root_cert.get()));
    if (nonce) OCSP_request_add1_nonce(req, nullptr, 16);
    unsigned char* der = nullptr;
    const int len = i2d_OCSP_REQUEST(req, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
    return out;
  };
  const std::string sha1 = request(EVP_sha1(), 1, false);
  write(dir / "sha1.der", sha1);
  write(dir / "sha256-nonce.der", request(EVP_sha256(), 1, true));
  write(dir / "two-ids-nonce.der", request(EVP_sha1(), 2, true));
  write(dir / "md5.der", request(EVP_md5(), 1, false));
  write(dir / "truncated.der", sha1.substr(0, sha1.size() - 3));
  write(dir / "trailing.der", sha1 + '\0');
  write(dir / "get-path.b64", base64_encode(sha1));
}

void manifests(const fs::path& dir) {
  std::vector<bundle::BundleFile> files;
  files.push_back(file("sensor-1/cert.pem", "cert", 0644));
  files.push_back(file("sensor-1/key.pem", "key", 0600));
  const std::vector<bundle::ManifestDevice> devices{
      {"sensor-1", must(sha256_hex("cert"), "digest")}};
  auto manifest = must(bundle::make_manifest_file(files, devices, fuzz::kNow), "manifest");
  const std::string json(manifest.content.view());
  write(dir / "valid.json", json);
  write(dir / "truncated.json", std::string_view(json).substr(0, json.size() / 2));
  std::string wrong_version = json;
  wrong_version.replace(wrong_version.find("\"version\": 1"), 12, "\"version\": 2");
  write(dir / "version-2.json", wrong_version);
}

// snapshot_cache's seeds are bodies (the fuzz target adds the magic and a matching checksum) and
// one whole file. The fleet has a device with a deny and %c/%u rules, a revoked certificate, a
// disabled device and two groups.
void snapshot_caches(const fs::path& dir) {
  using namespace registry;
  auto rule = [](std::int64_t id, const char* pattern, std::uint8_t access, acl::Effect effect) {
    return acl::Rule{id, pattern, access, effect, static_cast<int>(id % 3)};
  };
  auto cert = [](char c, CertificateStatus status) {
    return CertificateAccess{std::string(64, c), "0A1B", status, fuzz::kNow - 86'400,
                             fuzz::kNow + 86'400};
  };
  std::vector<DeviceAccess> devices;
  devices.push_back(
      DeviceAccess{"sensor-1",
                   DeviceStatus::active,
                   "sensor",
                   {rule(11, "devices/%d/secret", acl::kReadWrite, acl::Effect::deny),
                    rule(12, "clients/%c/#", acl::kPublish, acl::Effect::allow),
                    rule(13, "users/%u/+", acl::kSubscribe, acl::Effect::allow)},
                   {cert('a', CertificateStatus::revoked), cert('b', CertificateStatus::active)}});
  devices.push_back(
      DeviceAccess{"off", DeviceStatus::disabled, "", {}, {cert('c', CertificateStatus::active)}});
  std::vector<GroupAccess> groups{
      {"default", {rule(1, "devices/%d/#", acl::kReadWrite, acl::Effect::allow)}},
      {"sensor", {rule(2, "fleet/#", acl::kRead, acl::Effect::allow)}}};
  const auto body = [](const Snapshot& snapshot) {
    const std::string file = must(encode_snapshot_cache(snapshot), "snapshot cache");
    return file.substr(kSnapshotCacheMagic.size(), file.size() - kSnapshotCacheMagic.size() - 64);
  };
  const auto fleet = Snapshot::build(std::move(devices), std::move(groups), 42);
  write(dir / "fleet.body", body(*fleet));
  write(dir / "empty.body", body(*Snapshot::build({}, {}, 0)));
  write(dir / "fleet.file", must(encode_snapshot_cache(*fleet), "snapshot cache"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path corpus(argv[1]);
  link_tokens(corpus / "link_token");
  archives(corpus / "zip");
  csrs(corpus / "csr");
  manifests(corpus / "manifest");
  snapshot_caches(corpus / "snapshot_cache");
  ocsp_requests(corpus / "ocsp_request");
  return 0;
}
