// The plugin's client certificate towards the signer (plugin_opt_provision_certfile/_keyfile),
// against a real TLS server that verifies client certificates: what init checks is what the
// signer's connections use. The certificates are made with the openssl command: a root, an
// intermediate that signs the plugin's certificate, and the signer's own certificate.
#include <httplib.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "plugin/provisioner.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::plugin;
using namespace onboard::test;

namespace {

void openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "/usr/bin/openssl");
  auto r = run(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}

// root -> intermediate -> the plugin's certificate "broker"; root -> the signer's "signer".
class Pki {
 public:
  Pki() {
    std::ofstream(dir_ / "ca.ext") << "basicConstraints=critical,CA:TRUE\n"
                                      "keyUsage=critical,keyCertSign,cRLSign\n";
    std::ofstream(dir_ / "client.ext") << "basicConstraints=critical,CA:FALSE\n"
                                          "extendedKeyUsage=clientAuth\n";
    std::ofstream(dir_ / "server.ext") << "basicConstraints=critical,CA:FALSE\n"
                                          "extendedKeyUsage=serverAuth\n"
                                          "subjectAltName=IP:127.0.0.1\n";
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", path("root.key"), "-out", path("root.crt"), "-subj", "/CN=root", "-days",
             "1"});
    issue("inter", "root", "ca.ext", 2);
    issue("broker", "inter", "client.ext", 3);
    issue("other", "inter", "client.ext", 4);
    issue("signer", "root", "server.ext", 5);
    std::ofstream(dir_ / "broker-chain.pem") << read("broker.crt") << read("inter.crt");
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // The broker's key encrypted, as PKCS#8 or in OpenSSL's traditional format.
  std::string encrypted_key(bool traditional) {
    const std::string out = path(traditional ? "broker-trad.key" : "broker-pkcs8.key");
    std::vector<std::string> args{
        "pkey", "-in", path("broker.key"), "-aes256", "-passout", "pass:a passphrase", "-out", out};
    if (traditional) args.push_back("-traditional");
    openssl(args);
    return out;
  }

 private:
  void issue(const std::string& name, const std::string& issuer, const std::string& ext,
             int serial) {
    openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", path(name + ".key"), "-out", path(name + ".csr"), "-subj", "/CN=" + name});
    openssl({"x509", "-req", "-in", path(name + ".csr"), "-CA", path(issuer + ".crt"), "-CAkey",
             path(issuer + ".key"), "-set_serial", std::to_string(serial), "-days", "1", "-extfile",
             path(ext), "-out", path(name + ".crt")});
  }
  std::string read(const std::string& name) const {
    std::ifstream in(dir_ / name);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  TempDir dir_;
};

// A signer stand-in over TLS that requires a client certificate verifying against `client_ca`
// alone, and answers every renewal "rejected" with the code "reached".
class TlsSigner {
 public:
  TlsSigner(const Pki& pki, const std::string& client_ca)
      : server_(pki.path("signer.crt").c_str(), pki.path("signer.key").c_str(), client_ca.c_str()) {
    REQUIRE(server_.is_valid());
    server_.Post(".*", [](const httplib::Request&, httplib::Response& response) {
      response.set_header("X-Provision-Result", "rejected");
      response.set_header("X-Provision-Code", "reached");
      response.set_content("{}", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~TlsSigner() {
    server_.stop();
    thread_.join();
  }
  TlsSigner(const TlsSigner&) = delete;
  TlsSigner& operator=(const TlsSigner&) = delete;
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
};

SignerOptions options(const Pki& pki, const TlsSigner& signer, const std::string& certfile,
                      const std::string& keyfile) {
  SignerOptions out;
  out.url = signer.url();
  out.cafile = pki.path("root.crt");
  out.timeout = std::chrono::milliseconds(3000);
  out.certfile = certfile;
  out.keyfile = keyfile;
  return out;
}

const ProvisionRequest kRenewal{"", "dev-1", "{}", RequestKind::renew, std::string(64, 'a')};

}  // namespace

TEST_CASE("the plugin's certificate chain reaches a signer that trusts only the root") {
  Pki pki;
  TlsSigner signer(pki, pki.path("root.crt"));
  // The chain file: checked at init and sent whole, so the signer can verify it up to the root.
  const auto chain = pki.path("broker-chain.pem");
  REQUIRE(check_client_credential(chain, pki.path("broker.key")).ok());
  auto answer = http_signer(options(pki, signer, chain, pki.path("broker.key")))->send(kRenewal);
  CHECK(answer.result == "rejected");
  CHECK(answer.code == "reached");

  // The certificate alone (a valid credential: init takes it) cannot be verified by this signer,
  // which does not hold the intermediate: the handshake fails. The chain above is what passed.
  const auto alone = pki.path("broker.crt");
  REQUIRE(check_client_credential(alone, pki.path("broker.key")).ok());
  auto client = http_signer(options(pki, signer, alone, pki.path("broker.key")));
  CHECK_THROWS_WITH(client->send(kRenewal), Catch::Contains("cannot be reached"));
}

TEST_CASE("an encrypted key is refused at init with a message that says so") {
  Pki pki;
  const auto chain = pki.path("broker-chain.pem");
  // Positive control: the same key unencrypted is taken.
  CHECK(check_client_credential(chain, pki.path("broker.key")).ok());
  for (bool traditional : {false, true}) {
    INFO("traditional format: " << traditional);
    const auto key = pki.encrypted_key(traditional);
    auto checked = check_client_credential(chain, key);
    REQUIRE_FALSE(checked.ok());
    CHECK_THAT(checked.error().message, Catch::Contains(key + " is an encrypted key") &&
                                            Catch::Contains("cannot ask for its passphrase"));
  }
  // Other failures say what they are, not "encrypted".
  auto mismatched = check_client_credential(chain, pki.path("other.key"));
  REQUIRE_FALSE(mismatched.ok());
  CHECK_THAT(mismatched.error().message,
             Catch::Contains("not the key") && !Catch::Contains("encrypted"));
  auto no_certificate = check_client_credential(pki.path("nowhere.crt"), pki.path("broker.key"));
  REQUIRE_FALSE(no_certificate.ok());
  CHECK_THAT(no_certificate.error().message, Catch::Contains("plugin_opt_provision_certfile"));
}

TEST_CASE("a signer connection whose key is encrypted fails each request without a prompt") {
  Pki pki;
  TlsSigner signer(pki, pki.path("root.crt"));
  const auto chain = pki.path("broker-chain.pem");
  auto client = http_signer(options(pki, signer, chain, pki.encrypted_key(false)));
  CHECK_THROWS_WITH(client->send(kRenewal), Catch::Contains("is an encrypted key"));
  // Positive control: the unencrypted key reaches the signer.
  auto good = http_signer(options(pki, signer, chain, pki.path("broker.key")));
  CHECK(good->send(kRenewal).code == "reached");
}
