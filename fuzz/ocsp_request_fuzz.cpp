// ca/ocsp.h: parse_ocsp_request parses the DER OCSP request anyone may POST to /ocsp, and
// decode_ocsp_get_path the base64 of GET /ocsp/{request}. Invariants: an accepted request names
// 1 to kMaxOcspRequestIds certificates, each serial empty or upper-case hex of at most 40 digits;
// matching its IDs against a CA never fails loudly; a signed answer can always be built for it
// (its nonce echoed whatever it holds) and reads back as a successful response with one status
// per ID. A decoded GET path is within the request size bound.
#include <openssl/ocsp.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "ca/certificate.h"
#include "ca/keys.h"
#include "ca/ocsp.h"

namespace {

using namespace onboard;

constexpr UnixTime kNow = 1'800'000'000;

// A root CA and a responder it delegated to, made once.
struct Fixture {
  ossl::Ptr<X509> root;
  ca::OcspResponder responder;
};

const Fixture& fixture() {
  static const Fixture made = [] {
    Fixture f;
    auto root_key = ca::generate_key(ca::KeyAlg::p256);
    if (!root_key) std::abort();
    ca::KeySigner signer(std::move(root_key).value());
    ca::CertificateRequest root;
    root.profile = ca::Profile::root_ca;
    root.common_name = "Fuzz Root";
    root.public_key = signer.public_key();
    root.not_before = kNow - 86400;
    root.not_after = kNow + 365 * 86400;
    auto root_cert = ca::issue_certificate(root, nullptr, signer);
    auto key = ca::generate_key(ca::KeyAlg::p256);
    if (!root_cert || !key) std::abort();
    ca::CertificateRequest responder;
    responder.profile = ca::Profile::ocsp_responder;
    responder.common_name = "Fuzz OCSP Responder";
    responder.public_key = key->get();
    responder.not_before = kNow - 86400;
    responder.not_after = kNow + 7 * 86400;
    auto responder_cert = ca::issue_certificate(responder, root_cert->get(), signer);
    if (!responder_cert) std::abort();
    f.root = std::move(root_cert).value();
    f.responder = ca::OcspResponder{std::move(responder_cert).value(), std::move(key).value()};
    return f;
  }();
  return made;
}

bool is_upper_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto& f = fixture();

  if (auto decoded = ca::decode_ocsp_get_path(input)) {
    if (decoded->size() > ca::kMaxOcspRequestBytes) std::abort();
  }

  auto request = ca::parse_ocsp_request(input);
  if (!request) {
    if (request.error().code != Errc::invalid_input) std::abort();
    return 0;
  }
  if (request->ids.empty() || request->ids.size() > ca::kMaxOcspRequestIds) std::abort();
  std::vector<ca::OcspAnswer> answers;
  int n = 0;
  for (const auto& id : request->ids) {
    if (id.serial_hex.size() > 40 || !is_upper_hex(id.serial_hex)) std::abort();
    ca::OcspAnswer answer;
    if (ca::ocsp_id_matches_issuer(id, f.root.get())) answer.status = ca::OcspStatus::good;
    if (n++ % 2 == 1) {
      answer.status = ca::OcspStatus::revoked;
      answer.revoked_at = kNow - 60;
      answer.reason = RevocationReason::key_compromise;
    }
    answers.push_back(answer);
  }
  auto der = ca::build_ocsp_response(*request, answers, f.responder, kNow, kNow + 3600);
  if (!der) std::abort();
  const auto* p = reinterpret_cast<const unsigned char*>(der->data());
  ossl::Ptr<OCSP_RESPONSE> response(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der->size())));
  if (!response || OCSP_response_status(response.get()) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
    std::abort();
  ossl::Ptr<OCSP_BASICRESP> basic(OCSP_response_get1_basic(response.get()));
  if (!basic || OCSP_resp_count(basic.get()) != static_cast<int>(request->ids.size())) std::abort();
  return 0;
}
