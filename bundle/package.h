// What goes into a credential bundle, as files ready for write_encrypted_zip.
//
// Layout of an archive holding devices d1, d2:
//   ca-chain.pem          the CA certificates a device needs to verify the broker
//   d1/client.crt         the device's certificate
//   d1/client.key         its private key, PKCS#8 PEM, mode 0600 (only when the tool made the key)
//   d1/connect.txt        ready-to-run mosquitto_pub/mosquitto_sub lines and a paho-mqtt snippet
//   d2/...
//   manifest.json         every other file with its size and SHA-256, the devices and their
//                         certificates' fingerprints
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bundle/zip.h"
#include "core/error.h"
#include "core/secret.h"
#include "core/time.h"

namespace onboard::bundle {

struct DeviceCredentials {
  std::string device_id;
  std::string certificate_pem;
  std::string certificate_sha256;         // lower-case hex of the DER's SHA-256
  std::optional<Secret> private_key_pem;  // plaintext PKCS#8 PEM, when the tool made the key
};

// Where the devices will connect: written into connect.txt.
struct BrokerAddress {
  std::string host = "localhost";
  int port = 8883;
};

// Parses "HOST" or "HOST:PORT" (port 1 to 65535; an IPv6 address in brackets, "[::1]:8883").
// The host may hold only letters, digits, '.', '-', ':' (inside brackets) -- it is pasted into
// shell and Python examples, so nothing that could be read as code is accepted.
Result<BrokerAddress> parse_broker_address(std::string_view text);

// The example connect.txt for one device (pure; `has_key` says whether client.key is in the
// bundle, otherwise the example names the key the device made its CSR with).
std::string connect_example(std::string_view device_id, const BrokerAddress& broker, bool has_key);

// Every file of the bundle, manifest.json included, in archive order. The private keys are
// moved into the result (which wipes them when destroyed). Errors: invalid_input (no devices, a
// duplicate or invalid device id, an empty chain), crypto.
Result<std::vector<BundleFile>> bundle_files(std::vector<DeviceCredentials> devices,
                                             std::string_view chain_pem,
                                             const BrokerAddress& broker, UnixTime created_at);

}  // namespace onboard::bundle
