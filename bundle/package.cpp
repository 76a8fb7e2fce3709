#include "bundle/package.h"

#include <cctype>
#include <charconv>
#include <set>

#include "bundle/manifest.h"
#include "core/identity.h"

namespace onboard::bundle {
namespace {

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-';
}

}  // namespace

Result<BrokerAddress> parse_broker_address(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::invalid_input, "broker address: " + why);
  };
  BrokerAddress address;
  std::string_view host = text;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return bad("an IPv6 address needs its closing ']'");
    host = text.substr(0, close + 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':')) return bad("expected ':PORT' after ']'");
      port = rest.substr(1);
    }
    const auto inner = host.substr(1, host.size() - 2);
    if (inner.empty()) return bad("the IPv6 address is empty");
    for (char c : inner) {
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'))
        return bad("an IPv6 address holds only hex digits, ':' and '.'");
    }
  } else {
    if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
    }
    if (host.empty()) return bad("the host is empty");
    if (host.size() > 253) return bad("the host name is longer than 253 characters");
    for (char c : host) {
      if (!is_host_char(c)) return bad("the host may hold only letters, digits, '.' and '-'");
    }
    if (host.starts_with('-')) return bad("the host cannot start with '-'");
  }
  address.host = std::string(host);
  if (!port.empty() || text.ends_with(':')) {
    int value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535)
      return bad("the port must be a number from 1 to 65535");
    address.port = value;
  }
  return address;
}

std::string connect_example(std::string_view device_id, const BrokerAddress& broker, bool has_key) {
  const std::string id(device_id);
  const std::string host =
      broker.host.starts_with('[') ? broker.host.substr(1, broker.host.size() - 2) : broker.host;
  const std::string port = std::to_string(broker.port);
  const std::string key = has_key ? id + "/client.key" : "YOUR-KEY.pem";
  std::string text;
  text += "# Connecting " + id + " to " + host + ":" + port + " with mutual TLS.\n";
  text += "# Run from the directory the bundle was extracted to. The MQTT client id must be the\n";
  text += "# device id, which is also the certificate's CN; the broker refuses anything else.\n";
  if (!has_key) {
    text +=
        "# The device made its own key (it sent a CSR): use that key where YOUR-KEY.pem "
        "stands.\n";
  }
  text += "# By default a device may publish, subscribe and receive below devices/" + id + "/.\n";
  text += "\nmosquitto_sub -h " + host + " -p " + port + " --cafile ca-chain.pem --cert " + id +
          "/client.crt --key " + key + " -i " + id + " -t 'devices/" + id + "/#' -v\n";
  text += "\nmosquitto_pub -h " + host + " -p " + port + " --cafile ca-chain.pem --cert " + id +
          "/client.crt --key " + key + " -i " + id + " -t 'devices/" + id +
          "/telemetry' -m hello -q 1\n";
  text +=
      "# One connection per client id: a second one with the same id replaces the first, so\n"
      "# run these one at a time.\n";
  text += "\n# Python, paho-mqtt 1.6:\n";
  text += "import ssl\n";
  text += "import paho.mqtt.client as mqtt\n\n";
  text += "client = mqtt.Client(client_id=\"" + id + "\", protocol=mqtt.MQTTv311)\n";
  text += "client.tls_set(ca_certs=\"ca-chain.pem\", certfile=\"" + id + "/client.crt\",\n";
  text += "               keyfile=\"" + key + "\", tls_version=ssl.PROTOCOL_TLS_CLIENT)\n";
  text += "client.connect(\"" + host + "\", " + port + ")\n";
  text += "client.loop_start()\n";
  text += "client.publish(\"devices/" + id + "/telemetry\", \"hello\", qos=1).wait_for_publish()\n";
  text += "client.loop_stop()\n";
  text += "client.disconnect()\n";
  return text;
}

Result<std::vector<BundleFile>> bundle_files(std::vector<DeviceCredentials> devices,
                                             std::string_view chain_pem,
                                             const BrokerAddress& broker, UnixTime created_at) {
  if (devices.empty()) return make_error(Errc::invalid_input, "a bundle needs at least one device");
  if (chain_pem.empty()) return make_error(Errc::invalid_input, "the CA chain is empty");
  std::set<std::string> seen;
  std::vector<BundleFile> files;
  std::vector<ManifestDevice> listed;
  files.push_back({"ca-chain.pem", Secret(chain_pem), 0644, created_at});
  for (auto& device : devices) {
    if (auto problem = device_id_problem(device.device_id)) {
      return make_error(Errc::invalid_input, *problem);
    }
    if (!seen.insert(device.device_id).second) {
      return make_error(Errc::invalid_input,
                        "device " + device.device_id + " is named twice for one bundle");
    }
    const std::string& id = device.device_id;
    files.push_back({id + "/client.crt", Secret(device.certificate_pem), 0644, created_at});
    const bool has_key = device.private_key_pem.has_value();
    if (has_key) {
      files.push_back({id + "/client.key", std::move(*device.private_key_pem), 0600, created_at});
      device.private_key_pem.reset();
    }
    files.push_back(
        {id + "/connect.txt", Secret(connect_example(id, broker, has_key)), 0644, created_at});
    listed.push_back({id, device.certificate_sha256});
  }
  ONBOARD_TRY(BundleFile manifest, make_manifest_file(files, listed, created_at));
  files.push_back(std::move(manifest));
  return files;
}

}  // namespace onboard::bundle
