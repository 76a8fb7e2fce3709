#include "plugin/broker_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/files.h"

namespace onboard::plugin {
namespace {

constexpr std::size_t kMaxConfigBytes = 1024 * 1024;
constexpr const char* kSettings[] = {"use_identity_as_username", "use_subject_as_username"};

// Only regular files: reading a pipe or a terminal again could block the broker's start.
Result<std::string> read_config_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return make_error(Errc::io, "cannot read broker configuration " + path);
  if (!S_ISREG(st.st_mode))
    return make_error(Errc::io, "broker configuration " + path + " is not a regular file");
  return read_file(path, kMaxConfigBytes);
}

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    std::size_t start = i;
    while (i < line.size() && line[i] != ' ') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

class Scanner {
 public:
  Status scan(const std::string& path, bool main_file) {
    ONBOARD_TRY(std::string text, read_config_file(path));
    std::string_view rest = text;
    while (!rest.empty()) {
      auto end = rest.find('\n');
      std::string_view line = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
      while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
      if (line.empty() || line.front() == '#') continue;
      auto w = words(line);
      if (w.empty()) continue;
      if (w[0] == "listener") {
        end_section();
        current_ = defaults_;
        in_listener_ = true;
      } else if (w[0] == "include_dir" && main_file) {
        // Mosquitto takes the rest of the line, spaces included, after the first space(s).
        auto dir = line.substr(line.find("include_dir") + 11);
        while (!dir.empty() && dir.front() == ' ') dir.remove_prefix(1);
        ONBOARD_CHECK(scan_dir(std::string(dir)));
      } else if (w.size() >= 2) {
        for (const char* setting : kSettings) {
          if (w[0] == setting) {
            (in_listener_ ? current_ : defaults_)[setting] = w[1] == "true";
            if (!in_listener_) current_[setting] = w[1] == "true";
            where_[setting] = path;
          }
        }
      }
    }
    return ok_status();
  }

  std::optional<IdentitySetting> finish() {
    end_section();
    return found_;
  }

 private:
  Status scan_dir(const std::string& dir) {
    std::vector<std::string> files;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.size() > 5 && name.ends_with(".conf")) files.push_back(it->path().string());
    }
    if (ec) return make_error(Errc::io, "cannot list include_dir " + dir + ": " + ec.message());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) ONBOARD_CHECK(scan(f, false));
    return ok_status();
  }

  void end_section() {
    if (found_) return;
    for (const char* setting : kSettings) {
      if (current_[setting]) {
        found_ = IdentitySetting{setting, where_[setting]};
        return;
      }
    }
  }

  std::map<std::string, bool> defaults_, current_;
  std::map<std::string, std::string> where_;
  bool in_listener_ = false;
  std::optional<IdentitySetting> found_;
};

}  // namespace

std::vector<std::string> config_files_from_cmdline(std::string_view cmdline) {
  std::vector<std::string_view> args;
  while (!cmdline.empty()) {
    auto end = cmdline.find('\0');
    args.push_back(cmdline.substr(0, end));
    cmdline = end == std::string_view::npos ? std::string_view{} : cmdline.substr(end + 1);
  }
  std::vector<std::string> files;
  for (std::size_t i = 1; i + 1 < args.size(); ++i) {
    if (args[i] == "-c" || args[i] == "--config-file") files.emplace_back(args[++i]);
  }
  return files;
}

Result<std::optional<IdentitySetting>> find_identity_setting(
    const std::vector<std::string>& config_files) {
  Scanner scanner;
  for (const auto& file : config_files) ONBOARD_CHECK(scanner.scan(file, true));
  return scanner.finish();
}

}  // namespace onboard::plugin
