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

// What posix_spawn needs: argv and the environment as NULL-terminated arrays of C strings, the
// environment being the current one with `env` set on top. The pointers live as long as this.
class SpawnArgs {
 public:
  SpawnArgs(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  char* const* argv() { return argp_.data(); }
  char* const* envp() { return envp_.data(); }

 private:
  std::vector<std::string> args_, env_strings_;
  std::vector<char*> argp_, envp_;
};

// Runs argv[0] (a path) with argv, no shell, stdin from `input`, extra environment `env` on top
// of the current one. Returns after the program exits.
RunResult run(const std::vector<std::string>& argv, const std::string& input = {},
              const std::map<std::string, std::string>& env = {});

}  // namespace onboard::test
