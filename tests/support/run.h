// Runs a program the way a user would, and captures what it printed.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace onboard::test {

struct RunResult {
  int exit_code = -1;  // the exit status, or 128 + signal number
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with argv, no shell, stdin from `input`, extra environment `env` on top
// of the current one. Returns after the program exits.
RunResult run(const std::vector<std::string>& argv, const std::string& input = {},
              const std::map<std::string, std::string>& env = {});

}  // namespace onboard::test
