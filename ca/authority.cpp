#include "ca/authority.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <system_error>
#include <vector>

#include "ca/pkcs11.h"
#include "core/files.h"

namespace onboard::ca {
namespace {

constexpr UnixTime kDay = 86400;
// The intermediate's key in a token: the root key's label with this after it.
constexpr const char* kIssuingSuffix = "-issuing";

// Removes files written by a CA creation that did not finish.
class Rollback {
 public:
  ~Rollback() {
    for (const auto& path : written_) {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  }
  Status write(const std::filesystem::path& path, std::string_view data, mode_t mode) {
    ONBOARD_CHECK(write_file_atomic(path, data, mode, Overwrite::refuse));
    written_.push_back(path);
    return ok_status();
  }
  void add(const std::filesystem::path& path) { written_.push_back(path); }
  void commit() { written_.clear(); }

 private:
  std::vector<std::filesystem::path> written_;
};

// A key made for a new CA: in memory (to be written to its file) or in a PKCS#11 token.
struct NewKey {
  std::unique_ptr<Signer> signer;
  Secret pem;       // the key file's contents; empty for a key in a token
  std::string uri;  // where the key is in its token; empty for a key file
};

// Deletes the keys a CA creation made in a token when the creation does not finish. Declared
// after the keys it watches, so that it runs while they still exist.
class TokenRollback {
 public:
  ~TokenRollback() {
    for (auto* key : made_) (void)key->destroy();
  }
  void add(Pkcs11Signer* key) { made_.push_back(key); }
  void commit() { made_.clear(); }

 private:
  std::vector<Pkcs11Signer*> made_;
};

// The module a new token CA uses: --pkcs11-module (or its environment variable), else the URI's
// module-path.
Result<std::string> token_module(const CaInitOptions& options, const Pkcs11Uri& uri) {
  std::string module = !options.pkcs11_module.empty() ? options.pkcs11_module : uri.module_path;
  if (module.empty()) {
    return make_error(Errc::invalid_input,
                      "a CA key in a PKCS#11 token needs its module: --pkcs11-module PATH or "
                      "ONBOARD_PKCS11_MODULE (e.g. /usr/lib/softhsm/libsofthsm2.so)");
  }
  return module;
}

Error pin_missing(std::string_view uri) {
  return make_error(Errc::bad_passphrase, "the CA key is in a PKCS#11 token (" + std::string(uri) +
                                              "): give its user PIN with --passphrase-env VAR "
                                              "or --passphrase-file FILE");
}

// The root's key (`suffix` empty) or the intermediate's ("-issuing" after the root's label).
Result<NewKey> make_ca_key(KeyAlg alg, const CaInitOptions& options, const std::string& suffix,
                           TokenRollback& rollback) {
  NewKey key;
  if (options.token_key_uri.empty()) {
    ONBOARD_TRY(auto pkey, generate_key(alg));
    ONBOARD_TRY(key.pem, private_key_to_pem(pkey.get(), options.passphrase));
    key.signer = std::make_unique<KeySigner>(std::move(pkey));
    return key;
  }
  ONBOARD_TRY(auto uri, parse_pkcs11_uri(options.token_key_uri));
  if (options.passphrase == nullptr) return pin_missing(options.token_key_uri);
  ONBOARD_TRY(std::string module, token_module(options, uri));
  if (!suffix.empty()) {
    uri.object += suffix;
    uri.id.clear();  // a fresh random one
  }
  ONBOARD_TRY(auto token_key, Pkcs11Signer::generate(module, uri, *options.passphrase, alg));
  rollback.add(token_key.get());
  key.uri = token_key->uri();
  key.signer = std::move(token_key);
  return key;
}

// Opens a CA key kept in a token and checks that it is the key of `cert`.
Result<std::unique_ptr<Signer>> open_token_key(const TokenKeys& keys, const std::string& uri_text,
                                               const Secret* pin, const X509* cert) {
  ONBOARD_TRY(auto uri, parse_pkcs11_uri(uri_text));
  if (pin == nullptr) return pin_missing(uri_text);
  ONBOARD_TRY(auto signer, Pkcs11Signer::open(pkcs11_module_path(keys.module), uri, *pin));
  if (X509_check_private_key(cert, signer->public_key()) != 1) {
    ossl::clear_errors();
    return make_error(Errc::corrupt,
                      "the token key " + uri_text + " is not the key of the CA certificate");
  }
  return std::unique_ptr<Signer>(std::move(signer));
}

// ca.json's "key" member for keys in a token: {"pkcs11": {"module", "root", "issuing", "kept"}}.
nlohmann::json token_keys_json(const TokenKeys& keys) {
  nlohmann::json token = {
      {"module", keys.module}, {"root", keys.root_uri}, {"issuing", keys.issuing_uri}};
  if (!keys.kept_uris.empty()) token["kept"] = keys.kept_uris;
  return {{"pkcs11", std::move(token)}};
}

// "2026-12-07T01:20:00Z" -> "20261207T012000Z": a token key label made unique by its time.
std::string compact_time(UnixTime now) {
  std::string out;
  for (char c : iso_time(now)) {
    if (std::isalnum(static_cast<unsigned char>(c))) out.push_back(c);
  }
  return out;
}

Result<ossl::Ptr<X509>> read_certificate(const std::filesystem::path& path) {
  ONBOARD_TRY(std::string pem, read_file(path));
  auto cert = certificate_from_pem(pem);
  if (!cert.ok()) return make_error(Errc::corrupt, path.string() + ": " + cert.error().message);
  return cert;
}

Status check_days(int days, const char* what) {
  if (days < 1 || days > 36500) {
    return make_error(Errc::invalid_input, std::string(what) + " validity must be 1 to 36500 days");
  }
  return ok_status();
}

// ---- kept earlier issuing CAs ('ca rotate') ----

constexpr std::string_view kRetiredPrefix = "issuing-";

// The issuing CAs kept in `paths.dir` as issuing-<SERIAL>.crt, newest (latest not-before) first.
Result<std::vector<RetiredIssuer>> read_retired_issuers(const CaPaths& paths) {
  std::vector<RetiredIssuer> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(paths.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kRetiredPrefix) || !name.ends_with(".crt")) continue;
    const std::string serial =
        name.substr(kRetiredPrefix.size(), name.size() - kRetiredPrefix.size() - 4);
    RetiredIssuer retired;
    ONBOARD_TRY(retired.cert, read_certificate(entry.path()));
    if (describe_certificate(retired.cert.get()).serial_hex != serial) {
      return make_error(Errc::corrupt, entry.path().string() +
                                           " does not hold the certificate of serial " + serial);
    }
    retired.cert_path = entry.path();
    retired.key_path = paths.retired_key(serial);
    found.push_back(std::move(retired));
  }
  if (ec) return make_error(Errc::io, "cannot list " + paths.dir.string() + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const RetiredIssuer& a, const RetiredIssuer& b) {
    return describe_certificate(a.cert.get()).not_before >
           describe_certificate(b.cert.get()).not_before;
  });
  return found;
}

// A CA key file, wiped from memory once parsed, checked to be the key of `cert` (named `what` in
// the error) before it signs anything.
Result<std::unique_ptr<Signer>> load_key_signer(const std::filesystem::path& path, const X509* cert,
                                                const std::string& what, const Secret* passphrase) {
  ONBOARD_TRY(std::string pem, read_file(path, 1 << 20));
  auto key = private_key_from_pem(pem, passphrase);
  std::fill(pem.begin(), pem.end(), '\0');
  if (!key.ok()) {
    Error e = std::move(key).error();
    e.message = path.string() + ": " + e.message;
    return e;
  }
  if (X509_check_private_key(cert, key.value().get()) != 1) {
    ossl::clear_errors();
    return make_error(Errc::corrupt, path.string() + " does not hold the key of " + what);
  }
  return std::unique_ptr<Signer>(std::make_unique<KeySigner>(std::move(key).value()));
}

// A kept issuing CA's key: it still signs the CRL of the devices it issued.
Result<std::unique_ptr<Signer>> load_retired_signer(const RetiredIssuer& retired,
                                                    const Secret* passphrase) {
  const auto& path = retired.key_path;
  if (!std::filesystem::exists(path)) {
    return make_error(Errc::not_found,
                      "the earlier issuing CA " + retired.cert_path.string() +
                          " is kept but its key " + path.string() +
                          " is missing: it must sign its devices' CRL. Put the key back, or retire "
                          "that CA (move both files away, see 'CA rotation' in the docs)");
  }
  return load_key_signer(path, retired.cert.get(), retired.cert_path.string(), passphrase);
}

// The subject's O=, for a new issuing CA named like the one it replaces.
std::string organization_of(const X509* cert) {
  const X509_NAME* name = X509_get_subject_name(cert);
  const int at = X509_NAME_get_index_by_NID(name, NID_organizationName, -1);
  if (at < 0) return {};
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, data);
  if (length < 0) {
    ossl::clear_errors();
    return {};
  }
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  return out;
}

// "<name> YYYY-MM-DD": the replaced CA's common name with the date of `now`, its own date (from
// an earlier rotation) replaced.
std::string rotated_name(const std::string& current, UnixTime now) {
  std::string base = current;
  const auto is_date = [](std::string_view t) {
    return t.size() == 10 && t[4] == '-' && t[7] == '-' &&
           std::all_of(t.begin(), t.end(), [](char c) {
             return c == '-' || std::isdigit(static_cast<unsigned char>(c));
           });
  };
  if (base.size() > 11 && base[base.size() - 11] == ' ' &&
      is_date(std::string_view(base).substr(base.size() - 10)))
    base.resize(base.size() - 11);
  return base + " " + iso_time(now).substr(0, 10);
}

}  // namespace

std::filesystem::path CaPaths::retired_cert(std::string_view serial_hex) const {
  return dir / (std::string(kRetiredPrefix) + std::string(serial_hex) + ".crt");
}
std::filesystem::path CaPaths::retired_key(std::string_view serial_hex) const {
  return dir / (std::string(kRetiredPrefix) + std::string(serial_hex) + ".key");
}

CaPaths::CaPaths(const std::filesystem::path& data_dir)
    : dir(data_dir / "ca"),
      root_cert(dir / "root.crt"),
      root_key(dir / "root.key"),
      issuing_cert(dir / "issuing.crt"),
      issuing_key(dir / "issuing.key"),
      settings(dir / "ca.json") {}

IssuedCertificate make_issued(ossl::Ptr<X509> cert) {
  IssuedCertificate issued;
  issued.pem = certificate_to_pem(cert.get());
  issued.info = describe_certificate(cert.get());
  issued.cert = std::move(cert);
  return issued;
}

Result<Authority> Authority::create(const std::filesystem::path& data_dir,
                                    const CaInitOptions& options, UnixTime now) {
  CaPaths paths(data_dir);
  if (std::filesystem::exists(paths.root_cert) || std::filesystem::exists(paths.root_key)) {
    return make_error(Errc::conflict, "a CA is already initialised in " + paths.dir.string() +
                                          "; refusing to overwrite it");
  }
  ONBOARD_CHECK(check_days(options.root_days, "root CA"));
  if (options.intermediate) ONBOARD_CHECK(check_days(options.intermediate_days, "issuing CA"));
  if (!options.crl_url.empty()) {
    if (auto problem = crl_url_problem(options.crl_url))
      return make_error(Errc::invalid_input, *problem);
  }
  std::string root_crl_url = options.root_crl_url;
  if (!root_crl_url.empty() && !options.intermediate) {
    return make_error(Errc::invalid_input,
                      "a root CRL URL goes with --intermediate: without one the root signs the "
                      "only CRL, at the CRL URL");
  }
  if (options.intermediate && root_crl_url.empty())
    root_crl_url = derived_root_crl_url(options.crl_url);
  if (!root_crl_url.empty()) {
    if (auto problem = crl_url_problem(root_crl_url))
      return make_error(Errc::invalid_input, "root CRL URL: " + *problem);
  }
  if (!options.ocsp_url.empty()) {
    if (auto problem = ocsp_url_problem(options.ocsp_url))
      return make_error(Errc::invalid_input, *problem);
  }
  if (!options.intermediate && options.root_days < 2) {
    return make_error(Errc::invalid_input, "root CA validity is too short to issue anything");
  }

  // The keys first: a token that is missing or refuses the PIN leaves no CA directory behind.
  NewKey root_key, issuing_key;
  TokenRollback token_rollback;
  ONBOARD_TRY(root_key, make_ca_key(options.root_key_alg, options, "", token_rollback));
  if (options.intermediate) {
    ONBOARD_TRY(issuing_key,
                make_ca_key(options.intermediate_key_alg, options, kIssuingSuffix, token_rollback));
  }

  std::error_code ec;
  std::filesystem::create_directories(paths.dir, ec);
  if (ec) return make_error(Errc::io, "cannot create " + paths.dir.string() + ": " + ec.message());
  // Certificates in here must be readable by the broker after it drops privileges; keys are 0600.
  ::chmod(paths.dir.c_str(), 0755);

  CertificateRequest root_request;
  root_request.profile = Profile::root_ca;
  root_request.common_name = options.common_name;
  root_request.organization = options.organization;
  root_request.public_key = root_key.signer->public_key();
  root_request.not_before = now - 300;  // tolerate clock skew between the CA and relying parties
  root_request.not_after = now + options.root_days * kDay;
  root_request.path_length = options.intermediate ? 1 : 0;
  ONBOARD_TRY(auto root, issue_certificate(root_request, nullptr, *root_key.signer));

  Authority ca(paths);
  ca.crl_url_ = options.crl_url;
  ca.root_crl_url_ = root_crl_url;
  ca.ocsp_url_ = options.ocsp_url;
  Rollback rollback;
  if (root_key.uri.empty())
    ONBOARD_CHECK(rollback.write(paths.root_key, root_key.pem.view(), 0600));
  ONBOARD_CHECK(rollback.write(paths.root_cert, certificate_to_pem(root.get()), 0644));

  if (options.intermediate) {
    CertificateRequest request;
    request.profile = Profile::intermediate_ca;
    request.common_name = options.intermediate_common_name;
    request.organization = options.organization;
    request.public_key = issuing_key.signer->public_key();
    request.not_before = now - 300;
    request.not_after = std::min(now + options.intermediate_days * kDay, root_request.not_after);
    request.path_length = 0;
    // The intermediate's revocation is published by its issuer, the root.
    request.crl_url = root_crl_url;
    ONBOARD_TRY(auto issuing, issue_certificate(request, root.get(), *root_key.signer));
    if (issuing_key.uri.empty())
      ONBOARD_CHECK(rollback.write(paths.issuing_key, issuing_key.pem.view(), 0600));
    ONBOARD_CHECK(rollback.write(paths.issuing_cert, certificate_to_pem(issuing.get()), 0644));
    ca.issuing_ = std::move(issuing);
  }
  nlohmann::json settings = {{"crl_url", options.crl_url}, {"root_crl_url", root_crl_url}};
  if (!options.ocsp_url.empty()) settings["ocsp_url"] = options.ocsp_url;
  if (!root_key.uri.empty()) {
    ONBOARD_TRY(auto uri, parse_pkcs11_uri(options.token_key_uri));
    ONBOARD_TRY(std::string module, token_module(options, uri));
    TokenKeys keys{module, root_key.uri, issuing_key.uri, {}};
    settings["key"] = token_keys_json(keys);
    ca.token_keys_ = std::move(keys);
  }
  ONBOARD_CHECK(rollback.write(paths.settings, settings.dump(2) + "\n", 0644));
  rollback.commit();
  token_rollback.commit();
  ca.signer_ = std::move(options.intermediate ? issuing_key.signer : root_key.signer);
  ca.root_ = std::move(root);
  return ca;
}

Result<Authority> Authority::open(const std::filesystem::path& data_dir) {
  CaPaths paths(data_dir);
  if (!std::filesystem::exists(paths.root_cert)) {
    return make_error(Errc::not_found,
                      "no CA in " + paths.dir.string() + "; run 'onboardctl ca init' first");
  }
  Authority ca(paths);
  ONBOARD_TRY(ca.root_, read_certificate(paths.root_cert));
  if (std::filesystem::exists(paths.issuing_cert)) {
    ONBOARD_TRY(ca.issuing_, read_certificate(paths.issuing_cert));
    ONBOARD_TRY(ca.retired_, read_retired_issuers(paths));
  }
  if (std::filesystem::exists(paths.settings)) {
    ONBOARD_TRY(std::string text, read_file(paths.settings, 65536));
    nlohmann::json settings = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!settings.is_object() || !settings.value("crl_url", nlohmann::json("")).is_string() ||
        !settings.value("root_crl_url", nlohmann::json("")).is_string() ||
        !settings.value("ocsp_url", nlohmann::json("")).is_string()) {
      return make_error(Errc::corrupt, paths.settings.string() + " is not valid CA settings JSON");
    }
    ca.crl_url_ = settings.value("crl_url", "");
    ca.root_crl_url_ = settings.value("root_crl_url", "");
    ca.ocsp_url_ = settings.value("ocsp_url", "");
    if (settings.contains("key")) {
      // {"pkcs11": {"module": PATH, "root": URI, "issuing": URI or ""}}
      const auto& key = settings["key"];
      const auto token = key.is_object() ? key.value("pkcs11", nlohmann::json()) : nlohmann::json();
      auto field = [&token](const char* name) -> const std::string* {
        const auto it = token.find(name);
        return it != token.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
      };
      if (!token.is_object() || !field("module") || !field("root") || !field("issuing") ||
          (ca.issuing_ && field("issuing")->empty())) {
        return make_error(Errc::corrupt,
                          paths.settings.string() + ": the CA key's PKCS#11 settings are damaged");
      }
      ca.token_keys_ = TokenKeys{*field("module"), *field("root"), *field("issuing"), {}};
      // {"SERIAL": URI}: the keys of the issuing CAs 'ca rotate' kept.
      if (const auto kept = token.find("kept"); kept != token.end()) {
        if (!kept->is_object()) {
          return make_error(Errc::corrupt, paths.settings.string() +
                                               ": the kept issuing CAs' PKCS#11 keys are damaged");
        }
        for (const auto& [serial, uri] : kept->items()) {
          if (!uri.is_string()) {
            return make_error(
                Errc::corrupt,
                paths.settings.string() + ": the kept issuing CAs' PKCS#11 keys are damaged");
          }
          ca.token_keys_->kept_uris[serial] = uri.get<std::string>();
        }
      }
    }
  }
  return ca;
}

Status Authority::set_ocsp_url(const std::filesystem::path& data_dir, std::string_view url) {
  if (!url.empty()) {
    if (auto problem = ocsp_url_problem(url)) return make_error(Errc::invalid_input, *problem);
  }
  ONBOARD_TRY(Authority ca, open(data_dir));  // a CA is here and its settings read
  nlohmann::json settings = nlohmann::json::object();
  if (std::filesystem::exists(ca.paths_.settings)) {
    ONBOARD_TRY(std::string text, read_file(ca.paths_.settings, 65536));
    settings = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
  // Other settings are kept as they are.
  if (url.empty())
    settings.erase("ocsp_url");
  else
    settings["ocsp_url"] = std::string(url);
  return write_file_atomic(ca.paths_.settings, settings.dump(2) + "\n", 0644, Overwrite::replace);
}

Status Authority::load_signing_key(const Secret* passphrase) {
  if (token_keys_) {
    const auto& uri = issuing_ ? token_keys_->issuing_uri : token_keys_->root_uri;
    ONBOARD_TRY(signer_, open_token_key(*token_keys_, uri, passphrase, issuer()));
    for (auto& retired : retired_) {
      const auto kept =
          token_keys_->kept_uris.find(describe_certificate(retired.cert.get()).serial_hex);
      if (kept == token_keys_->kept_uris.end()) {
        // Not in the token: a key file beside it, or the error that says it is missing.
        ONBOARD_TRY(retired.signer, load_retired_signer(retired, passphrase));
      } else {
        ONBOARD_TRY(retired.signer,
                    open_token_key(*token_keys_, kept->second, passphrase, retired.cert.get()));
      }
    }
    return ok_status();
  }
  const auto& path = issuing_ ? paths_.issuing_key : paths_.root_key;
  auto signer = load_key_signer(path, issuer(), "the CA certificate", passphrase);
  if (!signer.ok()) {
    Error e = std::move(signer).error();
    if (e.code == Errc::bad_passphrase && (passphrase == nullptr || passphrase->empty())) {
      e.message += " (pass --passphrase-env VAR or --passphrase-file FILE)";
    }
    return e;
  }
  signer_ = std::move(signer).value();
  for (auto& retired : retired_) {
    ONBOARD_TRY(retired.signer, load_retired_signer(retired, passphrase));
  }
  return ok_status();
}

Result<std::unique_ptr<Signer>> Authority::load_root_signer(const Secret* passphrase) const {
  if (token_keys_)
    return open_token_key(*token_keys_, token_keys_->root_uri, passphrase, root_.get());
  const auto& path = paths_.root_key;
  if (!std::filesystem::exists(path)) {
    return make_error(Errc::not_found,
                      "the root CA key " + path.string() + " is not here (kept offline?)");
  }
  return load_key_signer(path, root_.get(), "the root CA certificate", passphrase);
}

Status check_token_access(const CaInitOptions& options) {
  if (options.token_key_uri.empty()) return ok_status();
  ONBOARD_TRY(auto uri, parse_pkcs11_uri(options.token_key_uri));
  if (options.passphrase == nullptr) return pin_missing(options.token_key_uri);
  ONBOARD_TRY(std::string module, token_module(options, uri));
  std::vector<std::string> labels{uri.object};
  if (options.intermediate) labels.push_back(uri.object + kIssuingSuffix);
  return Pkcs11Signer::check_access(module, uri, *options.passphrase, labels);
}

std::string derived_root_crl_url(std::string_view crl_url) {
  if (crl_url.empty()) return {};
  const auto scheme = crl_url.find("://");
  const auto host_start = scheme == std::string_view::npos ? 0 : scheme + 3;
  const auto path_start = crl_url.find('/', host_start);
  if (path_start == std::string_view::npos) return std::string(crl_url) + "/root-crl";
  const auto last = crl_url.rfind('/');
  const std::string_view segment = crl_url.substr(last + 1);
  return std::string(crl_url.substr(0, last + 1)) + "root-crl" +
         (segment.ends_with(".pem") ? ".pem" : "");
}

std::string issuer_crl_url(std::string_view crl_url, std::string_view issuer_serial_hex) {
  if (crl_url.empty() || crl_url.ends_with(".pem")) return std::string(crl_url);
  std::string url(crl_url);
  if (!url.ends_with('/')) url += '/';
  return url + std::string(issuer_serial_hex);
}

std::string Authority::issuing_crl_url() const {
  if (retired_.empty()) return crl_url_;
  return issuer_crl_url(crl_url_, describe_certificate(issuer()).serial_hex);
}

std::string Authority::chain_pem() const {
  std::string pem;
  if (issuing_) pem += certificate_to_pem(issuing_.get());
  for (const auto& retired : retired_) pem += certificate_to_pem(retired.cert.get());
  pem += certificate_to_pem(root_.get());
  return pem;
}

Result<IssuedCertificate> Authority::issue(CertificateRequest request) const {
  if (!signer_) return make_error(Errc::internal, "the CA signing key is not loaded");
  if (request.profile != Profile::device && request.profile != Profile::server) {
    return make_error(Errc::internal, "the CA issues device and server certificates only");
  }
  if (request.crl_url.empty()) request.crl_url = issuing_crl_url();
  if (request.ocsp_url.empty()) request.ocsp_url = ocsp_url_;
  ONBOARD_TRY(auto cert, issue_certificate(request, issuer(), *signer_));
  return make_issued(std::move(cert));
}

Status Authority::rotate(const Signer& root_signer, const RotateOptions& options, UnixTime now) {
  if (!issuing_) {
    return make_error(Errc::invalid_input,
                      "this CA has no issuing intermediate: its root signs devices itself, and a "
                      "root cannot be rotated this way (every device certificate hangs on it). "
                      "Rotation replaces an intermediate; a CA made without --intermediate needs "
                      "a new CA made with --intermediate and its devices re-enrolled");
  }
  if (!signer_) return make_error(Errc::internal, "the CA signing key is not loaded");
  if (EVP_PKEY_eq(root_signer.public_key(), X509_get0_pubkey(root_.get())) != 1) {
    ossl::clear_errors();
    return make_error(Errc::invalid_input, "the signer given does not hold the root CA's key");
  }
  ONBOARD_CHECK(check_days(options.days, "issuing CA"));
  const CertificateInfo old_info = describe_certificate(issuing_.get());
  const std::string name =
      options.common_name.empty() ? rotated_name(old_info.subject_cn, now) : options.common_name;
  if (auto problem = subject_name_problem(name)) return make_error(Errc::invalid_input, *problem);
  std::vector<const X509*> issuers{root_.get(), issuing_.get()};
  for (const auto& r : retired_) issuers.push_back(r.cert.get());
  for (const X509* other : issuers) {
    if (describe_certificate(other).subject_cn == name) {
      return make_error(Errc::invalid_input,
                        "'" + name +
                            "' is the name of an issuer of this CA already; give the new "
                            "issuing CA another name (--name): CRLs and the registry tell issuers "
                            "apart by name");
    }
  }
  const auto root_not_after = describe_certificate(root_.get()).not_after;
  if (root_not_after <= now + kDay) {
    return make_error(Errc::invalid_input,
                      "the root CA expires within a day: a new intermediate under it is no use");
  }
  const auto retired_cert = paths_.retired_cert(old_info.serial_hex);
  const auto retired_key = paths_.retired_key(old_info.serial_hex);
  if (std::filesystem::exists(retired_cert) || std::filesystem::exists(retired_key)) {
    return make_error(Errc::conflict,
                      retired_cert.string() + " exists already; refusing to overwrite it");
  }

  // The new key: generated in the CA's token (deleted again if the rotation does not finish), or
  // in memory for a key file.
  ossl::Ptr<EVP_PKEY> file_key;
  std::unique_ptr<Pkcs11Signer> token_key;
  TokenRollback token_rollback;  // after token_key: it runs while the key is still open
  if (token_keys_) {
    if (options.passphrase == nullptr) return pin_missing(token_keys_->root_uri);
    ONBOARD_TRY(auto uri, parse_pkcs11_uri(token_keys_->root_uri));
    uri.object += std::string(kIssuingSuffix) + "-" + compact_time(now);
    uri.id.clear();  // a fresh random one
    ONBOARD_TRY(token_key, Pkcs11Signer::generate(pkcs11_module_path(token_keys_->module), uri,
                                                  *options.passphrase, options.key_alg));
    token_rollback.add(token_key.get());
  } else {
    ONBOARD_TRY(file_key, generate_key(options.key_alg));
  }
  CertificateRequest request;
  request.profile = Profile::intermediate_ca;
  request.common_name = name;
  request.organization = organization_of(issuing_.get());
  request.public_key = token_key ? token_key->public_key() : file_key.get();
  request.not_before = now - 300;
  request.not_after = std::min(now + options.days * kDay, root_not_after);
  request.path_length = 0;
  request.crl_url = root_crl_url_;  // its revocation is on the root's CRL, as the first one's
  ONBOARD_TRY(auto cert, issue_certificate(request, root_.get(), root_signer));
  if (token_key) {
    ONBOARD_CHECK(replace_token_issuer(cert.get(), token_key->uri(), old_info.serial_hex));
    token_rollback.commit();
    keep_current_issuer(retired_cert, retired_key);
    issuing_ = std::move(cert);
    signer_ = std::move(token_key);
    return ok_status();
  }
  ONBOARD_TRY(Secret key_pem, private_key_to_pem(file_key.get(), options.passphrase));

  // The new files under temporary names, the old ones linked to their kept names, then the new
  // ones renamed over the current names: until those renames the CA is as it was.
  const auto next_cert = paths_.dir / "issuing-next.crt.tmp";
  const auto next_key = paths_.dir / "issuing-next.key.tmp";
  std::error_code ignored;
  std::filesystem::remove(next_cert, ignored);
  std::filesystem::remove(next_key, ignored);
  Rollback rollback;
  ONBOARD_CHECK(rollback.write(next_key, key_pem.view(), 0600));
  ONBOARD_CHECK(rollback.write(next_cert, certificate_to_pem(cert.get()), 0644));
  for (const auto& [from, to] :
       {std::pair{paths_.issuing_key, retired_key}, std::pair{paths_.issuing_cert, retired_cert}}) {
    std::error_code ec;
    std::filesystem::create_hard_link(from, to, ec);
    if (ec)
      return make_error(
          Errc::io, "cannot keep " + from.string() + " as " + to.string() + ": " + ec.message());
    rollback.add(to);
  }
  std::error_code ec;
  std::filesystem::rename(next_key, paths_.issuing_key, ec);
  if (ec)
    return make_error(Errc::io,
                      "cannot replace " + paths_.issuing_key.string() + ": " + ec.message());
  std::filesystem::rename(next_cert, paths_.issuing_cert, ec);
  if (ec) {
    // Put the old key back under its name so that key and certificate match again.
    std::error_code undo;
    std::filesystem::copy_file(retired_key, paths_.issuing_key,
                               std::filesystem::copy_options::overwrite_existing, undo);
    return make_error(Errc::io,
                      "cannot replace " + paths_.issuing_cert.string() + ": " + ec.message());
  }
  rollback.commit();

  keep_current_issuer(retired_cert, retired_key);
  issuing_ = std::move(cert);
  signer_ = std::make_unique<KeySigner>(std::move(file_key));
  return ok_status();
}

void Authority::keep_current_issuer(const std::filesystem::path& cert_path,
                                    const std::filesystem::path& key_path) {
  RetiredIssuer kept;
  kept.cert = std::move(issuing_);
  kept.cert_path = cert_path;
  kept.key_path = key_path;
  kept.signer = std::move(signer_);
  retired_.insert(retired_.begin(), std::move(kept));
}

Status Authority::replace_token_issuer(const X509* cert, const std::string& key_uri,
                                       const std::string& old_serial) {
  // ca.json with the new key as the issuing one and the old one kept under its CA's serial.
  TokenKeys keys = *token_keys_;
  keys.kept_uris[old_serial] = keys.issuing_uri;
  keys.issuing_uri = key_uri;
  ONBOARD_TRY(std::string text, read_file(paths_.settings, 65536));
  nlohmann::json settings = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!settings.is_object())
    return make_error(Errc::corrupt, paths_.settings.string() + " is not valid CA settings JSON");
  settings["key"] = token_keys_json(keys);

  // Both new files under temporary names and the old certificate linked to its kept name; then
  // the certificate and the settings renamed into place. Until the first rename the CA is as it
  // was; a failed second rename puts the old certificate back.
  const auto next_cert = paths_.dir / "issuing-next.crt.tmp";
  const auto next_settings = paths_.dir / "ca.json.next.tmp";
  const auto kept_cert = paths_.retired_cert(old_serial);
  std::error_code ignored;
  std::filesystem::remove(next_cert, ignored);
  std::filesystem::remove(next_settings, ignored);
  Rollback rollback;
  ONBOARD_CHECK(rollback.write(next_cert, certificate_to_pem(cert), 0644));
  ONBOARD_CHECK(rollback.write(next_settings, settings.dump(2) + "\n", 0644));
  std::error_code ec;
  std::filesystem::create_hard_link(paths_.issuing_cert, kept_cert, ec);
  if (ec) {
    return make_error(Errc::io, "cannot keep " + paths_.issuing_cert.string() + " as " +
                                    kept_cert.string() + ": " + ec.message());
  }
  rollback.add(kept_cert);
  std::filesystem::rename(next_cert, paths_.issuing_cert, ec);
  if (ec) {
    return make_error(Errc::io,
                      "cannot replace " + paths_.issuing_cert.string() + ": " + ec.message());
  }
  std::filesystem::rename(next_settings, paths_.settings, ec);
  if (ec) {
    std::error_code undo;
    std::filesystem::copy_file(kept_cert, paths_.issuing_cert,
                               std::filesystem::copy_options::overwrite_existing, undo);
    return make_error(Errc::io, "cannot replace " + paths_.settings.string() + ": " + ec.message());
  }
  rollback.commit();
  token_keys_ = std::move(keys);
  return ok_status();
}

}  // namespace onboard::ca
