// The broker's local copy of its last good snapshot (plugin_opt_cache_file): what lets a broker
// that restarts while the registry (PostgreSQL) is unreachable decide from the registry as it last
// saw it, instead of refusing everyone or starting with nothing.
//
// Format, version 1 (all integers little-endian, every string a u32 length then its bytes):
//   "onboard-snapshot-cache 1\n"
//   i64 change_seq, u32 device count, each device: id, u8 status, type, u32 rule count, rules,
//     u32 certificate count, each: fingerprint, serial, u8 status, i64 not_before, i64 not_after;
//   u32 group count, each group: name, u32 rule count, rules;
//     a rule: i64 id, u8 access (1..7), u8 effect, i32 priority, pattern text;
//   then 64 lower-case hex digits: the SHA-256 of every byte before them.
// Nothing else: no padding, no trailing bytes. Devices and groups are in no particular order.
//
// The reader trusts nothing it has not checked: a file it did not write itself could make the
// broker allow what the registry denies. It refuses
//   - Errc::not_found: there is no such file (a first start, say);
//   - Errc::io: the file cannot be opened or read;
//   - Errc::invalid_input: the file is not one the broker may trust: a symbolic link (refused,
//     never followed: whoever controls the link controls the decisions), not a regular file, owned
//     by another user than the process's effective uid, or writable by its group or others;
//   - Errc::corrupt: wrong magic, an unknown version, a checksum that does not match, truncated or
//     trailing bytes, a length or count larger than the bytes left, an invalid enum value or
//     access mask, a device id or group name given twice.
//   - Errc::internal: memory ran out while decoding (nothing is thrown).
// Every message names the file and the reason. The directory that holds the file is the
// operator's to protect (like the registry file itself).
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "registry/snapshot.h"

namespace onboard::registry {

// The first line of every cache file; the digit is the format version.
inline constexpr std::string_view kSnapshotCacheMagic = "onboard-snapshot-cache 1\n";
// Larger files are refused before they are read (about 200 bytes a device: five million devices).
inline constexpr std::size_t kSnapshotCacheMaxBytes = std::size_t{1} << 30;

// The whole file's bytes for `snapshot`: header, body, checksum.
Result<std::string> encode_snapshot_cache(const Snapshot& snapshot);

// Writes encode_snapshot_cache's bytes to `path` atomically (temporary file, fsync, rename), mode
// 0600: a crash leaves the old file or the new one, never half of one.
Status write_snapshot_cache(const Snapshot& snapshot, const std::filesystem::path& path);

// Checks and decodes a whole file's bytes; `name` names it in error messages. Never touches the
// file system (what the fuzz target calls). Patterns are interned as registry/access_read.cpp
// does, and the snapshot made by Snapshot::build, so it decides exactly as the one written did.
Result<std::shared_ptr<const Snapshot>> decode_snapshot_cache(std::string_view bytes,
                                                              std::string_view name);

// Opens `path` (never following a symbolic link), checks the file may be trusted (see above),
// reads it and decodes it.
Result<std::shared_ptr<const Snapshot>> read_snapshot_cache(const std::filesystem::path& path);

}  // namespace onboard::registry
