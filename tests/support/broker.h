// A real Mosquitto broker with the built plugin, on a free loopback port, for one test.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace onboard::test {

// A free TCP port on 127.0.0.1 (bound and released; the window for a clash is tiny).
int free_port();

struct BrokerOptions {
  std::filesystem::path plugin;  // the built mosquitto_onboard.so
  std::filesystem::path registry;
  std::filesystem::path cafile, certfile, keyfile;
  std::vector<std::string> plugin_options;  // extra "key value" lines, without "plugin_opt_"
  std::vector<std::string> extra_lines;     // extra global configuration lines
  // Plugins then belong to the listener they follow (and get no TICK): the plugin must refuse it.
  bool per_listener_settings = false;
  // Libraries to preload into the broker: the sanitizer runtimes when the plugin is instrumented.
  std::string preload;
  // When set, the broker runs with libfaketime, its wall clock shifted by what this file says
  // (e.g. "+8d"; re-read at every clock call, so a test can move a running broker ahead). The
  // monotonic clock is left alone.
  std::filesystem::path faketime_file;
  // When set, the whole configuration (e.g. made from mosquitto.conf.example), with `{port}` for
  // the listener's port; the fields above other than `preload` and `faketime_file` are then unused.
  std::string config_text;
  // The mTLS listener's identity settings (both false is the supported configuration).
  bool use_identity_as_username = false;
  bool use_subject_as_username = false;
  // A second listener, plain TCP on another loopback port, for username/password clients.
  bool plain_listener = false;
  // Hand the configuration to mosquitto on a pipe (`-c /dev/stdin`) instead of a file, so that
  // nothing but mosquitto itself can read it.
  bool config_on_stdin = false;
};

// The libfaketime environment for a process whose wall clock follows `file` (see faketime_file).
std::vector<std::string> faketime_environment(const std::filesystem::path& file,
                                              const std::string& preload = {});

class Broker {
 public:
  // Writes the configuration into `dir` and starts mosquitto. Use started() to see whether it
  // came up (listening) or exited (a refused configuration).
  Broker(const std::filesystem::path& dir, const BrokerOptions& options);
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;
  ~Broker();

  bool started() const { return started_; }
  int port() const { return port_; }
  int plain_port() const { return plain_port_; }  // with BrokerOptions::plain_listener
  // Waits for the broker to exit (after a refused start) and returns its exit code.
  int wait_exit(int timeout_ms = 5000);
  std::string log() const;
  // Waits until the log contains `text`.
  bool wait_for_log(const std::string& text, int timeout_ms = 5000) const;
  void stop();
  // SIGHUP: Mosquitto re-reads its configuration and re-checks every client.
  void hangup();

 private:
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
  int plain_port_ = 0;
  bool started_ = false;
  int exit_code_ = -1;
};

}  // namespace onboard::test
