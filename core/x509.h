// What the base layer reads from certificates and CRLs: the fields that identify a certificate
// (fingerprint, serial, subject CN) and ASN.1 times. The broker reads these on every connect, so
// they live here and not with issuance.
#pragma once

#include <optional>
#include <string>

#include <openssl/types.h>

#include "core/time.h"

namespace onboard {

// Lower-case hex SHA-256 of the DER encoding; empty only if OpenSSL cannot encode it.
std::string sha256_fingerprint(const X509* cert);
// Upper-case hex, no separators; empty if the serial cannot be read.
std::string serial_hex(const X509* cert);
// The subject's CN as UTF-8; empty if there is none.
std::string subject_common_name(const X509* cert);

// An ASN.1 time as seconds since the epoch; nullopt if it cannot be read.
std::optional<UnixTime> to_unix_time(const ASN1_TIME* time);

}  // namespace onboard
