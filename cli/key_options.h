// What the commands that issue a device certificate (device register, cert renew) share: where
// the key comes from, the plan ops:: follows, and writing the key and certificate files.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "cli/cli.h"
#include "ops/credentials.h"
#include "ops/operations.h"

namespace onboard::cli {

// Key material for a new certificate: the device's CSR, a key made here and written to a file,
// or a key made here and held (encrypted) in the registry until the device is bundled.
struct KeySource {
  std::string csr, key_alg = "rsa2048", key_out, cert_out;
  int days = 365;
  bool force = false;
  bool hold_key = false;
  PassphraseSource hold_passphrase{"hold-passphrase"};

  void add_to(CLI::App& cmd);
};

// The plan ops:: follows, checked here in the words of the command line. `hold_storage` keeps
// the hold passphrase alive (and wiped afterwards) while the plan points at it.
Result<ops::KeyPlan> key_plan(const KeySource& source, std::optional<Secret>& hold_storage);

// Writes the requested key and certificate files, both or neither; `writer` remembers them so a
// registry refusal afterwards can undo them (a file that --force replaced is put back).
ops::BeforeRecord write_outputs(ops::CredentialWriter& writer, const KeySource& source);

// Where the key of an issued certificate is, as a note after "key ...".
const char* key_custody(const ops::Issuance& issued);

}  // namespace onboard::cli
