#include "cli/commands.h"

#include <iostream>
#include <memory>
#include <system_error>

#include "ca/authority.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "ca/verify.h"
#include "cli/table.h"
#include "core/files.h"
#include "core/identity.h"
#include "ops/credentials.h"
#include "ops/duration.h"
#include "ops/operations.h"
#include "ops/views.h"
#include "ops/workspace.h"
#include "registry/model.h"

namespace onboard::cli {
namespace {

constexpr UnixTime kDay = 86400;

std::string key_alg_help(const char* what, const char* default_alg) {
  return std::string("Key algorithm of ") + what + ": " + std::string(ca::kKeyAlgNames) +
         " (default " + default_alg + ")";
}

Result<ca::Authority> open_signing_ca(const GlobalOptions& global, const PassphraseSource& source) {
  return cli::open_signing_ca(data_dir(global), source);
}

// The registry the CA records what it signs in, opened before anything is signed: every
// certificate the CA signs is recorded, so that it can be listed and revoked (and so reach the
// CRL). Without a registry nothing is signed.
Result<std::unique_ptr<registry::Store>> open_ca_registry(const ops::Workspace& ws) {
  auto store = ops::open_registry(ws);
  if (!store.ok()) {
    Error e = std::move(store).error();
    e.message = "the CA records every certificate it signs in the registry: " + e.message;
    return e;
  }
  return store;
}

// A key made here (0600) and its certificate (0644), both or neither, then the certificate's
// record: when the record cannot be written, the files are taken back, so no certificate leaves
// this command unrecorded.
Status hand_out_and_record(registry::Store& store, registry::CertificateKind kind,
                           const ca::IssuedCertificate& issued,
                           const std::filesystem::path& cert_path,
                           const std::filesystem::path* key_path, const Secret* key_pem,
                           bool force) {
  std::vector<ops::OutputFile> files;
  if (key_path != nullptr) files.push_back({*key_path, Secret(key_pem->view()), 0600});
  files.push_back({cert_path, Secret(issued.pem), 0644});
  ops::CredentialWriter writer;
  ONBOARD_CHECK(writer.write(std::move(files), force));
  auto recorded = ops::record_issued(store, kind, issued, ops::make_actor());
  if (!recorded.ok()) {
    writer.undo();
    Error e = std::move(recorded).error();
    e.message = "the certificate could not be recorded, so it was not handed out: " + e.message;
    return e;
  }
  return ok_status();
}

void print_issued(const ca::IssuedCertificate& issued, const std::filesystem::path& cert_path,
                  registry::CertificateKind kind) {
  std::cout << "issued " << issued.info.subject_cn << "\n"
            << "  recorded     kind " << to_string(kind)
            << (kind == registry::CertificateKind::other ? " (not a device: cannot connect)" : "")
            << "\n"
            << "  serial       " << issued.info.serial_hex << "\n"
            << "  fingerprint  sha256:" << issued.info.sha256_fingerprint << "\n"
            << "  key          " << issued.info.key << "\n"
            << "  certificate  " << cert_path.string() << "\n";
}

void add_init(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string key_alg = "rsa3072", intermediate_key_alg = "rsa3072";
    ca::CaInitOptions init;
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
  cmd->add_option("--root-crl-url", opts->init.root_crl_url,
                  "With --intermediate: where the root's own CRL is published, written into the "
                  "intermediate's certificate (default: --crl-url with its last path segment "
                  "replaced by root-crl)");
  cmd->add_option("--ocsp-url", opts->init.ocsp_url,
                  "OCSP responder URL written into every certificate issued (Authority "
                  "Information Access; 'onboardctl serve' answers at /ocsp)");
  cmd->add_option("--ca-key", opts->init.token_key_uri,
                  "Generate the CA keys inside a PKCS#11 token (RFC 7512 URI "
                  "pkcs11:token=LABEL;object=LABEL); the PIN comes from --passphrase-env/-file")
      ->type_name("URI");
  cmd->add_option("--pkcs11-module", opts->init.pkcs11_module,
                  "The PKCS#11 module (.so) that reaches the --ca-key token")
      ->envname("ONBOARD_PKCS11_MODULE")
      ->type_name("PATH");
  opts->passphrase.add_to(*cmd, "the new CA keys (they are encrypted when given)");
  cmd->callback([&global, &exit_code, opts] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_TRY(opts->init.root_key_alg, ops::key_alg_option(opts->key_alg));
      ONBOARD_TRY(opts->init.intermediate_key_alg, ops::key_alg_option(opts->intermediate_key_alg));
      ONBOARD_TRY(auto passphrase, opts->passphrase.read());
      opts->init.passphrase = passphrase ? &*passphrase : nullptr;
      const auto dir = data_dir(global);
      ONBOARD_TRY(auto authority, ca::Authority::create(dir, opts->init, unix_now()));
      auto root = ca::describe_certificate(authority.root());
      std::cout << "created root CA " << root.subject << " (" << root.key << ") in "
                << authority.paths().dir.string() << "\n";
      if (authority.has_intermediate()) {
        auto issuing = ca::describe_certificate(authority.issuer());
        std::cout << "created issuing CA " << issuing.subject << " (" << issuing.key << ")\n";
        // The root signed it: recorded so that it can be revoked on the root's CRL. Without a
        // registry yet, 'onboardctl init' records it when it creates one.
        ONBOARD_TRY(const auto ws, workspace(global));
        ONBOARD_TRY(const bool has_registry, ops::registry_exists(ws));
        if (has_registry) {
          ONBOARD_TRY(auto store, ops::open_registry(ws));
          ONBOARD_CHECK(ops::record_intermediate(*store, authority));
        }
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
      ONBOARD_TRY(auto authority, ca::Authority::open(data_dir(global)));
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
  auto* cmd = ca.add_subcommand(
      "issue",
      "Issue a client certificate outside the device registry, from a CSR (--csr) or with a key "
      "made here (--device); it is recorded (kind other) and revocable, but cannot connect to the "
      "broker: register devices with 'device register'");
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
      ONBOARD_CHECK(ops::check_validity_days(opts->days));
      ONBOARD_TRY(ca::KeyAlg alg, ops::key_alg_option(opts->key_alg));

      ossl::Ptr<EVP_PKEY> key;  // set when the key is made here
      ossl::Ptr<EVP_PKEY> public_key;
      std::string device_id;
      if (!opts->csr.empty()) {
        ONBOARD_TRY(std::string pem, read_file(opts->csr, 1 << 20));
        auto checked = ca::read_device_csr(pem);
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
      ONBOARD_TRY(const auto ws, workspace(global));
      ONBOARD_TRY(auto store, open_ca_registry(ws));
      ONBOARD_TRY(auto authority, open_signing_ca(global, opts->passphrase));
      if (!opts->device.empty()) {
        ONBOARD_TRY(key, ca::generate_key(alg));
      }

      ca::CertificateRequest request;
      request.profile = ca::Profile::device;
      request.common_name = device_id;
      request.public_key = key ? key.get() : public_key.get();
      const UnixTime now = unix_now();
      request.not_before = now - 300;
      request.not_after = now + opts->days * kDay;
      ONBOARD_TRY(auto issued, authority.issue(std::move(request)));

      std::filesystem::path key_path = opts->key_out;
      // Recorded as `other`, never as a device's certificate: it was not registered, so it
      // cannot connect to the broker even when its CN is a registered device's id.
      if (key) {
        ONBOARD_TRY(Secret key_pem, ca::private_key_to_pem(key.get()));
        ONBOARD_CHECK(hand_out_and_record(*store, registry::CertificateKind::other, issued,
                                          opts->cert_out, &key_path, &key_pem, opts->force));
      } else {
        ONBOARD_CHECK(hand_out_and_record(*store, registry::CertificateKind::other, issued,
                                          opts->cert_out, nullptr, nullptr, opts->force));
      }
      print_issued(issued, opts->cert_out, registry::CertificateKind::other);
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
      ca.add_subcommand("issue-server",
                        "Issue the broker's TLS server certificate and key; it is recorded (kind "
                        "server) and revocable");
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
        if (auto problem = ca::dns_name_problem(d))
          return make_error(Errc::invalid_input, *problem);
      }
      for (const auto& i : opts->ip) {
        if (auto problem = ca::ip_address_problem(i))
          return make_error(Errc::invalid_input, *problem);
      }
      ONBOARD_CHECK(ops::check_validity_days(opts->days));
      ONBOARD_TRY(ca::KeyAlg alg, ops::key_alg_option(opts->key_alg));
      ONBOARD_TRY(const auto ws, workspace(global));
      ONBOARD_TRY(auto store, open_ca_registry(ws));
      ONBOARD_TRY(auto authority, open_signing_ca(global, opts->passphrase));
      ONBOARD_TRY(auto key, ca::generate_key(alg));

      ca::CertificateRequest request;
      request.profile = ca::Profile::server;
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
      ONBOARD_TRY(Secret key_pem, ca::private_key_to_pem(key.get()));
      std::filesystem::path key_path = opts->key_out;
      ONBOARD_CHECK(hand_out_and_record(*store, registry::CertificateKind::server, issued,
                                        opts->cert_out, &key_path, &key_pem, opts->force));
      print_issued(issued, opts->cert_out, registry::CertificateKind::server);
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
      ONBOARD_TRY(auto authority, ca::Authority::open(data_dir(global)));
      ONBOARD_TRY(std::string pem, read_file(opts->cert, 1 << 20));
      ONBOARD_TRY(auto cert, ca::certificate_from_pem(pem));
      std::vector<X509*> intermediates;
      if (authority.has_intermediate())
        intermediates.push_back(const_cast<X509*>(authority.issuer()));
      for (const auto& retired : authority.retired()) intermediates.push_back(retired.cert.get());
      std::vector<X509*> roots{const_cast<X509*>(authority.root())};
      // Every CRL in the file: one per issuing CA after 'ca rotate'.
      std::vector<ossl::Ptr<X509_CRL>> read_crls;
      std::vector<X509_CRL*> crls;
      if (!opts->crl.empty()) {
        ONBOARD_TRY(std::string crl_pem, read_file(opts->crl));
        ONBOARD_TRY(read_crls, ca::crls_from_pem(crl_pem));
        for (const auto& crl : read_crls) crls.push_back(crl.get());
      }
      ca::VerifyOptions options;
      options.check_crl = !crls.empty();
      auto outcome = ca::verify_certificate(cert.get(), intermediates, roots, crls, options);
      auto info = ca::describe_certificate(cert.get());
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

void add_list(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string kind, status;
    bool json_out = false;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = ca.add_subcommand(
      "list",
      "List every certificate the CA signed and recorded, oldest first: devices', "
      "servers' and others'");
  cmd->add_option("--kind", opts->kind, "Only this kind: device, server, other or claim");
  cmd->add_option("--status", opts->status, "Only this status: active or revoked");
  cmd->add_flag("--json", opts->json_out, "Print JSON, with each certificate's PEM");
  on_run(cmd, global, exit_code, [opts](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(auto filter, ops::certificate_filter(opts->kind, opts->status));
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto certs, ops::list_all_certificates(*store, filter));
    if (opts->json_out) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& c : certs) {
        auto j = ops::certificate_json(c, true);
        j["kind"] = std::string(to_string(c.kind));
        j["device"] = c.device_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(c.device_id);
        out.push_back(std::move(j));
      }
      std::cout << out.dump(2) << "\n";
      return kExitOk;
    }
    Table table({"SERIAL", "KIND", "STATUS", "SUBJECT", "NOT AFTER", "DEVICE"});
    for (const auto& c : certs) {
      std::string status(to_string(c.status));
      if (c.revocation_reason)
        status += " (" + std::string(revocation_reason_name(*c.revocation_reason)) + ")";
      table.add({c.serial_hex, std::string(to_string(c.kind)), status, c.subject,
                 iso_time(c.not_after), c.device_id.empty() ? "-" : c.device_id});
    }
    table.print(std::cout);
    return kExitOk;
  });
}

void add_revoke(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string name, reason = "unspecified";
    PassphraseSource passphrase;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = ca.add_subcommand(
      "revoke",
      "Revoke one certificate of any kind (final) and rewrite the CRL; a device's certificate is "
      "refused at connect from then on, its device keeps its status");
  cmd->add_option("CERT", opts->name,
                  "The certificate's serial or SHA-256 fingerprint (as 'ca list' shows them)")
      ->required();
  cmd->add_option("--reason", opts->reason, std::string(kRevocationReasonNames))
      ->capture_default_str();
  opts->passphrase.add_to(*cmd, "the CA key (to sign the CRL)");
  on_run(cmd, global, exit_code, [opts](const ops::Workspace& ws) -> Result<int> {
    auto reason = parse_revocation_reason(opts->reason);
    if (!reason) {
      return make_error(Errc::invalid_input,
                        "--reason must be one of " + std::string(kRevocationReasonNames));
    }
    ONBOARD_TRY(auto store, ops::open_registry(ws));
    ONBOARD_TRY(auto passphrase, opts->passphrase.read());
    ONBOARD_TRY(auto authority,
                ca::Authority::open(ws.dir));  // before revoking: the CRL must follow
    ONBOARD_CHECK(authority.load_signing_key(passphrase ? &*passphrase : nullptr));
    ONBOARD_TRY(auto revoked, ops::revoke_certificate(*store, authority, ws.crl, opts->name,
                                                      *reason, ops::make_actor()));
    const auto& cert = revoked.outcome.certificate;
    const std::string what = std::string(to_string(cert.kind)) + " certificate " + cert.serial_hex +
                             " (" + cert.subject + ")";
    if (revoked.outcome.already_revoked) {
      std::cout << what << " was already revoked\n";
      if (revoked.crl_number) {  // the CRL did not list it yet
        std::cout << "CRL " << *revoked.crl_number << " written to " << ws.crl.string() << "\n";
      }
      return kExitOk;
    }
    std::cout << "revoked " << what << "\n";
    if (revoked.crl_number) {
      std::cout << "CRL " << *revoked.crl_number << " written to " << ws.crl.string() << "\n";
    }
    if (revoked.needs_root_crl) {
      auto number = ops::write_root_crl(*store, authority, ws, passphrase ? &*passphrase : nullptr);
      if (!number.ok()) {
        return make_error(
            number.error().code,
            "revoked in the registry, but the root CRL was not written: " + number.error().message +
                "; run 'onboardctl crl' where the root key is");
      }
      std::cout << "root CRL " << number->value_or(0) << " written to " << ws.root_crl.string()
                << "\n";
    }
    return kExitOk;
  });
}

void add_set_ocsp_url(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  auto url = std::make_shared<std::string>();
  auto* cmd = ca.add_subcommand(
      "set-ocsp-url",
      "Set the OCSP responder URL that certificates issued from now on carry (Authority "
      "Information Access); \"\" removes it. Certificates issued before keep theirs");
  cmd->add_option("URL", *url, "http:// or https:// URL, e.g. http://ca.example:8443/ocsp")
      ->required();
  cmd->callback([&global, &exit_code, url] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_CHECK(ca::Authority::set_ocsp_url(data_dir(global), *url));
      if (url->empty())
        std::cout << "OCSP URL removed; certificates issued from now on carry none\n";
      else
        std::cout << "OCSP URL set to " << *url << " for certificates issued from now on\n";
      return kExitOk;
    });
  });
}

void add_status(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string warn_within = "90d";
    bool json_out = false;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = ca.add_subcommand(
      "status",
      "Show each CA certificate (root, issuing, earlier issuing CAs kept by 'ca rotate') with "
      "its validity and days left; warns about those expiring soon");
  cmd->add_option("--warn-within", opts->warn_within,
                  "Warn about a CA certificate that expires within this duration (e.g. 90d)")
      ->capture_default_str();
  cmd->add_flag("--json", opts->json_out, "Print JSON");
  cmd->callback([&global, &exit_code, opts] {
    exit_code = run_action([&]() -> Result<int> {
      ONBOARD_TRY(const UnixTime warn_within,
                  ops::parse_duration(opts->warn_within, "--warn-within", 1, 36500 * kDay));
      ONBOARD_TRY(auto authority, ca::Authority::open(data_dir(global)));
      const UnixTime now = unix_now();
      struct Row {
        std::string role;
        ca::CertificateInfo info;
      };
      std::vector<Row> rows{{"root", ca::describe_certificate(authority.root())}};
      if (authority.has_intermediate())
        rows.push_back({"issuing", ca::describe_certificate(authority.issuer())});
      for (const auto& retired : authority.retired())
        rows.push_back({"earlier issuing", ca::describe_certificate(retired.cert.get())});
      // Whole days, rounded down: "0 days left" is still valid, negative is expired.
      const auto days_left = [now](UnixTime not_after) {
        const UnixTime left = not_after - now;
        return left >= 0 ? left / kDay : -((-left + kDay - 1) / kDay);
      };
      const auto warning = [&](const ca::CertificateInfo& info) -> std::string {
        if (info.not_after < now) return "EXPIRED";
        if (info.not_after - now <= warn_within) return "expires within " + opts->warn_within;
        return {};
      };
      if (opts->json_out) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& [role, info] : rows) {
          const std::string warn = warning(info);
          out.push_back(
              {{"role", role},
               {"subject", info.subject},
               {"serial", info.serial_hex},
               {"not_before", iso_time(info.not_before)},
               {"not_after", iso_time(info.not_after)},
               {"days_left", days_left(info.not_after)},
               {"warning", warn.empty() ? nlohmann::json(nullptr) : nlohmann::json(warn)}});
        }
        std::cout << nlohmann::json{{"certificates", std::move(out)}}.dump(2) << "\n";
        return kExitOk;
      }
      Table table({"ROLE", "SUBJECT", "SERIAL", "NOT BEFORE", "NOT AFTER", "DAYS LEFT", "STATE"});
      for (const auto& [role, info] : rows) {
        const std::string warn = warning(info);
        table.add({role, info.subject, info.serial_hex, iso_time(info.not_before),
                   iso_time(info.not_after), std::to_string(days_left(info.not_after)),
                   warn.empty() ? "ok" : warn});
      }
      table.print(std::cout);
      for (const auto& [role, info] : rows) {
        const std::string warn = warning(info);
        if (warn.empty()) continue;
        std::cerr << "warning: the " << role << " CA " << info.subject_cn << " (serial "
                  << info.serial_hex << ") " << (warn == "EXPIRED" ? "has expired" : warn)
                  << (role == "root" ? "; a new root must be distributed to every broker and "
                                       "device before then"
                      : role == "issuing"
                          ? "; rotate it with 'onboardctl ca rotate' (see 'CA rotation' in "
                            "docs/architecture.md)"
                          : "; renew its devices before then ('onboardctl cert renew'), then "
                            "retire it (see 'CA rotation' in docs/architecture.md)")
                  << "\n";
      }
      return kExitOk;
    });
  });
}

void add_rotate(CLI::App& ca, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string key_alg = "rsa3072";
    ca::RotateOptions rotate;
    PassphraseSource passphrase;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = ca.add_subcommand(
      "rotate",
      "Replace the issuing intermediate with a new one signed by the root (needs the root key in "
      "DATA_DIR/ca). The old one is kept as issuing-SERIAL.crt/.key: its devices still connect "
      "and can still be revoked; new certificates come from the new one. Rewrites chain.pem and "
      "the CRL; restart the broker (and onboardctl serve) afterwards");
  cmd->add_option("--name", opts->rotate.common_name,
                  "Common name of the new issuing CA (default: the current one's with today's "
                  "date); it must differ from every issuer of this CA");
  cmd->add_option("--key-alg", opts->key_alg, key_alg_help("the new issuing CA key", "rsa3072"));
  cmd->add_option("--days", opts->rotate.days,
                  "Validity of the new issuing CA in days (capped at the root's)")
      ->capture_default_str();
  opts->passphrase.add_to(*cmd, "the CA keys (the new key is encrypted with it too)");
  on_run(cmd, global, exit_code, [opts](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(opts->rotate.key_alg, ops::key_alg_option(opts->key_alg));
    ONBOARD_TRY(auto passphrase, opts->passphrase.read());
    const Secret* secret = passphrase ? &*passphrase : nullptr;
    opts->rotate.passphrase = secret;
    // The new intermediate is recorded (so the root's CRL can revoke it) and the CRL rewritten:
    // the registry must be there before anything changes.
    ONBOARD_TRY(auto store, open_ca_registry(ws));
    ONBOARD_TRY(auto authority, ca::Authority::open(ws.dir));
    if (!authority.has_intermediate()) {
      // The same refusal rotate() gives, before asking for any key.
      ONBOARD_CHECK(authority.rotate(ca::KeySigner(nullptr), opts->rotate, unix_now()));
    }
    ONBOARD_CHECK(authority.load_signing_key(secret));
    auto root_signer = authority.load_root_signer(secret);
    if (!root_signer.ok()) {
      Error e = std::move(root_signer).error();
      e.message = "rotation needs the root CA key, to sign the new intermediate: " + e.message;
      return e;
    }
    const auto old = ca::describe_certificate(authority.issuer());
    ONBOARD_CHECK(authority.rotate(**root_signer, opts->rotate, unix_now()));
    const auto now_issuing = ca::describe_certificate(authority.issuer());
    std::cout << "created issuing CA " << now_issuing.subject << " (serial "
              << now_issuing.serial_hex << ", until " << iso_time(now_issuing.not_after) << ")\n"
              << "kept earlier issuing CA " << old.subject << " (serial " << old.serial_hex
              << ") as " << authority.paths().retired_cert(old.serial_hex).string() << "\n";
    // From here the CA on disk has rotated: what follows is told, not rolled back, when it fails.
    const auto finish = [&](Status step, const std::string& what) -> Status {
      if (step.ok()) return step;
      Error e = std::move(step).error();
      e.message = "the CA rotated, but " + what + " failed: " + e.message +
                  "; fix that and run 'onboardctl crl' (and write chain.pem with 'onboardctl ca "
                  "cert')";
      return e;
    };
    ONBOARD_CHECK(finish(write_file_atomic(authority.paths().chain(), authority.chain_pem(), 0644,
                                           Overwrite::replace),
                         "writing chain.pem"));
    std::cout << "chain     " << authority.paths().chain().string()
              << " (new issuing CA, kept ones, root)\n";
    ONBOARD_CHECK(finish(ops::record_intermediate(*store, authority), "recording it"));
    auto number = ops::write_crl(*store, authority, ws.crl);
    ONBOARD_CHECK(
        finish(number.ok() ? ok_status() : Status(std::move(number).error()), "writing the CRL"));
    std::cout << "CRL " << *number << " written to " << ws.crl.string()
              << " (one CRL per issuing CA)\n"
              << "next: restart the broker (a SIGHUP is not enough) and onboardctl serve, so that "
                 "they use the new issuing CA and chain; take the root key offline again\n";
    return kExitOk;
  });
}

}  // namespace

void add_ca_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* ca = app.add_subcommand(
      "ca", "The certificate authority: create it, issue, list, revoke and verify certificates");
  ca->require_subcommand(1);
  add_init(*ca, global, exit_code);
  add_cert(*ca, global, exit_code);
  add_issue(*ca, global, exit_code);
  add_issue_server(*ca, global, exit_code);
  add_list(*ca, global, exit_code);
  add_revoke(*ca, global, exit_code);
  add_rotate(*ca, global, exit_code);
  add_status(*ca, global, exit_code);
  add_verify(*ca, global, exit_code);
  add_set_ocsp_url(*ca, global, exit_code);
}

}  // namespace onboard::cli
