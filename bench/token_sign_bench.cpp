// Signing rate with the CA key in a PKCS#11 token beside the same issuance with the key in a file
// (issue 17): device certificates per second through Authority::issue, and CRLs per second, for
// P-256 and RSA-3072 CA keys. The token is a throwaway SoftHSM token made in a temporary directory.
//
// Both sides run in the same process, alternating in short rounds, so that the noise of a shared
// machine falls on both alike. Rates are per wall-clock second: a real token's time is spent
// outside the process, so CPU time would flatter it.
//
//   onboard_token_sign_bench [--seconds S] [--module PATH]
// prints one Markdown table row per case.
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ca/authority.h"
#include "ca/crl.h"
#include "ca/keys.h"

namespace {

namespace ca = onboard::ca;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "token_sign_bench: %s\n", message.c_str());
  std::exit(2);
}

template <class T>
T must(onboard::Result<T> result) {
  if (!result.ok()) die(result.error().message);
  return std::move(result).value();
}

struct Side {
  ca::Authority authority;
  long certificates = 0, crls = 0;
  double certificate_seconds = 0, crl_seconds = 0;
};

Side make_side(const std::filesystem::path& dir, ca::KeyAlg alg, const std::string& key_uri,
               const std::string& module, const onboard::Secret& pin) {
  ca::CaInitOptions options;
  options.root_key_alg = alg;
  options.crl_url = "http://127.0.0.1:8080/crl.pem";
  options.token_key_uri = key_uri;
  options.pkcs11_module = module;
  options.passphrase = key_uri.empty() ? nullptr : &pin;
  must(ca::Authority::create(dir, options, onboard::unix_now()));
  auto authority = must(ca::Authority::open(dir));  // as every later command opens it
  if (auto loaded = authority.load_signing_key(key_uri.empty() ? nullptr : &pin); !loaded.ok())
    die(loaded.error().message);
  return Side{std::move(authority)};
}

void issue_for(Side& side, const EVP_PKEY* device_key, double seconds) {
  const auto start = Clock::now();
  const onboard::UnixTime now = onboard::unix_now();
  do {
    ca::CertificateRequest request;
    request.profile = ca::Profile::device;
    request.common_name = "device-" + std::to_string(side.certificates);
    request.public_key = device_key;
    request.not_before = now - 300;
    request.not_after = now + 365 * 86400;
    must(side.authority.issue(std::move(request)));
    ++side.certificates;
  } while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
  side.certificate_seconds += std::chrono::duration<double>(Clock::now() - start).count();
}

void crl_for(Side& side, const std::vector<onboard::RevokedEntry>& revoked, double seconds) {
  const auto start = Clock::now();
  const onboard::UnixTime now = onboard::unix_now();
  do {
    ca::CrlParams params;
    params.this_update = now;
    params.next_update = now + 7 * 86400;
    params.crl_number = static_cast<std::uint64_t>(side.crls + 1);
    must(ca::build_crl(side.authority.issuer(), *side.authority.signer(), revoked, params));
    ++side.crls;
  } while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
  side.crl_seconds += std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 6;
  std::string module = "/usr/lib/softhsm/libsofthsm2.so";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seconds")
      seconds = std::atof(argv[i + 1]);
    else if (flag == "--module")
      module = argv[i + 1];
    else
      die("usage: onboard_token_sign_bench [--seconds S] [--module PATH]");
  }
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "onboard-token-XXXXXX").string();
  if (::mkdtemp(dir_template.data()) == nullptr) die("cannot create a temporary directory");
  const std::filesystem::path dir = dir_template;
  std::filesystem::create_directories(dir / "tokens");
  std::ofstream(dir / "softhsm2.conf") << "directories.tokendir = " << (dir / "tokens").string()
                                       << "\nobjectstore.backend = file\nlog.level = ERROR\n";
  ::setenv("SOFTHSM2_CONF", (dir / "softhsm2.conf").c_str(), 1);
  const onboard::Secret pin("bench-pin-1234");
  const std::string init = "softhsm2-util --init-token --free --label bench --pin " +
                           std::string(pin.view()) + " --so-pin bench-so-1234 >/dev/null";
  if (std::system(init.c_str()) != 0) die("softhsm2-util --init-token failed");

  auto device_key = must(ca::generate_key(ca::KeyAlg::p256));
  // A CRL of 100 revoked certificates, a small fleet's worth.
  std::vector<onboard::RevokedEntry> revoked(100);
  for (std::size_t i = 0; i < revoked.size(); ++i) {
    revoked[i].serial_hex = "7A" + std::to_string(1000000 + i);
    revoked[i].revoked_at = onboard::unix_now() - 3600;
  }

  std::printf("| CA key | where | certificates/s | CRLs/s (100 entries) | token / file |\n");
  std::printf("|---|---|---:|---:|---:|\n");
  for (ca::KeyAlg alg : {ca::KeyAlg::p256, ca::KeyAlg::rsa3072}) {
    const std::string name(ca::key_alg_name(alg));
    Side file = make_side(dir / ("file-" + name), alg, "", "", pin);
    Side token = make_side(dir / ("token-" + name), alg, "pkcs11:token=bench;object=ca-" + name,
                           module, pin);
    constexpr int kRounds = 6;
    for (int round = 0; round < kRounds; ++round) {
      Side& first = round % 2 == 0 ? file : token;
      Side& second = round % 2 == 0 ? token : file;
      issue_for(first, device_key.get(), seconds / kRounds);
      issue_for(second, device_key.get(), seconds / kRounds);
      crl_for(first, revoked, seconds / kRounds / 2);
      crl_for(second, revoked, seconds / kRounds / 2);
    }
    const double file_rate = file.certificates / file.certificate_seconds;
    const double token_rate = token.certificates / token.certificate_seconds;
    std::printf("| %s | file | %.0f | %.0f | |\n", name.c_str(), file_rate,
                file.crls / file.crl_seconds);
    std::printf("| %s | SoftHSM token | %.0f | %.0f | %.2f |\n", name.c_str(), token_rate,
                token.crls / token.crl_seconds, token_rate / file_rate);
    std::fflush(stdout);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return 0;
}
