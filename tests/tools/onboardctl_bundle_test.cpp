// Credential delivery as an operator and a manufacturer meet it: `batch register` from a CSV,
// `bundle create` into an AES-256 zip that 7-Zip opens, `bundle link`, and what is left on the
// server afterwards. Real onboardctl processes on a real data directory, real 7z.
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "bundle/link_token.h"
#include "bundle/manifest.h"
#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/digest.h"
#include "core/files.h"
#include "registry/sqlite_store.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using nlohmann::json;
using onboard::test::mode_of;
using onboard::test::RunResult;
using onboard::test::TempDir;

namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

constexpr const char* kHoldPassphrase = "Hold-Keys-Until-Packaged-42";
const Env kHoldEnv{{"HOLD", kHoldPassphrase}};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string slurp(const std::filesystem::path& path) { return read_file(path).value(); }

RunResult seven_zip(const Args& args) {
  Args argv{"/usr/bin/7z"};
  argv.insert(argv.end(), args.begin(), args.end());
  return onboard::test::run(argv);
}

// An initialised data directory and a directory for the operator's files.
struct Fleet {
  TempDir data, out;

  Fleet() {
    auto r = (*this)({"init", "--key-alg", "p256", "--no-group"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  RunResult operator()(Args args, const Env& env = {}) const {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data.path().string()});
    return onboard::test::run(args, {}, env);
  }
  std::filesystem::path file(const std::string& name) const { return out / name; }

  // Registers the rows of `csv` (written to OUT/devices.csv) as batch `batch`.
  RunResult batch(const std::string& csv, const std::string& batch_id = "b1",
                  const Args& extra = {}) const {
    write(file("devices.csv"), csv);
    Args args{"batch",
              "register",
              "--csv",
              file("devices.csv").string(),
              "--batch",
              batch_id,
              "--hold-passphrase-env",
              "HOLD"};
    args.insert(args.end(), extra.begin(), extra.end());
    return (*this)(args, kHoldEnv);
  }
  void require_batch(const std::string& csv, const std::string& batch_id = "b1") const {
    auto r = batch(csv, batch_id);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  // bundle create ... --hold-passphrase-env HOLD --password-out OUT/<zip>.pw
  RunResult bundle(Args args) const {
    args.insert(args.begin(), {"bundle", "create"});
    args.insert(args.end(), {"--hold-passphrase-env", "HOLD"});
    return (*this)(args, kHoldEnv);
  }

  std::unique_ptr<registry::Store> store() const {
    auto s = registry::open_sqlite_store(data / "registry.db", registry::OpenMode::read_write);
    REQUIRE(s.ok());
    return std::move(s).value();
  }
  std::int64_t count(const char* sql) const {
    SQLite::Database db((data / "registry.db").string(), SQLite::OPEN_READONLY);
    return db.execAndGet(sql).getInt64();
  }
  std::vector<std::string> held_pems() const {
    SQLite::Database db((data / "registry.db").string(), SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT encrypted_pem FROM held_keys ORDER BY device_id");
    std::vector<std::string> pems;
    while (q.executeStep()) pems.push_back(q.getColumn(0).getString());
    return pems;
  }
};

// The line after "bundle " in bundle create's output: the bundle id.
std::string bundle_id_in(const std::string& out) {
  const auto at = out.find("bundle bdl-");
  REQUIRE(at != std::string::npos);
  const auto start = at + 7;
  return out.substr(start, out.find_first_of(" \n", start) - start);
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// The base64 body lines of a PEM block: any one of them found in a file means the PEM is there.
std::vector<std::string> pem_body_lines(const std::string& pem) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < pem.size()) {
    auto end = pem.find('\n', pos);
    if (end == std::string::npos) end = pem.size();
    auto line = pem.substr(pos, end - pos);
    if (!line.starts_with("-----") && line.size() >= 40) lines.push_back(line);
    pos = end + 1;
  }
  return lines;
}

std::string der_of_private_key(const EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int length = i2d_PrivateKey(key, &der);
  REQUIRE(length > 0);
  std::string bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(length));
  OPENSSL_clear_free(der, static_cast<std::size_t>(length));
  return bytes;
}

// Every regular file below `dir` whose bytes contain `needle`.
std::vector<std::string> files_containing(const std::filesystem::path& dir,
                                          const std::string& needle) {
  std::vector<std::string> hits;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    if (contains(slurp(entry.path()), needle)) hits.push_back(entry.path().string());
  }
  return hits;
}

const char* kThreeDevices =
    "name,type,location,firmware,csr\n"
    "dev-1,temp,lab,1.0,\n"
    "\"dev-2\",temp,\"lab, room 2\",1.0,\n"
    "Third camera,cam,,2.0,dev-3.csr\n";

void write_csr(const Fleet& fleet, const std::string& cn, const std::string& name) {
  auto key = generate_key(KeyAlg::p256);
  REQUIRE(key.ok());
  auto req = make_csr(key->get(), cn);
  REQUIRE(req.ok());
  write(fleet.file(name), csr_to_pem(req->get()));
}

}  // namespace

TEST_CASE("a CSV batch is packaged into an AES-256 zip that 7-Zip opens with its password only") {
  Fleet fleet;
  write_csr(fleet, "dev-3", "dev-3.csr");
  auto registered = fleet.batch(kThreeDevices);
  INFO(registered.err);
  REQUIRE(registered.exit_code == 0);
  CHECK(contains(registered.out, "registered   3 device(s)"));
  CHECK(contains(registered.out, "2 made here, held encrypted"));
  // The keys made here wait in the registry, encrypted; the CSR device has none there.
  const auto held = fleet.held_pems();
  REQUIRE(held.size() == 2);
  for (const auto& pem : held) CHECK(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
  auto shown = fleet({"batch", "show", "b1"});
  CHECK(contains(shown.out, "dev-1   active  held (encrypted)"));
  CHECK(contains(shown.out, "dev-3   active  none"));
  CHECK(contains(fleet({"device", "show", "dev-1"}).out, "server key copy: held, encrypted"));

  const auto zip = fleet.file("b1.zip");
  const auto pw_file = fleet.file("b1.pw");
  auto made = fleet.bundle({"--batch", "b1", "--out", zip.string(), "--password-out",
                            pw_file.string(), "--broker", "mqtt.example.com:8884"});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  CHECK(contains(made.out, "2 private keys inside"));
  CHECK_FALSE(contains(made.out, "password     "));  // it went to the file, not to the terminal
  CHECK(mode_of(pw_file) == 0600);
  const std::string password = first_line(slurp(pw_file));
  REQUIRE(password.size() == 34);

  SECTION("7-Zip extracts it with the password; the manifest and the keys check out") {
    TempDir extracted;
    auto x = seven_zip({"x", "-p" + password, "-o" + extracted.path().string(), zip.string()});
    INFO(x.out << x.err);
    REQUIRE(x.exit_code == 0);

    auto manifest = json::parse(slurp(extracted / "manifest.json"));
    std::set<std::string> listed;
    for (const auto& f : manifest["files"]) {
      const std::string name = f["name"];
      listed.insert(name);
      const std::string bytes = slurp(extracted / name);
      CHECK(bytes.size() == f["size"].get<std::size_t>());
      CHECK(sha256_hex(bytes).value() == f["sha256"].get<std::string>());
    }
    CHECK(listed == std::set<std::string>{"ca-chain.pem", "dev-1/client.crt", "dev-1/client.key",
                                          "dev-1/connect.txt", "dev-2/client.crt",
                                          "dev-2/client.key", "dev-2/connect.txt",
                                          "dev-3/client.crt", "dev-3/connect.txt"});
    CHECK(manifest["devices"].size() == 3);

    for (const std::string id : {"dev-1", "dev-2"}) {
      INFO(id);
      CHECK(mode_of(extracted / id / "client.key") == 0600);
      auto key = private_key_from_pem(slurp(extracted / id / "client.key"));
      REQUIRE(key.ok());
      auto cert = certificate_from_pem(slurp(extracted / id / "client.crt"));
      REQUIRE(cert.ok());
      CHECK(subject_common_name(cert->get()) == id);
      CHECK(same_public_key(key->get(), X509_get0_pubkey(cert->get())));
      const std::string fingerprint = sha256_fingerprint(cert->get());
      bool in_manifest = false;
      for (const auto& d : manifest["devices"]) {
        in_manifest |= d["id"] == id && d["certificate_sha256"] == fingerprint;
      }
      CHECK(in_manifest);
      CHECK(contains(slurp(extracted / id / "connect.txt"),
                     "-h mqtt.example.com -p 8884 --cafile ca-chain.pem --cert " + id +
                         "/client.crt --key " + id + "/client.key -i " + id));
    }
    CHECK_FALSE(std::filesystem::exists(extracted / "dev-3" / "client.key"));
    CHECK(contains(slurp(extracted / "dev-3" / "connect.txt"), "YOUR-KEY.pem"));
    auto verified = onboard::test::run({"/usr/bin/openssl", "verify", "-CAfile",
                                        (extracted / "ca-chain.pem").string(),
                                        (extracted / "dev-3" / "client.crt").string()});
    CHECK(verified.exit_code == 0);

    // No plaintext key is left anywhere under the data directory: neither a PEM key block
    // outside the CA's own key files, nor any device key's PEM lines or DER bytes, nor the
    // encrypted copies the registry held.
    for (const auto& hit : files_containing(fleet.data.path(), "PRIVATE KEY-----")) {
      CHECK(std::filesystem::path(hit).parent_path().filename() == "ca");
      CHECK(hit.ends_with(".key"));
    }
    for (const std::string id : {"dev-1", "dev-2"}) {
      const std::string pem = slurp(extracted / id / "client.key");
      auto key = private_key_from_pem(pem);
      REQUIRE(key.ok());
      CHECK(files_containing(fleet.data.path(), der_of_private_key(key->get())).empty());
      for (const auto& line : pem_body_lines(pem)) {
        CHECK(files_containing(fleet.data.path(), line).empty());
      }
    }
    for (const auto& pem : held) {
      for (const auto& line : pem_body_lines(pem)) {
        CHECK(files_containing(fleet.data.path(), line).empty());
      }
    }
    CHECK(fleet.count("SELECT count(*) FROM held_keys") == 0);
    CHECK(contains(fleet({"batch", "show", "b1"}).out, "dev-1   active  none"));
    CHECK(contains(fleet({"device", "show", "dev-1"}).out, "server key copy: none"));
  }

  SECTION("a wrong password extracts nothing") {
    TempDir extracted;
    auto x = seven_zip(
        {"x", "-pWRONG-PASSWORD-1234", "-o" + extracted.path().string(), "-y", zip.string()});
    CHECK(x.exit_code != 0);
    // 7-Zip may leave empty or partial files behind; none holds the key.
    if (std::filesystem::exists(extracted / "dev-1" / "client.key")) {
      CHECK_FALSE(contains(slurp(extracted / "dev-1" / "client.key"), "PRIVATE KEY"));
    }
  }

  SECTION("the registry records the bundle, and the archive is not ZipCrypto") {
    const std::string id = bundle_id_in(made.out);
    auto s = fleet({"bundle", "show", id, "--json"});
    INFO(s.err);
    REQUIRE(s.exit_code == 0);
    auto b = json::parse(s.out);
    CHECK(b["path"] == std::filesystem::absolute(zip).lexically_normal().string());
    CHECK(b["sha256"] == sha256_hex(slurp(zip)).value());
    CHECK(b["batch"] == "b1");
    CHECK(b["with_keys"] == true);
    CHECK(b["downloaded_at"].is_null());
    CHECK(b["devices"].size() == 3);
    auto listing = seven_zip({"l", "-slt", "-p" + password, zip.string()});
    REQUIRE(listing.exit_code == 0);
    CHECK(contains(listing.out, "Method = AES-256"));
    CHECK_FALSE(contains(listing.out, "ZipCrypto"));
    auto audit = fleet({"audit", "verify"});
    CHECK(audit.exit_code == 0);
  }
}

TEST_CASE("bundle create refuses what must not be delivered, and writes nothing then") {
  Fleet fleet;
  fleet.require_batch("name\ndev-1\ndev-2\ndev-3\n");
  const auto zip = fleet.file("out.zip");
  auto refused = [&](const Args& args, int exit_code, const std::string& message,
                     const Env& env = kHoldEnv) {
    Args full{"bundle", "create"};
    full.insert(full.end(), args.begin(), args.end());
    auto r = fleet(full, env);
    INFO(r.err);
    CHECK(r.exit_code == exit_code);
    CHECK(contains(r.err, message));
    CHECK_FALSE(std::filesystem::exists(zip));
    CHECK(fleet.count("SELECT count(*) FROM held_keys") == 3);
    CHECK(fleet.count("SELECT count(*) FROM bundles") == 0);
  };

  SECTION("unknown, revoked and disabled devices") {
    refused({"nope", "--out", zip.string(), "--hold-passphrase-env", "HOLD"}, 4,
            "device nope does not exist");
    REQUIRE(fleet({"device", "disable", "dev-2"}).exit_code == 0);
    refused({"dev-1", "dev-2", "--out", zip.string(), "--hold-passphrase-env", "HOLD"}, 5,
            "device dev-2 is disabled");
    refused({"--batch", "b1", "--out", zip.string(), "--hold-passphrase-env", "HOLD"}, 5,
            "disabled device cannot be bundled");
    REQUIRE(fleet({"device", "revoke", "dev-3"}).exit_code == 0);
    // Revoking erases the device's held key at once: nothing can package it any more.
    CHECK(fleet.count("SELECT count(*) FROM held_keys WHERE device_id = 'dev-3'") == 0);
    auto r =
        fleet({"bundle", "create", "dev-3", "--out", zip.string(), "--hold-passphrase-env", "HOLD"},
              kHoldEnv);
    CHECK(r.exit_code == 5);
    CHECK(contains(r.err, "device dev-3 is revoked"));
    CHECK_FALSE(std::filesystem::exists(zip));
  }
  SECTION("a held key without the hold passphrase, or with a wrong one") {
    refused({"dev-1", "--out", zip.string()}, 3, "--hold-passphrase-env");
    refused({"dev-1", "--out", zip.string(), "--hold-passphrase-env", "HOLD"}, 7,
            "wrong hold passphrase", Env{{"HOLD", "Not-The-Right-One-99"}});
  }
  SECTION("a weak password of the operator's own") {
    refused(
        {"dev-1", "--out", zip.string(), "--hold-passphrase-env", "HOLD", "--password-env", "PW"},
        3, "too weak", Env{{"HOLD", kHoldPassphrase}, {"PW", "password1234"}});
  }
  SECTION("unknown batch, no devices, a bad broker address, two sources") {
    refused({"--batch", "nope", "--out", zip.string()}, 4, "batch nope does not exist");
    refused({"--out", zip.string()}, 3, "name the devices to package");
    refused({"dev-1", "--out", zip.string(), "--broker", "host;rm -rf /"}, 3, "broker address");
    auto r = fleet({"bundle", "create", "dev-1", "--batch", "b1", "--out", zip.string()});
    CHECK(r.exit_code == 2);
  }
  SECTION("an unwritable output directory") {
    if (::geteuid() == 0) {
      // root writes anywhere; a path below a regular file fails for everyone.
      write(fleet.file("plain"), "x");
      refused({"dev-1", "--out", (fleet.file("plain") / "out.zip").string(),
               "--hold-passphrase-env", "HOLD"},
              6, "");
    } else {
      std::filesystem::create_directory(fleet.file("ro"));
      ::chmod(fleet.file("ro").c_str(), 0500);
      refused({"dev-1", "--out", (fleet.file("ro") / "out.zip").string(), "--hold-passphrase-env",
               "HOLD"},
              6, "");
    }
  }
  SECTION("the password file cannot be the bundle itself") {
    refused({"dev-1", "--out", zip.string(), "--password-out", zip.string(), "--force",
             "--hold-passphrase-env", "HOLD"},
            3, "--password-out names the bundle itself");
  }
  SECTION("an existing output is refused unless --force, and --force replaces it") {
    write(zip, "precious");
    auto r = fleet.bundle({"dev-1", "--out", zip.string()});
    CHECK(r.exit_code == 5);
    CHECK(contains(r.err, "--force"));
    CHECK(slurp(zip) == "precious");
    CHECK(fleet.count("SELECT count(*) FROM held_keys") == 3);
    r = fleet.bundle({"dev-1", "--out", zip.string(), "--force"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(slurp(zip).starts_with("PK"));
    CHECK(fleet.count("SELECT count(*) FROM held_keys") == 2);
  }
}

TEST_CASE("bundle create --split writes one zip and one password per device") {
  Fleet fleet;
  fleet.require_batch("name\ndev-1\ndev-2\n");
  auto r = fleet.bundle({"--batch", "b1", "--split", "--out", fleet.file("zips").string(),
                         "--password-out", fleet.file("pw.tsv").string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(slurp(fleet.file("pw.tsv")));
  std::string line;
  std::set<std::string> passwords;
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    const auto tab1 = line.find('\t');
    const auto tab2 = line.find('\t', tab1 + 1);
    REQUIRE(tab2 != std::string::npos);
    const std::string id = line.substr(0, tab1);
    const std::string path = line.substr(tab1 + 1, tab2 - tab1 - 1);
    const std::string password = line.substr(tab2 + 1);
    passwords.insert(password);
    CHECK(path == (fleet.file("zips") / (id + ".zip")).string());
    TempDir x;
    auto extracted = seven_zip({"x", "-p" + password, "-o" + x.path().string(), path});
    REQUIRE(extracted.exit_code == 0);
    CHECK(std::filesystem::exists(x / id / "client.key"));
    CHECK(std::filesystem::exists(x / "manifest.json"));
  }
  CHECK(count == 2);
  CHECK(passwords.size() == 2);
  CHECK(fleet.count("SELECT count(*) FROM bundles") == 2);
}

TEST_CASE("batch register checks the whole CSV first and reports every bad row by line") {
  Fleet fleet;
  auto check_nothing_registered = [&] {
    CHECK(fleet.count("SELECT count(*) FROM devices") == 0);
    CHECK(fleet.count("SELECT count(*) FROM batches") == 0);
  };
  SECTION("bad rows are all named, the good ones are not registered either") {
    auto r = fleet.batch(
        "name,type\n"
        "good-1,temp\n"
        "bad name,temp\n"         // line 3: not a device id, and no id column
        "good-2,temp,extra\n"     // line 4: too many fields
        "good-1,temp\n"           // line 5: duplicate
        "good-3,bad/type\n"       // line 6: invalid type
        "\"multi\nline\",temp\n"  // line 7-8: a quoted field over two lines, not an id
        "good-4,temp\n");         // line 9: fine
    INFO(r.err);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "devices.csv:3: name 'bad name' is not a valid device id"));
    CHECK(contains(r.err, "devices.csv:4: expected 2 fields, found 3"));
    CHECK(contains(r.err, "devices.csv:5: device good-1 appears twice"));
    CHECK(contains(r.err, "devices.csv:6: type:"));
    CHECK(contains(r.err, "devices.csv:7: "));
    CHECK_FALSE(contains(r.err, "devices.csv:9"));
    CHECK(contains(r.err, "5 problem(s)"));
    CHECK(contains(r.err, "nothing was registered"));
    check_nothing_registered();
  }
  SECTION("a broken file or header") {
    auto r = fleet.batch("name\n\"unterminated\n");
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "line 2: a quoted field is not closed"));
    r = fleet.batch("name,serial\ndev-1,1\n");
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "unknown column 'serial'"));
    r = fleet.batch("type\ntemp\n");
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "'name' column"));
    r = fleet.batch("");
    CHECK(r.exit_code == 3);
    check_nothing_registered();
  }
  SECTION("a CSR whose CN is not the row's id, and a missing CSR file") {
    write_csr(fleet, "other", "other.csr");
    auto r = fleet.batch("id,name,csr\ndev-1,One,other.csr\ndev-2,Two,missing.csr\n");
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "devices.csv:2: the CSR's CN is 'other', not the device id 'dev-1'"));
    CHECK(contains(r.err, "devices.csv:3: csr:"));
    check_nothing_registered();
  }
  SECTION("rows needing a key made here require a strong hold passphrase") {
    write(fleet.file("devices.csv"), "name\ndev-1\n");
    auto r = fleet({"batch", "register", "--csv", fleet.file("devices.csv").string()});
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "--hold-passphrase-env"));
    r = fleet({"batch", "register", "--csv", fleet.file("devices.csv").string(),
               "--hold-passphrase-env", "HOLD"},
              Env{{"HOLD", "short"}});
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "too weak"));
    check_nothing_registered();
  }
  SECTION("existing devices are refused, or skipped with --skip-existing into the same batch") {
    fleet.require_batch("name\ndev-1\n");
    auto r = fleet.batch("name\ndev-1\ndev-2\n");
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "devices.csv:2: device dev-1 is registered already"));
    r = fleet.batch("name\ndev-1\ndev-2\n", "b1", {"--skip-existing"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "batch b1 (extended)"));
    CHECK(contains(r.out, "skipped      1"));
    auto shown = fleet({"batch", "show", "b1"});
    CHECK(contains(shown.out, "dev-1"));
    CHECK(contains(shown.out, "dev-2"));
  }
  SECTION("piped output has no progress bar") {
    auto r = fleet.batch("name\ndev-1\ndev-2\n");
    REQUIRE(r.exit_code == 0);
    CHECK_FALSE(contains(r.err, "\r"));
    CHECK(r.err.empty());
  }
}

TEST_CASE("bundle link prints a one-time URL signed for that bundle") {
  Fleet fleet;
  fleet.require_batch("name\ndev-1\n");
  auto made = fleet.bundle({"dev-1", "--out", fleet.file("one.zip").string()});
  REQUIRE(made.exit_code == 0);
  const std::string id = bundle_id_in(made.out);

  auto r = fleet({"bundle", "link", id, "--ttl", "2h", "--base-url", "https://onboard.example/"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string url = first_line(r.out);
  const std::string prefix = "https://onboard.example/v1/bundles/";
  REQUIRE(url.starts_with(prefix));
  const std::string token = url.substr(prefix.size());
  CHECK(mode_of(fleet.data / "link-secret.key") == 0600);
  auto secret = bundle::load_or_create_link_secret(fleet.data.path());
  REQUIRE(secret.ok());
  const UnixTime now = unix_now();
  auto check = bundle::verify_link_token(token, *secret, now);
  REQUIRE(check.ok());
  CHECK(check.token().bundle_id == id);
  CHECK(check.token().expires_at >= now + 7200 - 60);
  CHECK(check.token().expires_at <= now + 7200 + 5);
  // Past its time the same token is expired; with one bit flipped it is not ours at all.
  CHECK(bundle::verify_link_token(token, *secret, now + 7300).failure() ==
        bundle::LinkFailure::expired);
  std::string flipped = token;
  flipped[flipped.size() / 2] = flipped[flipped.size() / 2] == 'A' ? 'B' : 'A';
  CHECK_FALSE(bundle::verify_link_token(flipped, *secret, now).ok());

  SECTION("bad input") {
    CHECK(fleet({"bundle", "link", id, "--ttl", "10s"}).exit_code == 3);
    CHECK(fleet({"bundle", "link", id, "--ttl", "31d"}).exit_code == 3);
    CHECK(fleet({"bundle", "link", id, "--ttl", "5x"}).exit_code == 3);
    CHECK(fleet({"bundle", "link", id, "--base-url", "ftp://x"}).exit_code == 3);
    CHECK(fleet({"bundle", "link", "bdl-nope"}).exit_code == 4);
  }
  SECTION("a bundle is downloaded once: the second claim is refused, and so are new links") {
    auto store = fleet.store();
    const registry::Actor actor{"rest:test", unix_now()};
    auto first = store->claim_bundle_download(id, "127.0.0.1", actor);
    REQUIRE(first.ok());
    CHECK(first->downloaded_at.has_value());
    auto second = store->claim_bundle_download(id, "127.0.0.1", actor);
    REQUIRE_FALSE(second.ok());
    CHECK(second.error().code == Errc::conflict);
    auto again = fleet({"bundle", "link", id});
    CHECK(again.exit_code == 5);
    CHECK(contains(again.err, "downloaded already"));
  }
}

TEST_CASE("a batch that fails midway keeps the rows before it, says which, and can be finished") {
  Fleet fleet;
  {
    // The store refuses dev-3 as a full disk or a lost lock would: mid-batch, after dev-1 and
    // dev-2 were committed.
    SQLite::Database raw((fleet.data / "registry.db").string(), SQLite::OPEN_READWRITE);
    raw.exec(
        "CREATE TRIGGER refuse_dev3 BEFORE INSERT ON devices WHEN NEW.id = 'dev-3' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END");
  }
  auto r = fleet.batch("name\ndev-1\ndev-2\ndev-3\ndev-4\n");
  INFO(r.err);
  CHECK(r.exit_code != 0);
  CHECK(contains(r.err, "devices.csv:4 (device dev-3)"));
  CHECK(contains(r.err, "2 row(s) before it (lines 2 to 3) are registered in batch b1"));
  CHECK(contains(r.err, "--batch b1 --skip-existing"));
  CHECK(fleet.count("SELECT count(*) FROM devices") == 2);
  CHECK(fleet.count("SELECT count(*) FROM batch_devices WHERE batch_id = 'b1'") == 2);
  CHECK(fleet.count("SELECT count(*) FROM held_keys") == 2);
  CHECK(fleet({"audit", "verify"}).exit_code == 0);
  {
    SQLite::Database raw((fleet.data / "registry.db").string(), SQLite::OPEN_READWRITE);
    raw.exec("DROP TRIGGER refuse_dev3");
  }
  r = fleet.batch("name\ndev-1\ndev-2\ndev-3\ndev-4\n", "b1", {"--skip-existing"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(fleet.count("SELECT count(*) FROM batch_devices WHERE batch_id = 'b1'") == 4);
  CHECK(fleet.count("SELECT count(*) FROM held_keys") == 4);
}

TEST_CASE("batch register draws a progress bar on a terminal") {
  Fleet fleet;
  write(fleet.file("devices.csv"), "name\ndev-1\ndev-2\n");
  // script(1) runs the command on a pseudo-terminal, as an operator's shell would.
  const std::string command = std::string(ONBOARDCTL_PATH) + " --data-dir " +
                              fleet.data.path().string() + " batch register --csv " +
                              fleet.file("devices.csv").string() +
                              " --batch b1 --hold-passphrase-env HOLD";
  auto r = onboard::test::run({"/usr/bin/script", "-qec", command, "/dev/null"}, {}, kHoldEnv);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "\r["));
  CHECK(contains(r.out, "] 2/2"));
  CHECK(contains(r.out, "registered   2 device(s)"));
}
