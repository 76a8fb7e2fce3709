#include "ops/credentials.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "core/files.h"

namespace onboard::ops {

Result<ca::KeyAlg> key_alg_option(const std::string& name) {
  if (auto alg = ca::parse_key_alg(name)) return *alg;
  return make_error(Errc::invalid_input, "unknown key algorithm '" + name + "'; choose one of " +
                                             std::string(ca::kKeyAlgNames));
}

Status check_validity_days(int days) {
  if (days < 1 || days > 3650) return make_error(Errc::invalid_input, "--days must be 1 to 3650");
  return ok_status();
}

Result<ca::Authority> open_signing_ca(const std::filesystem::path& data_dir,
                                      const Secret* passphrase) {
  ONBOARD_TRY(auto ca, ca::Authority::open(data_dir));
  ONBOARD_CHECK(ca.load_signing_key(passphrase));
  return ca;
}

Result<ca::IssuedCertificate> issue_device_certificate(const ca::Authority& ca,
                                                       const std::string& device_id,
                                                       const EVP_PKEY* public_key, int days) {
  ca::CertificateRequest request;
  request.profile = ca::Profile::device;
  request.common_name = device_id;
  request.public_key = public_key;
  const UnixTime now = unix_now();
  request.not_before = now - 300;
  request.not_after = now + static_cast<UnixTime>(days) * 86400;
  return ca.issue(std::move(request));
}

Status CredentialWriter::write(std::vector<OutputFile> files, bool force) {
  // Check every target before writing any, so a refusal leaves nothing behind.
  for (std::size_t i = 0; i < files.size(); ++i) {
    for (std::size_t j = i + 1; j < files.size(); ++j) {
      std::error_code ec;
      if (files[i].path == files[j].path ||
          std::filesystem::equivalent(files[i].path, files[j].path, ec)) {
        return make_error(Errc::invalid_input,
                          files[i].path.string() + " is named for two outputs");
      }
    }
    const auto& path = files[i].path;
    std::error_code ec;
    const bool exists = std::filesystem::exists(path, ec);
    if (ec) return make_error(Errc::io, "cannot reach " + path.string() + ": " + ec.message());
    if (!exists) continue;
    if (!force)
      return make_error(Errc::conflict,
                        path.string() + " exists already; pass --force to replace it");
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return make_error(Errc::io, "cannot read " + path.string() + ": " + std::strerror(errno));
    }
    ONBOARD_TRY(Secret old, read_file_secret(path));
    replaced_.push_back({path, std::move(old), static_cast<mode_t>(st.st_mode & 07777)});
  }
  for (auto& file : files) {
    auto status = write_file_atomic(file.path, file.content.view(), file.mode,
                                    force ? Overwrite::replace : Overwrite::refuse);
    if (!status.ok()) {
      undo();
      return status;
    }
    written_.push_back(file.path);
  }
  return ok_status();
}

void CredentialWriter::undo() {
  for (const auto& path : written_) {
    auto old = std::find_if(replaced_.begin(), replaced_.end(),
                            [&](const Replaced& r) { return r.path == path; });
    if (old != replaced_.end()) {
      (void)write_file_atomic(path, old->content.view(), old->mode, Overwrite::replace);
    } else {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  }
  written_.clear();
}

}  // namespace onboard::ops
