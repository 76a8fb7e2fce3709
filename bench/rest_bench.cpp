// Load for `onboardctl serve`: registrations (P-256 CSRs) or reads (GET /v1/devices/<id>) per
// second over real HTTP from a few client threads, and their latency. bench/run starts the
// server and turns the JSON this prints into docs/benchmarks.md.
//
//   ONBOARD_BENCH_TOKEN=onb_... onboard_rest_bench --port P --mode register|read
//       [--threads 4] [--seconds 5] [--prefix dev] [--read-ids N] [--no-keep-alive]
//
// register: each thread registers prefix-T-N devices, its CSRs made before the clock starts (the
// device makes its key, not the server). read: each thread reads the devices a register run
// left, round robin. Every non-2xx answer counts as an error, and any error fails the run.
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ca/csr.h"
#include "ca/keys.h"

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
  int read_ids = 0;  // read mode: how many ids per thread the register run made
};

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
  app.add_option("--port", o.port, "the server's port on 127.0.0.1")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("--mode", o.mode,
                 "register: POST /v1/devices with P-256 CSRs made beforehand; read: GET "
                 "/v1/devices/<id> of the devices a register run left")
      ->required()
      ->check(CLI::IsMember({"register", "read"}));
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
  const char* token = std::getenv("ONBOARD_BENCH_TOKEN");  // never on argv
  if (token == nullptr) {
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
      client.set_bearer_token_auth(token);
      client.set_read_timeout(30, 0);
      auto& result = results[static_cast<std::size_t>(t)];
      const auto& my_bodies = bodies[static_cast<std::size_t>(t)];
      while (!go.load()) std::this_thread::yield();
      for (int n = 0;; ++n) {
        const auto t0 = Clock::now();
        if (t0 >= stop) break;
        if (o.mode == "register" && n >= static_cast<int>(my_bodies.size())) break;
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
