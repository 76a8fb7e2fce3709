#include "plugin/provisioner.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <stdexcept>

namespace onboard::plugin {
namespace {

// The characters of a device id (and so of a claim's name and a claim client's id): safe in a
// URL path without escaping. Anything else never reaches the signer.
bool id_characters(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// A SHA-256 fingerprint as the registry writes it: 64 lower-case hex digits.
bool fingerprint_characters(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

class HttpSigner final : public SignerClient {
 public:
  explicit HttpSigner(const SignerOptions& options) : client_(options.url), token_(options.token) {
    // The client certificate goes into httplib's TLS context by the loading init checked
    // (use_client_credential): its whole chain is sent (httplib's own loading sends the first
    // certificate alone) and an encrypted key is refused, never asked for on a terminal. A key
    // that became unusable since init fails every request, as an unreachable signer does.
    if (!options.certfile.empty()) {
      SSL_CTX* ctx = client_.ssl_context();
      if (ctx == nullptr) {
        credential_problem_ = "a client certificate needs an https:// signer";
      } else if (auto used = use_client_credential(*ctx, options.certfile, options.keyfile);
                 !used.ok()) {
        credential_problem_ = used.error().message;
      }
    }
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(options.timeout);
    const auto usec =
        std::chrono::duration_cast<std::chrono::microseconds>(options.timeout - seconds);
    client_.set_connection_timeout(seconds.count(), usec.count());
    client_.set_read_timeout(seconds.count(), usec.count());
    client_.set_write_timeout(seconds.count(), usec.count());
    client_.set_keep_alive(true);
    // Headers and body go out in two writes: without it Nagle's algorithm meets the server's
    // delayed ACK and every request waits 40 ms.
    client_.set_tcp_nodelay(true);
    if (!token_.empty()) client_.set_bearer_token_auth(token_);
    if (!options.cafile.empty()) client_.set_ca_cert_path(options.cafile);
    client_.enable_server_certificate_verification(true);
  }

  ProvisionAnswer send(const ProvisionRequest& request) override {
    if (!credential_problem_.empty()) throw std::runtime_error(credential_problem_);
    const bool enroll = request.kind == RequestKind::enroll;
    if ((enroll && !id_characters(request.claim)) || !id_characters(request.client_id) ||
        (!enroll && !fingerprint_characters(request.certificate_sha256))) {
      if (request.kind == RequestKind::connected)
        throw std::runtime_error("the request cannot be handed over");
      return rejection(request.client_id, "internal_error", "the request cannot be handed over",
                       true);
    }
    std::string path;
    httplib::Headers headers;
    if (enroll) {
      path = "/v1/provision/" + request.claim + "/" + request.client_id;
    } else {
      path = "/v1/renew/" + request.client_id;
      if (request.kind == RequestKind::connected) path += "/connected";
      headers.emplace("X-Client-Certificate", request.certificate_sha256);
    }
    const char* type =
        request.kind == RequestKind::connected ? "application/json" : "application/octet-stream";
    auto result = client_.Post(path, headers, request.payload, type);
    // A kept-alive connection the signer closed meanwhile fails once; asking again is safe (a
    // repeated request is answered with the certificate issued the first time; superseding twice
    // revokes nothing the second time).
    if (!result) result = client_.Post(path, headers, request.payload, type);
    if (!result) {
      throw std::runtime_error("the signer cannot be reached: " +
                               httplib::to_string(result.error()));
    }
    if (request.kind == RequestKind::connected) {
      if (result->status != 200)
        throw std::runtime_error("the signer answered HTTP " + std::to_string(result->status));
      return ProvisionAnswer{request.client_id,       "connected",
                             std::move(result->body), {},
                             RequestKind::connected,  request.certificate_sha256};
    }
    const std::string kind = result->get_header_value("X-Provision-Result");
    if (result->status != 200 || (kind != "accepted" && kind != "rejected")) {
      throw std::runtime_error("the signer answered HTTP " + std::to_string(result->status));
    }
    std::string certificate;
    if (request.kind == RequestKind::renew && kind == "accepted") {
      certificate = result->get_header_value("X-Provision-Certificate");
      if (!fingerprint_characters(certificate))
        throw std::runtime_error("the signer's acceptance names no certificate fingerprint");
    }
    return ProvisionAnswer{request.client_id,
                           kind,
                           std::move(result->body),
                           result->get_header_value("X-Provision-Code"),
                           request.kind,
                           std::move(certificate)};
  }

 private:
  httplib::Client client_;
  std::string token_;
  std::string credential_problem_;  // why the client certificate cannot be used, or empty
};

}  // namespace

ProvisionAnswer rejection(std::string client_id, std::string_view code, std::string_view message,
                          bool retryable) {
  std::string payload = "{\"code\":\"" + std::string(code) + "\",\"message\":\"" +
                        std::string(message) +
                        "\",\"retryable\":" + (retryable ? "true" : "false") + "}";
  return ProvisionAnswer{std::move(client_id), "rejected", std::move(payload), std::string(code)};
}

Status use_client_credential(SSL_CTX& ctx, const std::string& certfile,
                             const std::string& keyfile) {
  // OpenSSL asks for the passphrase of an encrypted key on the terminal unless a callback
  // answers: this one refuses (no passphrase at all, not even an empty one) and notes it was
  // asked, so that the error can say the key is encrypted.
  bool asked = false;
  SSL_CTX_set_default_passwd_cb(&ctx, [](char*, int, int, void* asked_flag) {
    *static_cast<bool*>(asked_flag) = true;
    return -1;
  });
  SSL_CTX_set_default_passwd_cb_userdata(&ctx, &asked);
  const bool certificate = SSL_CTX_use_certificate_chain_file(&ctx, certfile.c_str()) == 1;
  const bool key =
      certificate && SSL_CTX_use_PrivateKey_file(&ctx, keyfile.c_str(), SSL_FILETYPE_PEM) == 1;
  const bool usable = key && SSL_CTX_check_private_key(&ctx) == 1;
  SSL_CTX_set_default_passwd_cb(&ctx, nullptr);
  SSL_CTX_set_default_passwd_cb_userdata(&ctx, nullptr);
  ERR_clear_error();
  if (usable) return ok_status();
  if (!certificate) {
    return make_error(Errc::invalid_input,
                      "cannot use plugin_opt_provision_certfile " + certfile +
                          " (unreadable by the broker's user, or not a PEM certificate chain)");
  }
  if (asked) {
    return make_error(Errc::invalid_input,
                      "plugin_opt_provision_keyfile " + keyfile +
                          " is an encrypted key: the broker cannot ask for its passphrase; give it "
                          "the key unencrypted, readable by the broker's user alone");
  }
  return make_error(Errc::invalid_input,
                    "cannot use plugin_opt_provision_keyfile " + keyfile +
                        " (unreadable by the broker's user, not a PEM private key, or not the key "
                        "of plugin_opt_provision_certfile's certificate)");
}

Status check_client_credential(const std::string& certfile, const std::string& keyfile) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        &SSL_CTX_free);
  if (ctx == nullptr) {
    ERR_clear_error();
    return make_error(Errc::internal, "cannot make a TLS context");
  }
  return use_client_credential(*ctx, certfile, keyfile);
}

std::unique_ptr<SignerClient> http_signer(const SignerOptions& options) {
  return std::make_unique<HttpSigner>(options);
}

RequestQueue::RequestQueue(std::size_t limit, std::size_t claim_share)
    : limit_(limit), claim_share_(claim_share) {}

RequestQueue::Admission RequestQueue::push(ProvisionRequest& request) {
  const bool enroll = request.kind == RequestKind::enroll;
  if (enroll && waiting(request.claim) >= claim_share_) return Admission::claim_share_full;
  if (requests_.size() >= limit_) return Admission::full;
  // Either both the request and its count, or neither: a throw (out of memory) leaves the queue
  // and every claim's count as they were, and the request unmoved. The claim's entry is made (or
  // found) first, the request queued next, and only then counted.
  Waiting* share = nullptr;
  if (enroll) share = &per_claim_[request.claim];
  try {
    requests_.push_back(std::move(request));  // strong guarantee: unmoved if it throws
  } catch (...) {
    if (share != nullptr && share->count == 0) per_claim_.erase(request.claim);
    throw;
  }
  if (share != nullptr) ++share->count;
  return Admission::queued;
}

std::optional<ProvisionRequest> RequestQueue::pop() {
  if (requests_.empty()) return std::nullopt;
  ProvisionRequest request = std::move(requests_.front());
  requests_.pop_front();
  if (request.kind == RequestKind::enroll) {
    auto it = per_claim_.find(request.claim);
    if (it != per_claim_.end() && --it->second.count == 0) per_claim_.erase(it);
  }
  return request;
}

std::size_t RequestQueue::waiting(const std::string& claim) const {
  auto it = per_claim_.find(claim);
  return it == per_claim_.end() ? 0 : it->second.count;
}

bool RequestQueue::first_refusal(const std::string& claim) {
  auto it = per_claim_.find(claim);
  if (it == per_claim_.end()) return false;  // nothing waits: no share was taken
  return !std::exchange(it->second.refused, true);
}

Provisioner::Provisioner(MakeClient make_client, std::size_t workers, std::size_t queue_limit,
                         std::size_t claim_share, std::function<void(LogLevel, std::string)> log)
    : log_(std::move(log)), requests_(queue_limit, claim_share) {
  for (std::size_t i = 0; i < workers; ++i) clients_.push_back(make_client());
  for (auto& client : clients_) {
    workers_.emplace_back([this, c = client.get()](std::stop_token stop) { run(stop, c); });
  }
}

Provisioner::~Provisioner() {
  for (auto& worker : workers_) worker.request_stop();
  wake_.notify_all();
  workers_.clear();  // joins
}

namespace {

// A failure, as the kind of request gets it: a device's request is answered (the rejection is
// published); a connected notice is not, and the plugin only logs it.
ProvisionAnswer failure(const ProvisionRequest& request, std::string_view code,
                        std::string_view message, bool retryable) {
  auto out = rejection(request.client_id, code, message, retryable);
  out.kind = request.kind;
  if (request.kind == RequestKind::connected) {
    out.result = "failed";
    out.certificate_sha256 = request.certificate_sha256;
  }
  return out;
}

std::string_view what(RequestKind kind) {
  switch (kind) {
    case RequestKind::enroll:
      return "enrolment";
    case RequestKind::renew:
      return "renewal";
    case RequestKind::connected:
      return "superseding the predecessors";
  }
  return "request";
}

}  // namespace

void Provisioner::submit(ProvisionRequest request) {
  RequestQueue::Admission admission;
  bool first_refusal = false;
  {
    std::lock_guard lock(mutex_);
    admission = requests_.push(request);
    if (admission == RequestQueue::Admission::claim_share_full)
      first_refusal = requests_.first_refusal(request.claim);
  }
  switch (admission) {
    case RequestQueue::Admission::queued:
      wake_.notify_one();
      return;
    case RequestQueue::Admission::claim_share_full:
      // Names the claim (a leaked one, perhaps) once per flood: the answers' log lines do not.
      if (first_refusal) {
        log_(LogLevel::warning,
             "claim '" + request.claim +
                 "' has its share of the provisioning queue waiting (plugin_opt_provision_"
                 "claim_share): its devices are answered claim_queue_full until its requests "
                 "drain");
      }
      answer(failure(request, "claim_queue_full",
                     "too many requests of this claim are waiting for the signer; retry later",
                     true));
      return;
    case RequestQueue::Admission::full:
      break;
  }
  answer(failure(request, "signer_unavailable",
                 "too many requests are waiting for the signer; retry later", true));
}

std::vector<ProvisionAnswer> Provisioner::take() {
  std::vector<ProvisionAnswer> out;
  std::lock_guard lock(mutex_);
  out.swap(answers_);
  pending_.store(false, std::memory_order_release);
  return out;
}

void Provisioner::answer(ProvisionAnswer answer) {
  std::lock_guard lock(mutex_);
  answers_.push_back(std::move(answer));
  pending_.store(true, std::memory_order_release);
}

// A worker: one request at a time, to the end. Nothing it calls may end it: a throw becomes a
// retryable rejection and a log line.
void Provisioner::run(std::stop_token stop, SignerClient* client) {
  while (true) {
    ProvisionRequest request;
    {
      std::unique_lock lock(mutex_);
      if (!wake_.wait(lock, stop, [this] { return !requests_.empty(); })) return;
      request = std::move(*requests_.pop());
    }
    try {
      answer(client->send(request));
    } catch (const std::exception& e) {
      try {
        log_(LogLevel::warning,
             std::string(what(request.kind)) + " of '" + request.client_id + "': " + e.what());
        answer(failure(request, "signer_unavailable", "the signer cannot be reached; retry later",
                       true));
      } catch (...) {
      }
    } catch (...) {
      try {
        answer(failure(request, "internal_error", "the request failed; retry later", true));
      } catch (...) {
      }
    }
  }
}

}  // namespace onboard::plugin
