// What the CA and registry operations and commands share: option checks, the signing CA, and
// writing a key and its certificate both-or-neither.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "ca/authority.h"
#include "core/error.h"
#include "core/secret.h"

namespace onboard::ops {

Result<ca::KeyAlg> key_alg_option(const std::string& name);
Status check_validity_days(int days);

// The CA in `data_dir` with its signing key loaded (nullptr: the key is not encrypted).
Result<ca::Authority> open_signing_ca(const std::filesystem::path& data_dir,
                                      const Secret* passphrase);

// A device certificate valid from five minutes ago (clock skew) for `days` days.
Result<ca::IssuedCertificate> issue_device_certificate(const ca::Authority& ca,
                                                       const std::string& device_id,
                                                       const EVP_PKEY* public_key, int days);

struct OutputFile {
  std::filesystem::path path;
  Secret content;  // may be a private key
  mode_t mode;
};

// Writes a set of files both-or-neither. Existing files are refused unless `force`; with `force`
// their old content is kept in memory and put back if a later step fails, so an operator never
// loses a key to a failed command.
class CredentialWriter {
 public:
  Status write(std::vector<OutputFile> files, bool force);
  // Puts everything back as it was before write().
  void undo();
  const std::vector<std::filesystem::path>& written() const { return written_; }

 private:
  struct Replaced {
    std::filesystem::path path;
    Secret content;
    mode_t mode;
  };
  std::vector<std::filesystem::path> written_;
  std::vector<Replaced> replaced_;
};

}  // namespace onboard::ops
