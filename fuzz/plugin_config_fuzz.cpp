// plugin/config.h: parse_config reads the plugin_opt_ lines of mosquitto.conf. The input is one
// option a line, "key value" (the key up to the first space; a line without one has an empty
// value), as Mosquitto hands them over. Invariants: an accepted configuration names a registry, has
// positive intervals, a claim's share of the provisioning queue from 1 to the queue's size, and at
// most one credential towards the signer (a client certificate with its key, over https:// only).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plugin/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::pair<std::string, std::string>> options;
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    const auto space = line.find(' ');
    if (space == std::string_view::npos) {
      options.emplace_back(std::string(line), std::string());
    } else {
      options.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
    }
  }
  auto config = plugin::parse_config(options);
  if (!config) return 0;
  if (config->registry.target.empty()) std::abort();
  if (config->refresh_interval.count() <= 0 || config->staleness_limit.count() <= 0) std::abort();
  if (config->provision_claim_share < 1 || config->provision_claim_share > config->provision_queue)
    std::abort();
  if (!config->provision_certfile.empty() &&
      (config->provision_keyfile.empty() || !config->provision_token_file.empty() ||
       !config->provision_url.starts_with("https://")))
    std::abort();
  return 0;
}
