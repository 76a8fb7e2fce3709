// Load for `onboardctl serve`: registrations (P-256 CSRs) or reads (GET /v1/devices/<id>) per
// second over real HTTP from a few client threads, and their latency. bench/run starts the
// server and turns the JSON this prints into docs/benchmarks.md.
//
//   ONBOARD_BENCH_TOKEN=onb_... onboard_rest_bench --port P --mode register|read
//       [--threads 4] [--seconds 5] [--prefix dev] [--read-ids N] [--no-keep-alive]
//   onboard_rest_bench --port P --mode ocsp --ocsp-request FILE.der | --mode crl
//   onboard_rest_bench --mode ocsp_sign
//
// register: each thread registers prefix-T-N devices, its CSRs made before the clock starts (the
// device makes its key, not the server). read: each thread reads the devices a register run
// left, round robin. ocsp: POST /ocsp with one DER request (e.g. `openssl ocsp -reqout`), every
// answer looked up and signed by the server; crl: GET /crl, the CRL file as it is. ocsp_sign: no
// server, the raw cost of one signed OCSP answer (ca::build_ocsp_response, P-256 responder) on
// each thread. Every non-2xx answer counts as an error (for ocsp, so does any OCSP status other
// than successful), and any error fails the run.
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ca/certificate.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "ca/ocsp.h"
#include "core/files.h"

#include "cli_checks.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int port = 0;
  std::string mode;
  int threads = 4;
  double seconds = 5;
  std::string prefix = "dev";
  bool keep_alive = true;
  int read_ids = 0;          // read mode: how many ids per thread the register run made
  std::string ocsp_request;  // ocsp mode: the DER request file
};

// ocsp_sign mode: a root and its delegated responder, in memory.
struct SignFixture {
  onboard::ossl::Ptr<X509> root;
  onboard::ca::OcspResponder responder;
  onboard::ca::OcspRequest request;
};

onboard::Result<SignFixture> make_sign_fixture() {
  using namespace onboard;
  const UnixTime now = unix_now();
  ONBOARD_TRY(auto root_key, ca::generate_key(ca::KeyAlg::p256));
  ca::KeySigner signer(std::move(root_key));
  ca::CertificateRequest root;
  root.profile = ca::Profile::root_ca;
  root.common_name = "Bench Root";
  root.public_key = signer.public_key();
  root.not_before = now - 60;
  root.not_after = now + 86400;
  ONBOARD_TRY(auto root_cert, ca::issue_certificate(root, nullptr, signer));
  ONBOARD_TRY(auto key, ca::generate_key(ca::KeyAlg::p256));
  ca::CertificateRequest responder;
  responder.profile = ca::Profile::ocsp_responder;
  responder.common_name = "Bench OCSP Responder";
  responder.public_key = key.get();
  responder.not_before = now - 60;
  responder.not_after = now + 3600;
  ONBOARD_TRY(auto responder_cert, ca::issue_certificate(responder, root_cert.get(), signer));
  ossl::Ptr<OCSP_REQUEST> req(OCSP_REQUEST_new());
  OCSP_request_add0_id(req.get(),
                       OCSP_cert_to_id(EVP_sha1(), responder_cert.get(), root_cert.get()));
  OCSP_request_add1_nonce(req.get(), nullptr, 16);
  unsigned char* der = nullptr;
  const int len = i2d_OCSP_REQUEST(req.get(), &der);
  const std::string bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  ONBOARD_TRY(auto parsed, ca::parse_ocsp_request(bytes));
  return SignFixture{std::move(root_cert),
                     ca::OcspResponder{std::move(responder_cert), std::move(key)},
                     std::move(parsed)};
}

bool ocsp_successful(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OCSP_RESPONSE* response = d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size()));
  const bool ok =
      response != nullptr && OCSP_response_status(response) == OCSP_RESPONSE_STATUS_SUCCESSFUL;
  OCSP_RESPONSE_free(response);
  return ok;
}

struct ThreadResult {
  std::vector<double> latencies_us;
  long errors = 0;
};

std::string device_id(const Options& o, int thread, int n) {
  return o.prefix + "-" + std::to_string(thread) + "-" + std::to_string(n);
}

double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  std::nth_element(values.begin(), values.begin() + static_cast<long>(index), values.end());
  return values[index];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "HTTP load for `onboardctl serve` on 127.0.0.1: registrations or reads per second and their "
      "latency, printed as one JSON object. The bearer token is read from the environment "
      "variable ONBOARD_BENCH_TOKEN, never from the command line."};
  app.add_option("--port", o.port, "the server's port on 127.0.0.1 (not for ocsp_sign)")
      ->check(CLI::Range(1, 65535));
  app.add_option("--mode", o.mode,
                 "register: POST /v1/devices with P-256 CSRs made beforehand; read: GET "
                 "/v1/devices/<id> of the devices a register run left; ocsp: POST /ocsp; crl: "
                 "GET /crl; ocsp_sign: signed OCSP answers in-process, no server")
      ->required()
      ->check(CLI::IsMember({"register", "read", "ocsp", "crl", "ocsp_sign"}));
  app.add_option("--ocsp-request", o.ocsp_request, "ocsp mode: the DER OCSP request to send");
  app.add_option(
         "--threads", o.threads,
         "client threads, each with its own HTTP client (and connection, unless --no-keep-alive)")
      ->capture_default_str()
      ->check(bench_cli::whole_number(1));
  app.add_option("--seconds", o.seconds, "how long to run")
      ->capture_default_str()
      ->check(bench_cli::positive_number());
  app.add_option("--prefix", o.prefix, "device ids are PREFIX-THREAD-N")->capture_default_str();
  app.add_option("--read-ids", o.read_ids,
                 "read mode: ids per thread the register run made (required for read)")
      ->check(bench_cli::whole_number(1));
  bool no_keep_alive = false;
  app.add_flag("--no-keep-alive", no_keep_alive, "a new connection per request");
  CLI11_PARSE(app, argc, argv);
  o.keep_alive = !no_keep_alive;
  if (o.mode == "read" && o.read_ids < 1) {
    std::cerr << "rest_bench: --mode read needs --read-ids\n";
    return 2;
  }
  const bool public_route = o.mode == "ocsp" || o.mode == "crl" || o.mode == "ocsp_sign";
  if (o.mode != "ocsp_sign" && o.port == 0) {
    std::cerr << "rest_bench: --port is required for --mode " << o.mode << "\n";
    return 2;
  }
  std::string ocsp_body;
  if (o.mode == "ocsp") {
    auto body = onboard::read_file(o.ocsp_request, onboard::ca::kMaxOcspRequestBytes);
    if (!body.ok()) {
      std::cerr << "rest_bench: --ocsp-request: " << body.error().message << "\n";
      return 2;
    }
    ocsp_body = std::move(body).value();
  }
  std::optional<SignFixture> fixture;
  if (o.mode == "ocsp_sign") {
    auto made = make_sign_fixture();
    if (!made.ok()) {
      std::cerr << "rest_bench: " << made.error().message << "\n";
      return 1;
    }
    fixture.emplace(std::move(made).value());
  }
  const char* token = std::getenv("ONBOARD_BENCH_TOKEN");  // never on argv
  if (token == nullptr && !public_route) {
    std::cerr << "rest_bench: set ONBOARD_BENCH_TOKEN to an operator token\n";
    return 2;
  }

  // Register mode: enough CSRs for the run at a generous rate, made before timing starts.
  const int csrs_per_thread = o.mode == "register" ? static_cast<int>(o.seconds * 1500) + 50 : 0;
  std::vector<std::vector<std::string>> bodies(static_cast<std::size_t>(o.threads));
  for (int t = 0; t < o.threads; ++t) {
    for (int n = 0; n < csrs_per_thread; ++n) {
      const std::string id = device_id(o, t, n);
      auto key = onboard::ca::generate_key(onboard::ca::KeyAlg::p256);
      auto csr = key.ok() ? onboard::ca::make_csr(key->get(), id)
                          : onboard::Result<onboard::ossl::Ptr<X509_REQ>>(key.error());
      if (!csr.ok()) {
        std::cerr << "rest_bench: cannot make a CSR: " << csr.error().message << "\n";
        return 1;
      }
      bodies[static_cast<std::size_t>(t)].push_back(nlohmann::json{
          {"id", id},
          {"type", "bench"},
          {"csr", onboard::ca::csr_to_pem(csr->get())}}.dump());
    }
  }

  std::vector<ThreadResult> results(static_cast<std::size_t>(o.threads));
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  Clock::time_point start, stop;
  for (int t = 0; t < o.threads; ++t) {
    workers.emplace_back([&, t] {
      httplib::Client client("127.0.0.1", o.port);
      client.set_keep_alive(o.keep_alive);
      client.set_tcp_nodelay(true);
      if (token != nullptr) client.set_bearer_token_auth(token);
      client.set_read_timeout(30, 0);
      auto& result = results[static_cast<std::size_t>(t)];
      const auto& my_bodies = bodies[static_cast<std::size_t>(t)];
      while (!go.load()) std::this_thread::yield();
      for (int n = 0;; ++n) {
        const auto t0 = Clock::now();
        if (t0 >= stop) break;
        if (o.mode == "register" && n >= static_cast<int>(my_bodies.size())) break;
        if (o.mode == "ocsp_sign") {
          const onboard::ca::OcspAnswer answer[] = {{}};
          const auto now = onboard::unix_now();
          auto der = onboard::ca::build_ocsp_response(fixture->request, answer, fixture->responder,
                                                      now, now + 3600);
          if (!der.ok()) {
            ++result.errors;
            continue;
          }
          result.latencies_us.push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
          continue;
        }
        if (o.mode == "ocsp" || o.mode == "crl") {
          auto r = o.mode == "ocsp" ? client.Post("/ocsp", ocsp_body, "application/ocsp-request")
                                    : client.Get("/crl");
          const auto t1 = Clock::now();
          if (!r || r->status != 200 || (o.mode == "ocsp" && !ocsp_successful(r->body))) {
            if (result.errors++ == 0)
              std::cerr << "rest_bench: "
                        << (r ? std::to_string(r->status) : httplib::to_string(r.error())) << "\n";
            continue;
          }
          result.latencies_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
          continue;
        }
        auto r = o.mode == "register"
                     ? client.Post("/v1/devices", my_bodies[static_cast<std::size_t>(n)],
                                   "application/json")
                     : client.Get(("/v1/devices/" + device_id(o, t, n % o.read_ids)).c_str());
        const auto t1 = Clock::now();
        if (!r || r->status / 100 != 2) {
          if (result.errors++ == 0)
            std::cerr << "rest_bench: "
                      << (r ? std::to_string(r->status) + " " + r->body
                            : httplib::to_string(r.error()))
                      << "\n";
          continue;
        }
        result.latencies_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
    });
  }
  start = Clock::now();
  stop =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  go.store(true);
  for (auto& w : workers) w.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> all;
  long errors = 0;
  nlohmann::json per_thread = nlohmann::json::array();
  for (const auto& r : results) {
    all.insert(all.end(), r.latencies_us.begin(), r.latencies_us.end());
    errors += r.errors;
    per_thread.push_back(r.latencies_us.size());
  }
  const auto count = all.size();
  nlohmann::json out{{"mode", o.mode},
                     {"threads", o.threads},
                     {"keep_alive", o.keep_alive},
                     {"seconds", elapsed},
                     {"requests", count},
                     {"errors", errors},
                     {"per_second", static_cast<double>(count) / elapsed},
                     {"per_thread", per_thread},
                     {"p50_us", percentile(all, 0.50)},
                     {"p99_us", percentile(all, 0.99)},
                     {"max_us", all.empty() ? 0.0 : *std::max_element(all.begin(), all.end())}};
  std::cout << out.dump() << "\n";
  return errors == 0 && count > 0 ? 0 : 1;
}
