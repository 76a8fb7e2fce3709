// What the broker needs to know of the registry, as plain values: each device's status, type, own
// rules and certificates, and each group's rules. An AccessStore reads them in bulk (read_access)
// and the Snapshot is built from them. No behaviour, no SQL.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "registry/acl.h"
#include "registry/model.h"

namespace onboard::registry {

// What the snapshot keeps of one certificate: enough for the connect check.
//
// Revoked certificates are kept too (a decision, see docs/architecture.md): the connect check can
// then say "certificate revoked" rather than "certificate not in the registry", and the refresh can
// see a certificate go from active to revoked. The price is memory for every superseded
// certificate a device has accumulated; measured in bench/registry_bench.cpp.
struct CertificateAccess {
  std::string sha256_fingerprint;
  std::string serial_hex;
  CertificateStatus status = CertificateStatus::active;
  UnixTime not_before = 0;
  UnixTime not_after = 0;
};

// What the snapshot keeps of one device: status, type, its own rules and its certificates.
// Rules are sorted by priority (highest first), then id; certificates in the order they were added.
struct DeviceAccess {
  std::string id;
  DeviceStatus status = DeviceStatus::active;
  std::string type;
  std::vector<acl::Rule> rules;  // the device's own rules
  std::vector<CertificateAccess> certificates;
};

// A group's rules ("default", or a device type), sorted like a device's.
struct GroupAccess {
  std::string name;
  std::vector<acl::Rule> rules;
};

// What the snapshot keeps of one claim: enough for the claim gate (docs/provisioning.md).
struct ClaimAccess {
  std::string name;
  std::string certificate_sha256;
  CertificateStatus certificate_status = CertificateStatus::active;
  UnixTime not_before = 0;  // of the claim certificate
  UnixTime not_after = 0;   // likewise: the claim's expiry
  ClaimStatus status = ClaimStatus::active;
  std::int64_t quota = 0;
  std::int64_t quota_used = 0;
  std::string id_pattern;
  std::string device_type;
};

acl::Rule to_acl_rule(const RuleRecord& record);

// Which part of the registry AccessStore::read_access reads.
struct AccessQuery {
  enum class Scope {
    everything,     // every device and every group
    listed,         // the devices and groups named below
    changed_since,  // the devices and groups the change feed names after `after_seq`
  };
  Scope scope = Scope::everything;
  std::vector<std::string> device_ids;   // listed only
  std::vector<std::string> group_names;  // listed only
  std::int64_t after_seq = 0;            // changed_since only

  static AccessQuery everything() { return {}; }
  static AccessQuery listed(std::vector<std::string> device_ids,
                            std::vector<std::string> group_names) {
    return {Scope::listed, std::move(device_ids), std::move(group_names), 0};
  }
  static AccessQuery changed_since(std::int64_t seq) { return {Scope::changed_since, {}, {}, seq}; }
};

// AccessStore::read_access's answer, read in ONE read transaction: the data is exactly the registry
// as of change_seq, neither older nor newer.
struct AccessData {
  std::int64_t change_seq = 0;
  std::vector<DeviceAccess> devices;  // sorted by id
  // Groups asked for (or changed) that do not exist come back with no rules: for a decision an
  // absent group and an empty one are the same. Sorted by name.
  std::vector<GroupAccess> groups;
  // Devices asked for (or changed) that are not registered (malformed ids included). Sorted.
  std::vector<std::string> missing_devices;
  // Every claim, by name: read for `everything`, and for `changed_since` when the feed names a
  // claim; nullopt when not read (the snapshot keeps the claims it has).
  std::optional<std::vector<ClaimAccess>> claims;
};

}  // namespace onboard::registry
