// Command lines of the Google Benchmark programs (issuance_bench, registry_bench): CLI11 parses
// the program's own options and hands every other argument to Google Benchmark, whose flags
// (--benchmark_filter=, --benchmark_min_time=, --benchmark_out=, ...) are its own business.
// Includes cli_checks.h, the validators for the programs' own options.
#pragma once

#include <benchmark/benchmark.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "cli_checks.h"

namespace bench_cli {

// Parses APP, letting unknown arguments through. --help prints APP's help, then Google
// Benchmark's flags. Returns main's exit code when the program should end (help, or a bad
// option), -1 when it should go on.
inline int parse(CLI::App& app, int argc, char** argv) {
  app.allow_extras();
  app.footer(
      "Every other argument goes to Google Benchmark, e.g. --benchmark_filter=REGEX, "
      "--benchmark_repetitions=N, --benchmark_min_time=SECONDS, --benchmark_out=FILE, "
      "--benchmark_out_format=json; its flags are listed below with --help.");
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help() << "\nGoogle Benchmark's flags:\n" << std::flush;
    std::string help = "--help";
    char* args[] = {argv[0], help.data(), nullptr};
    int count = 2;
    benchmark::Initialize(&count, args);  // prints its usage and exits
    return 0;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
}

// Runs the registered benchmarks with the arguments APP left over; returns main's exit code.
inline int run_benchmarks(const CLI::App& app, char* argv0) {
  std::vector<std::string> rest = app.remaining();
  std::vector<char*> args{argv0};
  for (auto& arg : rest) args.push_back(arg.data());
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench_cli
