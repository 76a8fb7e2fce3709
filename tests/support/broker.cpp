#include "tests/support/broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace onboard::test {
namespace {

bool can_connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("cannot bind a loopback port");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<std::string> faketime_environment(const std::filesystem::path& file,
                                              const std::string& preload) {
  const std::string lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
  const char* asan = std::getenv("ASAN_OPTIONS");
  // libfaketime first: behind the ASan runtime it hangs an uninstrumented program at start. ASan
  // then has to be told not to insist on coming first (an ASan-built onboardctl needs the same).
  return {"LD_PRELOAD=" + (preload.empty() ? lib : lib + ":" + preload),
          "ASAN_OPTIONS=" + std::string(asan != nullptr ? asan : "") + ":verify_asan_link_order=0",
          // Read on every clock call (no cache), so that a move takes effect at once.
          "FAKETIME_TIMESTAMP_FILE=" + file.string(), "FAKETIME_NO_CACHE=1",
          // Only the wall clock moves: the plugin's staleness and poll timers stay real.
          "FAKETIME_DONT_FAKE_MONOTONIC=1", "DONT_FAKE_MONOTONIC=1"};
}

Broker::Broker(const std::filesystem::path& dir, const BrokerOptions& options)
    : log_path_(dir / "mosquitto.log") {
  std::string config_text;
  port_ = free_port();
  if (options.plain_listener) plain_port_ = free_port();
  const auto conf = dir / "mosquitto.conf";
  if (!options.config_text.empty()) {
    config_text = options.config_text;
    for (auto at = config_text.find("{port}"); at != std::string::npos;
         at = config_text.find("{port}"))
      config_text.replace(at, 6, std::to_string(port_));
    std::ofstream(conf) << config_text;
  } else {
    std::stringstream out;
    auto plugin_lines = [&] {
      out << "plugin " << options.plugin.string() << "\n"
          << "plugin_opt_registry " << options.registry.string() << "\n";
      for (const auto& opt : options.plugin_options) out << "plugin_opt_" << opt << "\n";
    };
    out << "per_listener_settings " << (options.per_listener_settings ? "true" : "false") << "\n"
        << "allow_anonymous false\n"
        << "log_dest stderr\n"
        << "log_type all\n";
    for (const auto& line : options.extra_lines) out << line << "\n";
    // A plugin line before the first listener would, with per-listener settings, create Mosquitto's
    // default listener on every interface: keep it after the loopback listener in that case.
    if (!options.per_listener_settings) plugin_lines();
    out << "listener " << port_ << " 127.0.0.1\n";
    if (options.per_listener_settings) plugin_lines();
    out << "cafile " << options.cafile.string() << "\n"
        << "certfile " << options.certfile.string() << "\n"
        << "keyfile " << options.keyfile.string() << "\n"
        << "require_certificate true\n"
        << "use_identity_as_username " << (options.use_identity_as_username ? "true" : "false")
        << "\n"
        << "use_subject_as_username " << (options.use_subject_as_username ? "true" : "false")
        << "\n";
    if (options.plain_listener) out << "listener " << plain_port_ << " 127.0.0.1\n";
    config_text = out.str();
    std::ofstream(conf) << config_text;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  int pipe_fds[2] = {-1, -1};
  if (options.config_on_stdin) {
    // A configuration is far below a pipe's capacity: write it all, then let mosquitto read it.
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0 ||
        ::write(pipe_fds[1], config_text.data(), config_text.size()) !=
            static_cast<ssize_t>(config_text.size())) {
      throw std::runtime_error("cannot pipe the configuration");
    }
    ::close(pipe_fds[1]);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], 0);
  }
  std::string program = "/usr/sbin/mosquitto", c = "-c",
              conf_path = options.config_on_stdin ? "/dev/stdin" : conf.string();
  char* argv[] = {program.data(), c.data(), conf_path.data(), nullptr};
  // Set on top of the current environment, replacing a variable of the same name.
  std::vector<std::string> overrides;
  if (!options.faketime_file.empty()) {
    overrides = faketime_environment(options.faketime_file, options.preload);
  } else if (!options.preload.empty()) {
    overrides.push_back("LD_PRELOAD=" + options.preload);
    const char* asan = std::getenv("ASAN_OPTIONS");
    overrides.push_back("ASAN_OPTIONS=" + std::string(asan != nullptr ? asan : ""));
  }
  if (!options.preload.empty()) {
    // Mosquitto's own allocations at exit are not the plugin's to answer for.
    for (auto& o : overrides)
      if (o.starts_with("ASAN_OPTIONS=")) o += ":detect_leaks=0";
  }
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& o : overrides) replaced = replaced || o.starts_with(name);
    if (!replaced) env_strings.push_back(entry);
  }
  env_strings.insert(env_strings.end(), overrides.begin(), overrides.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (pipe_fds[0] >= 0) ::close(pipe_fds[0]);
  if (rc != 0) throw std::runtime_error("cannot start mosquitto");

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return;
    }
    if (can_connect(port_) && (plain_port_ == 0 || can_connect(plain_port_))) {
      started_ = true;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Broker::~Broker() { stop(); }

void Broker::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 250; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void Broker::hangup() {
  if (pid_ > 0) ::kill(pid_, SIGHUP);
}

int Broker::wait_exit(int timeout_ms) {
  if (pid_ <= 0) return exit_code_;
  for (int waited = 0; waited < timeout_ms; waited += 20) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return exit_code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string Broker::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Broker::wait_for_log(const std::string& text, int timeout_ms) const {
  for (int waited = 0; waited <= timeout_ms; waited += 20) {
    if (log().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace onboard::test
