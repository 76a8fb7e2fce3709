// A program left running in the background for a test (a server), stopped when the test ends.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace onboard::test {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with argv, no shell; stdout is read through read_line(), stderr goes
  // to `stderr_path`. Extra environment `env` on top of the current one.
  ChildProcess(const std::vector<std::string>& argv, const std::filesystem::path& stderr_path,
               const std::map<std::string, std::string>& env = {});
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // SIGKILL and reap, if still running

  // The next line on its stdout, without the newline; "" on EOF or after timeout_ms.
  std::string read_line(int timeout_ms = 10000);
  // Sends `signal` and waits up to timeout_ms for the exit: the exit status, 128 + signal when
  // killed by one, or -1 when it did not exit in time (it is then killed).
  int stop(int signal, int timeout_ms = 5000);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffered_;
};

}  // namespace onboard::test
