// Issuance benchmark (issue 2): certificates per second through the project's issuance path, each
// measured beside the raw OpenSSL cost of the same key generation and signature.
//
// Why one benchmark runs both sides: the machine is small and shared, so two benchmarks run
// minutes apart see different noise. Here every iteration runs the project path and the raw path
// back to back (alternating which goes first), so each repetition yields a ratio from the same
// seconds of machine time. The time of each side is the thread's CPU time: slices lost to other
// processes on the VM do not count against either side.
//
// The raw side is what a hand-written CA would minimally do with OpenSSL: serial, names, validity,
// public key, X509_sign with the same CA key. It has no extensions, no input checks and no PEM
// output; the difference between the two is the cost of the project's profile and safety checks.
//
// Counters per repetition: project_per_s, raw_per_s (certificates per CPU-second), ratio
// (project rate / raw rate, the issue's target is >= 0.8) and the CPU seconds of each side.
#include <benchmark/benchmark.h>
#include <openssl/pem.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ca/authority.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/files.h"

#include "benchmark_main.h"

namespace {

using onboard::ca::KeyAlg;
namespace ossl = onboard::ossl;

constexpr onboard::UnixTime kDeviceValidity = 365 * 86400;
// Enough distinct CSRs that nothing is served from a cache, few enough that making the RSA ones
// (about 0.25 s each) keeps start-up short.
constexpr std::size_t kCsrPoolSize = 8;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "issuance_bench: %s\n", message.c_str());
  std::exit(2);
}

std::int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// A CA made through the product's own path (Authority::create, no intermediate), and the same CA
// key loaded a second time for the raw side, so both sides sign with equal keys but neither
// shares the other's precomputed state.
struct Ca {
  onboard::ca::Authority authority;
  ossl::Ptr<EVP_PKEY> raw_key;
  onboard::UnixTime now = 0;
};

const Ca& ca_for(onboard::ca::KeyAlg alg) {
  static std::map<onboard::ca::KeyAlg, std::unique_ptr<Ca>> cache;
  auto found = cache.find(alg);
  if (found != cache.end()) return *found->second;

  std::string dir_template =
      (std::filesystem::temp_directory_path() / "onboard-bench-XXXXXX").string();
  if (::mkdtemp(dir_template.data()) == nullptr) die("cannot create a temporary directory");
  const std::filesystem::path dir = dir_template;

  onboard::ca::CaInitOptions options;
  options.root_key_alg = alg;
  // A deployment that revokes publishes a CRL, so device certificates carry its URL: the sixth
  // extension of the profile, and the costlier case to measure.
  options.crl_url = "http://127.0.0.1:8080/crl.pem";
  const onboard::UnixTime now = onboard::unix_now();
  auto authority = onboard::ca::Authority::create(dir, options, now);
  std::string problem;
  ossl::Ptr<EVP_PKEY> key;
  if (!authority.ok()) {
    problem = "CA creation failed: " + authority.error().message;
  } else if (auto pem = onboard::read_file(authority->paths().root_key); !pem.ok()) {
    problem = pem.error().message;
  } else if (auto loaded = onboard::ca::private_key_from_pem(pem.value()); !loaded.ok()) {
    problem = loaded.error().message;
  } else {
    key = std::move(loaded).value();
  }
  // The Authority holds everything it needs in memory; the files were only the way to make it.
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  if (!problem.empty()) die(problem);

  auto ca = std::make_unique<Ca>(Ca{std::move(authority).value(), std::move(key), now});
  return *cache.emplace(alg, std::move(ca)).first->second;
}

const std::vector<std::string>& csr_pool(onboard::ca::KeyAlg alg) {
  static std::map<onboard::ca::KeyAlg, std::vector<std::string>> cache;
  auto& pool = cache[alg];
  for (std::size_t i = pool.size(); i < kCsrPoolSize; ++i) {
    auto key = onboard::ca::generate_key(alg);
    if (!key.ok()) die(key.error().message);
    auto csr = onboard::ca::make_csr(key->get(), "csr-device-" + std::to_string(i));
    if (!csr.ok()) die(csr.error().message);
    pool.push_back(onboard::ca::csr_to_pem(csr->get()));
  }
  return pool;
}

// The error of the side that failed; SkipWithError keeps the pointer, so the text lives here.
std::string& last_error() {
  static std::string text;
  return text;
}

bool fail(std::string message) {
  last_error() = std::move(message);
  return false;
}

std::string device_id(std::int64_t n) { return "device-" + std::to_string(n); }

// ---- the project's path ------------------------------------------------------------------------

bool issue_device(const Ca& ca, std::string id, const EVP_PKEY* key) {
  onboard::ca::CertificateRequest request;
  request.profile = onboard::ca::Profile::device;
  request.common_name = std::move(id);
  request.public_key = key;
  request.not_before = ca.now;
  request.not_after = ca.now + kDeviceValidity;
  auto issued = ca.authority.issue(std::move(request));
  if (!issued.ok()) return fail("project issue: " + issued.error().message);
  benchmark::DoNotOptimize(issued->pem.data());
  return true;
}

bool project_keygen_issue(const Ca& ca, onboard::ca::KeyAlg device_alg, std::int64_t n) {
  auto key = onboard::ca::generate_key(device_alg);
  if (!key.ok()) return fail("project keygen: " + key.error().message);
  return issue_device(ca, device_id(n), key->get());
}

bool project_csr_issue(const Ca& ca, const std::string& pem) {
  auto csr = onboard::ca::read_device_csr(pem);
  if (!csr.ok()) return fail("project CSR: " + csr.error().message);
  return issue_device(ca, std::move(csr->device_id), csr->public_key.get());
}

// ---- raw OpenSSL -------------------------------------------------------------------------------

// The least a CA must do: version, 128-bit random serial, subject, issuer, validity, key, sign.
bool raw_sign(const Ca& ca, EVP_PKEY* subject_key, const X509_NAME* subject) {
  ossl::Ptr<X509> cert(X509_new());
  ossl::Ptr<BIGNUM> serial(BN_new());
  if (!cert || !serial || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      BN_rand(serial.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_set_subject_name(cert.get(), subject) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.authority.issuer())) != 1 ||
      ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(ca.now)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()),
                    static_cast<time_t>(ca.now + kDeviceValidity)) == nullptr ||
      X509_set_pubkey(cert.get(), subject_key) != 1 ||
      X509_sign(cert.get(), ca.raw_key.get(), EVP_sha256()) <= 0) {
    return fail("raw sign failed");
  }
  benchmark::DoNotOptimize(cert.get());
  return true;
}

bool raw_keygen_sign(const Ca& ca, onboard::ca::KeyAlg device_alg, std::int64_t n) {
  ossl::Ptr<EVP_PKEY> key(device_alg == onboard::ca::KeyAlg::rsa2048
                              ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048})
                              : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ossl::Ptr<X509_NAME> name(X509_NAME_new());
  const std::string id = device_id(n);
  if (!key || !name ||
      X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(id.data()),
                                 static_cast<int>(id.size()), -1, 0) != 1) {
    return fail("raw keygen failed");
  }
  return raw_sign(ca, key.get(), name.get());
}

// Parsing the PEM is counted on this side too: a CA receives a CSR as text either way.
bool raw_csr_sign(const Ca& ca, const std::string& pem) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<X509_REQ> req(bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr)
                              : nullptr);
  EVP_PKEY* key = req ? X509_REQ_get0_pubkey(req.get()) : nullptr;
  if (key == nullptr || X509_REQ_verify(req.get(), key) != 1) return fail("raw CSR check failed");
  return raw_sign(ca, key, X509_REQ_get_subject_name(req.get()));
}

// ---- the paired loop ---------------------------------------------------------------------------

template <class Project, class Raw>
void run_paired(benchmark::State& state, Project project, Raw raw) {
  std::int64_t project_ns = 0;
  std::int64_t raw_ns = 0;
  std::int64_t n = 0;
  auto timed = [&n](auto& side, std::int64_t& total) {
    const std::int64_t start = thread_cpu_ns();
    const bool ok = side(n);
    total += thread_cpu_ns() - start;
    return ok;
  };
  for (auto _ : state) {
    // Alternate the order so that neither side systematically inherits the other's warm caches.
    const bool ok = (n % 2 == 0) ? timed(project, project_ns) && timed(raw, raw_ns)
                                 : timed(raw, raw_ns) && timed(project, project_ns);
    if (!ok) {
      state.SkipWithError(last_error().c_str());
      break;
    }
    ++n;
  }
  if (n == 0 || project_ns == 0 || raw_ns == 0) return;
  const double project_s = static_cast<double>(project_ns) / 1e9;
  const double raw_s = static_cast<double>(raw_ns) / 1e9;
  state.counters["project_per_s"] = static_cast<double>(n) / project_s;
  state.counters["raw_per_s"] = static_cast<double>(n) / raw_s;
  state.counters["ratio"] = raw_s / project_s;
  state.counters["project_cpu_s"] = project_s;
  state.counters["raw_cpu_s"] = raw_s;
}

std::string alg_name(onboard::ca::KeyAlg alg) {
  return std::string(onboard::ca::key_alg_name(alg));
}

void register_benchmarks(double rsa_keygen_min_time) {
  // rsa3072 is CaInitOptions' default root key, i.e. what the product signs with; p256 is the
  // fast alternative. Device keys: rsa2048 (the default) and p256.
  const onboard::ca::KeyAlg ca_algs[] = {onboard::ca::KeyAlg::rsa3072, onboard::ca::KeyAlg::p256};
  const onboard::ca::KeyAlg device_algs[] = {onboard::ca::KeyAlg::rsa2048,
                                             onboard::ca::KeyAlg::p256};
  for (onboard::ca::KeyAlg device : device_algs) {
    for (onboard::ca::KeyAlg ca_alg : ca_algs) {
      const std::string name =
          "keygen_issue/device:" + alg_name(device) + "/ca:" + alg_name(ca_alg);
      auto* bm =
          benchmark::RegisterBenchmark(name.c_str(), [device, ca_alg](benchmark::State& state) {
            const Ca& ca = ca_for(ca_alg);
            run_paired(
                state, [&](std::int64_t n) { return project_keygen_issue(ca, device, n); },
                [&](std::int64_t n) { return raw_keygen_sign(ca, device, n); });
          });
      // RSA key generation takes 60 ms to 1 s per key: it needs far more time for a stable mean.
      if (device == onboard::ca::KeyAlg::rsa2048 && rsa_keygen_min_time > 0)
        bm->MinTime(rsa_keygen_min_time);
    }
  }
  for (onboard::ca::KeyAlg device : device_algs) {
    for (onboard::ca::KeyAlg ca_alg : ca_algs) {
      const std::string name = "csr_issue/device:" + alg_name(device) + "/ca:" + alg_name(ca_alg);
      benchmark::RegisterBenchmark(name.c_str(), [device, ca_alg](benchmark::State& state) {
        const Ca& ca = ca_for(ca_alg);
        const auto& pool = csr_pool(device);
        run_paired(
            state, [&](std::int64_t n) { return project_csr_issue(ca, pool[n % pool.size()]); },
            [&](std::int64_t n) { return raw_csr_sign(ca, pool[n % pool.size()]); });
      });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Issuance benchmark (issue 2): certificates per CPU-second through the project's issuance "
      "path, each beside raw OpenSSL doing the same key generation and signature."};
  double rsa_keygen_min_time = 0;
  app.add_option("--rsa_keygen_min_time", rsa_keygen_min_time,
                 "minimum seconds per repetition of the RSA key generation benchmarks, whose keys "
                 "take 60 ms to 1 s each (0: --benchmark_min_time as for the others)")
      ->capture_default_str()
      ->check(bench_cli::positive_number(true));
  if (const int rc = bench_cli::parse(app, argc, argv); rc >= 0) return rc;

  register_benchmarks(rsa_keygen_min_time);
  return bench_cli::run_benchmarks(app, argv[0]);
}
