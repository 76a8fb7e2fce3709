#include "tools/ca_commands.h"

#include <iostream>
#include <memory>
#include <system_error>

#include "ca/authority.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "ca/files.h"
#include "ca/identity.h"
#include "ca/verify.h"
#include "tools/credentials.h"

namespace onboard::cli {
namespace {

constexpr UnixTime kDay = 86400;

std::string key_alg_help(const char* what, const char* default_alg) {
  return std::string("Key algorithm of ") + what + ": " + std::string(kKeyAlgNames) + " (default " +
         default_alg + ")";
}

Result<Authority> open_signing_ca(const GlobalOptions& global, const PassphraseSource& source) {
  return cli::open_signing_ca(data_dir(global), source);
}

// A key made here (0600) and its certificate (0644), both or neither.
Status write_credential(const std::filesystem::path& cert_path, const std::string& cert_pem,
                        const std::filesystem::path* key_path, const Secret* key_pem, bool force) {
  std::vector<OutputFile> files;
  if (key_path != nullptr) files.push_back({*key_path, Secret(key_pem->view()), 0600});
  files.push_back({cert_path, Secret(cert_pem), 0644});
  CredentialWriter writer;
  return writer.write(std::move(files), force);
}

void print_issued(const IssuedCertificate& issued, const std::filesystem::path& cert_path) {
  std::cout << "issued " << issued.info.subject_cn << "\n"
            << "  serial       " << issued.info.serial_hex << "\n"
            << "  fingerprint  sha256:" << issued.info.sha256_fingerprint << "\n"
            << "  key          " << issued.info.key << "\n"
            << "  certificate  " << cert_path.string() << "\n";
}

void add_init(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string key_alg = "rsa3072", intermediate_key_alg = "rsa3072";
    CaInitOptions init;
    PassphraseSource passphrase;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd =
      ca.add_subcommand("init", "Create the root CA (and optionally an issuing intermediate)");
  cmd->add_option("--key-alg", opts->key_alg, key_alg_help("the root CA key", "rsa3072"));
  cmd->add_option("--name", opts->init.common_name, "Common name of the root CA")
      ->capture_default_str();
  cmd->add_option("--org", opts->init.organization, "Organization (O) in the CA subjects");
  cmd->add_option("--days", opts->init.root_days, "Validity of the root CA in days")
      ->capture_default_str();
  cmd->add_flag(
      "--intermediate", opts->init.intermediate,
      "Also create an issuing CA signed by the root; it signs devices and servers, so the "
      "root key can be kept offline");
  cmd->add_option("--intermediate-key-alg", opts->intermediate_key_alg,
                  key_alg_help("the issuing CA key", "rsa3072"));
  cmd->add_option("--intermediate-days", opts->init.intermediate_days,
                  "Validity of the issuing CA in days")
      ->capture_default_str();
  cmd->add_option(
      "--crl-url", opts->init.crl_url,
      "CRL distribution point URL written into every certificate issued (http or https)");
  opts->passphrase.add_to(*cmd, "the new CA keys (they are encrypted when given)");
  cmd->callback([&global, &exit_code, opts] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_TRY(opts->init.root_key_alg, key_alg_option(opts->key_alg));
      ONBOARD_TRY(opts->init.intermediate_key_alg, key_alg_option(opts->intermediate_key_alg));
      ONBOARD_TRY(auto passphrase, opts->passphrase.read());
      opts->init.passphrase = passphrase ? &*passphrase : nullptr;
      const auto dir = data_dir(global);
      ONBOARD_TRY(auto authority, Authority::create(dir, opts->init, unix_now()));
      auto root = describe_certificate(authority.root());
      std::cout << "created root CA " << root.subject << " (" << root.key << ") in "
                << authority.paths().dir.string() << "\n";
      if (authority.has_intermediate()) {
        auto issuing = describe_certificate(authority.issuer());
        std::cout << "created issuing CA " << issuing.subject << " (" << issuing.key << ")\n";
      }
      std::cout << "trust chain: " << authority.paths().root_cert.string() << "\n";
      return kExitOk;
    });
  });
}

void add_cert(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  auto* cmd =
      ca.add_subcommand("cert", "Print the CA chain (PEM) that the broker and clients trust");
  cmd->callback([&global, &exit_code] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_TRY(auto authority, Authority::open(data_dir(global)));
      std::cout << authority.chain_pem();
      return kExitOk;
    });
  });
}

void add_issue(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string csr, device, key_alg = "rsa2048", cert_out, key_out;
    int days = 365;
    bool force = false;
    PassphraseSource passphrase;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = ca.add_subcommand("issue",
                                "Issue a device certificate, from the device's CSR (--csr) or with "
                                "a key made here (--device)");
  auto* csr =
      cmd->add_option("--csr", opts->csr, "PEM CSR made by the device; its CN is the device id");
  auto* device = cmd->add_option("--device", opts->device, "Device id, when the key is made here");
  csr->excludes(device);
  cmd->add_option("--key-alg", opts->key_alg, key_alg_help("a key made here", "rsa2048"));
  cmd->add_option("--cert-out", opts->cert_out, "Where to write the certificate (PEM)")->required();
  cmd->add_option("--key-out", opts->key_out,
                  "Where to write a key made here (PKCS#8 PEM, mode 0600)");
  cmd->add_option("--days", opts->days, "Validity in days")->capture_default_str();
  cmd->add_flag("--force", opts->force, "Replace existing output files");
  opts->passphrase.add_to(*cmd, "the CA key");
  cmd->callback([&global, &exit_code, opts] {
    exit_code = run_action([&]() -> Result<int> {
      if (opts->csr.empty() == opts->device.empty()) {
        return make_error(Errc::invalid_input, "give either --csr FILE or --device ID");
      }
      if (!opts->csr.empty() && !opts->key_out.empty()) {
        return make_error(Errc::invalid_input,
                          "--key-out goes with --device: with --csr the key stays on the device");
      }
      if (!opts->device.empty() && opts->key_out.empty()) {
        return make_error(Errc::invalid_input,
                          "--device makes a key here; say where it goes with --key-out FILE");
      }
      ONBOARD_CHECK(check_validity_days(opts->days));
      ONBOARD_TRY(KeyAlg alg, key_alg_option(opts->key_alg));

      ossl::Ptr<EVP_PKEY> key;  // set when the key is made here
      ossl::Ptr<EVP_PKEY> public_key;
      std::string device_id;
      if (!opts->csr.empty()) {
        ONBOARD_TRY(std::string pem, read_file(opts->csr, 1 << 20));
        auto checked = read_device_csr(pem);
        if (!checked.ok()) {
          return make_error(checked.error().code, opts->csr + ": " + checked.error().message);
        }
        device_id = checked->device_id;
        public_key = std::move(checked->public_key);
      } else {
        if (auto problem = device_id_problem(opts->device))
          return make_error(Errc::invalid_input, *problem);
        device_id = opts->device;
      }
      ONBOARD_TRY(auto authority, open_signing_ca(global, opts->passphrase));
      if (!opts->device.empty()) {
        ONBOARD_TRY(key, generate_key(alg));
      }

      CertificateRequest request;
      request.profile = Profile::device;
      request.common_name = device_id;
      request.public_key = key ? key.get() : public_key.get();
      const UnixTime now = unix_now();
      request.not_before = now - 300;
      request.not_after = now + opts->days * kDay;
      ONBOARD_TRY(auto issued, authority.issue(std::move(request)));

      std::filesystem::path key_path = opts->key_out;
      if (key) {
        ONBOARD_TRY(Secret key_pem, private_key_to_pem(key.get()));
        ONBOARD_CHECK(
            write_credential(opts->cert_out, issued.pem, &key_path, &key_pem, opts->force));
      } else {
        ONBOARD_CHECK(write_credential(opts->cert_out, issued.pem, nullptr, nullptr, opts->force));
      }
      print_issued(issued, opts->cert_out);
      if (key) std::cout << "  private key  " << key_path.string() << " (0600)\n";
      return kExitOk;
    });
  });
}

void add_issue_server(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::vector<std::string> dns, ip;
    std::string key_alg = "rsa2048", cert_out, key_out, name;
    int days = 825;
    bool force = false;
    PassphraseSource passphrase;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd =
      ca.add_subcommand("issue-server", "Issue the broker's TLS server certificate and key");
  cmd->add_option("--dns", opts->dns, "DNS name the broker is reached by (repeatable)");
  cmd->add_option("--ip", opts->ip, "IP address the broker is reached by (repeatable)");
  cmd->add_option("--name", opts->name, "Subject common name (default: the first DNS name or IP)");
  cmd->add_option("--key-alg", opts->key_alg, key_alg_help("the server key", "rsa2048"));
  cmd->add_option("--cert-out", opts->cert_out, "Where to write the certificate (PEM)")->required();
  cmd->add_option("--key-out", opts->key_out, "Where to write the key (PKCS#8 PEM, mode 0600)")
      ->required();
  cmd->add_option("--days", opts->days, "Validity in days")->capture_default_str();
  cmd->add_flag("--force", opts->force, "Replace existing output files");
  opts->passphrase.add_to(*cmd, "the CA key");
  cmd->callback([&global, &exit_code, opts] {
    exit_code = run_action([&]() -> Result<int> {
      if (opts->dns.empty() && opts->ip.empty()) {
        return make_error(Errc::invalid_input, "give at least one --dns NAME or --ip ADDRESS");
      }
      for (const auto& d : opts->dns) {
        if (auto problem = dns_name_problem(d)) return make_error(Errc::invalid_input, *problem);
      }
      for (const auto& i : opts->ip) {
        if (auto problem = ip_address_problem(i)) return make_error(Errc::invalid_input, *problem);
      }
      ONBOARD_CHECK(check_validity_days(opts->days));
      ONBOARD_TRY(KeyAlg alg, key_alg_option(opts->key_alg));
      ONBOARD_TRY(auto authority, open_signing_ca(global, opts->passphrase));
      ONBOARD_TRY(auto key, generate_key(alg));

      CertificateRequest request;
      request.profile = Profile::server;
      request.common_name = !opts->name.empty()  ? opts->name
                            : !opts->dns.empty() ? opts->dns.front()
                                                 : opts->ip.front();
      request.public_key = key.get();
      request.dns_names = opts->dns;
      request.ip_addresses = opts->ip;
      const UnixTime now = unix_now();
      request.not_before = now - 300;
      request.not_after = now + opts->days * kDay;
      ONBOARD_TRY(auto issued, authority.issue(std::move(request)));
      ONBOARD_TRY(Secret key_pem, private_key_to_pem(key.get()));
      std::filesystem::path key_path = opts->key_out;
      ONBOARD_CHECK(write_credential(opts->cert_out, issued.pem, &key_path, &key_pem, opts->force));
      print_issued(issued, opts->cert_out);
      std::cout << "  private key  " << key_path.string() << " (0600)\n";
      return kExitOk;
    });
  });
}

void add_verify(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string cert, crl;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd =
      ca.add_subcommand("verify", "Check a certificate against this CA, as a relying party would");
  cmd->add_option("CERT", opts->cert, "PEM certificate to check")->required();
  cmd->add_option("--crl", opts->crl, "Also check revocation against this PEM CRL");
  cmd->callback([&global, &exit_code, opts] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_TRY(auto authority, Authority::open(data_dir(global)));
      ONBOARD_TRY(std::string pem, read_file(opts->cert, 1 << 20));
      ONBOARD_TRY(auto cert, certificate_from_pem(pem));
      std::vector<X509*> intermediates;
      if (authority.has_intermediate())
        intermediates.push_back(const_cast<X509*>(authority.issuer()));
      std::vector<X509*> roots{const_cast<X509*>(authority.root())};
      ossl::Ptr<X509_CRL> crl;
      std::vector<X509_CRL*> crls;
      if (!opts->crl.empty()) {
        ONBOARD_TRY(std::string crl_pem, read_file(opts->crl));
        ONBOARD_TRY(crl, crl_from_pem(crl_pem));
        crls.push_back(crl.get());
      }
      VerifyOptions options;
      options.check_crl = crl != nullptr;
      auto outcome = verify_certificate(cert.get(), intermediates, roots, crls, options);
      auto info = describe_certificate(cert.get());
      if (!outcome.ok()) {
        return make_error(Errc::invalid_input, opts->cert + ": " + info.subject_cn + " (serial " +
                                                   info.serial_hex + "): " + outcome.message);
      }
      std::cout << opts->cert << ": OK (" << info.subject_cn << ", serial " << info.serial_hex
                << ")\n";
      return kExitOk;
    });
  });
}

}  // namespace

void add_ca_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* ca = app.add_subcommand(
      "ca", "The certificate authority: create it, issue and verify certificates");
  ca->require_subcommand(1);
  add_init(*ca, global, exit_code);
  add_cert(*ca, global, exit_code);
  add_issue(*ca, global, exit_code);
  add_issue_server(*ca, global, exit_code);
  add_verify(*ca, global, exit_code);
}

}  // namespace onboard::cli
