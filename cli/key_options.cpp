#include "cli/key_options.h"

#include <filesystem>
#include <system_error>

#include "ca/keys.h"
#include "core/files.h"

namespace onboard::cli {
namespace {

bool same_path(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ec_a, ec_b;
  const auto canonical_a = std::filesystem::weakly_canonical(a, ec_a);
  const auto canonical_b = std::filesystem::weakly_canonical(b, ec_b);
  if (ec_a || ec_b) {
    return std::filesystem::absolute(a).lexically_normal() ==
           std::filesystem::absolute(b).lexically_normal();
  }
  return canonical_a == canonical_b;
}

}  // namespace

void KeySource::add_to(CLI::App& cmd) {
  auto* csr_opt = cmd.add_option(
      "--csr", csr, "PEM CSR made by the device (its key never leaves it); CN = device id");
  auto* alg_opt =
      cmd.add_option("--key-alg", key_alg,
                     "Key made here: " + std::string(ca::kKeyAlgNames) + " (default rsa2048)");
  auto* key_opt =
      cmd.add_option("--key-out", key_out, "Where the key made here goes (PKCS#8 PEM, 0600)");
  auto* hold_opt = cmd.add_flag(
      "--hold-key", hold_key,
      "Keep the key made here in the registry, encrypted under the hold passphrase, until the "
      "device is bundled (then it is wiped)");
  csr_opt->excludes(alg_opt)->excludes(key_opt)->excludes(hold_opt);
  hold_opt->excludes(key_opt);
  cmd.add_option("--cert-out", cert_out, "Also write the certificate (PEM) here");
  cmd.add_option("--days", days, "Certificate validity in days")->capture_default_str();
  cmd.add_flag("--force", force, "Replace existing output files");
  hold_passphrase.add_to(cmd, "the held device keys (with --hold-key)");
}

Result<ops::KeyPlan> key_plan(const KeySource& source, std::optional<Secret>& hold_storage) {
  ONBOARD_CHECK(ops::check_validity_days(source.days));
  ops::KeyPlan plan;
  plan.days = source.days;
  if (!source.csr.empty()) {
    ONBOARD_TRY(plan.csr_pem, read_file(source.csr, 1 << 20));
    plan.csr_label = source.csr;
    return plan;
  }
  if (source.hold_key) {
    ONBOARD_TRY(hold_storage, source.hold_passphrase.read());
    if (!hold_storage) {
      return make_error(
          Errc::invalid_input,
          "--hold-key needs --hold-passphrase-env VAR or --hold-passphrase-file FILE");
    }
    if (auto problem = ops::hold_passphrase_problem(*hold_storage))
      return make_error(Errc::invalid_input, "hold passphrase: " + *problem);
    plan.hold_passphrase = &*hold_storage;
  } else if (source.key_out.empty()) {
    return make_error(Errc::invalid_input,
                      "a key made here must go somewhere: give --key-out FILE, --hold-key, or use "
                      "--csr for a device-held key");
  } else if (!source.cert_out.empty() && same_path(source.key_out, source.cert_out)) {
    // With --force the certificate would silently replace the only copy of the key.
    return make_error(Errc::invalid_input, "--key-out and --cert-out name the same file");
  }
  ONBOARD_TRY(plan.key_alg, ops::key_alg_option(source.key_alg));
  return plan;
}

ops::BeforeRecord write_outputs(ops::CredentialWriter& writer, const KeySource& source) {
  return [&writer, &source](const ops::Issuance& issued) -> Status {
    std::vector<ops::OutputFile> files;
    if (issued.private_key) {
      ONBOARD_TRY(Secret pem, ca::private_key_to_pem(issued.private_key.get()));
      files.push_back({source.key_out, std::move(pem), 0600});
    }
    if (!source.cert_out.empty())
      files.push_back({source.cert_out, Secret(issued.certificate.pem), 0644});
    return writer.write(std::move(files), source.force);
  };
}

const char* key_custody(const ops::Issuance& issued) {
  if (issued.key_held) return " (made here; held encrypted in the registry until bundled)";
  if (issued.private_key) return " (made here)";
  return " (held by the device)";
}

}  // namespace onboard::cli
