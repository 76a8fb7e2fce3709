#include "ca/pkcs11.h"

#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

// The GNU names (struct ck_attribute, ck_rv_t...): the header's compatibility names are macros
// such as `value` and `count` that would rewrite ordinary C++ identifiers.
#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

namespace onboard::ca {
namespace {

// ---- URI (RFC 7512) --------------------------------------------------------------------------

constexpr std::string_view kScheme = "pkcs11:";

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> percent_decode(std::string_view text, std::string_view attribute) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const bool complete = i + 2 < text.size();
    const int hi = complete ? hex_value(text[i + 1]) : -1;
    const int lo = complete ? hex_value(text[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return make_error(Errc::invalid_input,
                        "PKCS#11 URI: bad percent-encoding in '" + std::string(attribute) + "'");
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string percent_encode(std::string_view bytes, bool encode_all) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : bytes) {
    // RFC 3986 unreserved characters stay as they are.
    const bool plain =
        !encode_all && (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~');
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The blank-padded fixed-size text fields of CK_TOKEN_INFO.
std::string padded_field(const unsigned char* field, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(field), size);
  const auto end = text.find_last_not_of(' ');
  return end == std::string::npos ? std::string() : text.substr(0, end + 1);
}

// ---- the module --------------------------------------------------------------------------------

std::string rv_name(ck_rv_t rv) {
  switch (rv) {
    case CKR_PIN_INCORRECT:
      return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED:
      return "CKR_PIN_LOCKED";
    case CKR_TOKEN_NOT_PRESENT:
      return "CKR_TOKEN_NOT_PRESENT";
    case CKR_DEVICE_REMOVED:
      return "CKR_DEVICE_REMOVED";
    case CKR_MECHANISM_INVALID:
      return "CKR_MECHANISM_INVALID";
    case CKR_TEMPLATE_INCONSISTENT:
      return "CKR_TEMPLATE_INCONSISTENT";
    case CKR_ATTRIBUTE_VALUE_INVALID:
      return "CKR_ATTRIBUTE_VALUE_INVALID";
    case CKR_USER_NOT_LOGGED_IN:
      return "CKR_USER_NOT_LOGGED_IN";
    default: {
      char text[32];
      std::snprintf(text, sizeof text, "CKR 0x%lx", rv);
      return text;
    }
  }
}

Error token_error(Errc code, const std::string& what, ck_rv_t rv) {
  return make_error(code, what + " (" + rv_name(rv) + ")");
}

// A loaded and initialised module. PKCS#11 allows one C_Initialize per process and module, so a
// module is shared by every signer that uses it and finalised when the last one goes.
class Module {
 public:
  static Result<std::shared_ptr<Module>> load(const std::string& path) {
    std::lock_guard lock(mutex());
    auto& slot = modules()[path];
    if (auto loaded = slot.lock()) return loaded;
    if (path.empty()) {
      return make_error(Errc::invalid_input,
                        "no PKCS#11 module: give --pkcs11-module PATH or set "
                        "ONBOARD_PKCS11_MODULE (e.g. /usr/lib/softhsm/libsofthsm2.so)");
    }
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      return make_error(Errc::not_found, "the PKCS#11 module " + path + " does not exist");
    }
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = ::dlerror();
      return make_error(Errc::not_found, "cannot load the PKCS#11 module " + path + ": " +
                                             (why != nullptr ? why : "unknown error"));
    }
    auto get_list = reinterpret_cast<ck_rv_t (*)(struct ck_function_list**)>(
        ::dlsym(handle, "C_GetFunctionList"));
    struct ck_function_list* functions = nullptr;
    if (get_list == nullptr || get_list(&functions) != CKR_OK || functions == nullptr) {
      ::dlclose(handle);
      return make_error(Errc::invalid_input, path + " is not a PKCS#11 module");
    }
    struct ck_c_initialize_args args {};
    args.flags = CKF_OS_LOCKING_OK;
    const ck_rv_t rv = functions->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      ::dlclose(handle);
      return token_error(Errc::crypto, "cannot initialise the PKCS#11 module " + path, rv);
    }
    // Initialised by someone else in this process: theirs to finalise.
    auto module = std::shared_ptr<Module>(new Module(path, handle, functions, rv == CKR_OK));
    slot = module;
    return module;
  }

  ~Module() {
    std::lock_guard lock(mutex());
    if (finalize_) functions_->C_Finalize(nullptr);
    ::dlclose(handle_);
  }
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  struct ck_function_list* f() const noexcept {
    return functions_;
  }
  const std::string& path() const noexcept { return path_; }

 private:
  Module(std::string path, void* handle, struct ck_function_list* functions, bool finalize)
      : path_(std::move(path)), handle_(handle), functions_(functions), finalize_(finalize) {}
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::map<std::string, std::weak_ptr<Module>>& modules() {
    static std::map<std::string, std::weak_ptr<Module>> m;
    return m;
  }

  std::string path_;
  void* handle_;
  struct ck_function_list* functions_;
  bool finalize_;
};

// A logged-in session on the token a URI names.
struct Session {
  std::shared_ptr<Module> module;
  ck_session_handle_t handle = 0;
  bool open = false;
  std::string token_label, token_serial;

  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() {
    if (open) module->f()->C_CloseSession(handle);
  }
  struct ck_function_list* f() const noexcept {
    return module->f();
  }
  std::string describe() const { return "token '" + token_label + "'"; }
};

Result<std::unique_ptr<Session>> open_session(const std::string& module_path, const Pkcs11Uri& uri,
                                              const Secret& pin, bool read_write) {
  auto session = std::make_unique<Session>();
  ONBOARD_TRY(session->module, Module::load(module_path));
  auto* f = session->f();
  unsigned long count = 0;
  ck_rv_t rv = f->C_GetSlotList(1, nullptr, &count);
  std::vector<ck_slot_id_t> slots(count);
  if (rv == CKR_OK && count > 0) rv = f->C_GetSlotList(1, slots.data(), &count);
  if (rv != CKR_OK) return token_error(Errc::crypto, "cannot list the PKCS#11 slots", rv);
  slots.resize(count);
  std::string present;
  std::optional<ck_slot_id_t> found;
  for (ck_slot_id_t slot : slots) {
    struct ck_token_info info {};
    if (f->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    const auto label = padded_field(info.label, sizeof info.label);
    const auto serial = padded_field(info.serial_number, sizeof info.serial_number);
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    present += (present.empty() ? "'" : ", '") + label + "'";
    if ((!uri.token.empty() && label != uri.token) || (!uri.serial.empty() && serial != uri.serial))
      continue;
    if (found) {
      return make_error(Errc::conflict, "more than one token is labelled '" + uri.token +
                                            "'; add serial=... to the PKCS#11 URI");
    }
    found = slot;
    session->token_label = label;
    session->token_serial = serial;
  }
  if (!found) {
    return make_error(
        Errc::not_found,
        "no PKCS#11 token " +
            (uri.token.empty() ? "with serial " + uri.serial : "labelled '" + uri.token + "'") +
            " in " + module_path +
            (present.empty() ? " (no token is present)" : " (present: " + present + ")"));
  }
  ck_flags_t flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
  rv = f->C_OpenSession(*found, flags, nullptr, nullptr, &session->handle);
  if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED)
    return token_error(Errc::not_found, "the " + session->describe() + " is gone", rv);
  if (rv != CKR_OK)
    return token_error(Errc::crypto, "cannot open a session on the " + session->describe(), rv);
  session->open = true;
  std::string pin_bytes(pin.view());
  rv = f->C_Login(session->handle, CKU_USER, reinterpret_cast<unsigned char*>(pin_bytes.data()),
                  pin_bytes.size());
  OPENSSL_cleanse(pin_bytes.data(), pin_bytes.size());
  switch (rv) {
    case CKR_OK:
    case CKR_USER_ALREADY_LOGGED_IN:  // another signer of this process logged in: shared
      return session;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
      return make_error(Errc::bad_passphrase, "wrong PIN for the PKCS#11 " + session->describe());
    case CKR_PIN_LOCKED:
      return make_error(Errc::bad_passphrase,
                        "the user PIN of the PKCS#11 " + session->describe() + " is locked");
    case CKR_USER_PIN_NOT_INITIALIZED:
      return make_error(Errc::bad_passphrase,
                        "the PKCS#11 " + session->describe() + " has no user PIN set");
    default:
      return token_error(Errc::crypto, "cannot log in to the PKCS#11 " + session->describe(), rv);
  }
}

struct ck_attribute attr(ck_attribute_type_t type, const void* value, std::size_t size) {
  return {type, const_cast<void*>(value), static_cast<unsigned long>(size)};
}

// Reads one attribute of variable size. Errc::not_found when the object does not have it.
Result<std::string> read_attribute(const Session& session, ck_object_handle_t object,
                                   ck_attribute_type_t type) {
  struct ck_attribute a = attr(type, nullptr, 0);
  ck_rv_t rv = session.f()->C_GetAttributeValue(session.handle, object, &a, 1);
  if (rv != CKR_OK || a.value_len == static_cast<unsigned long>(-1))
    return token_error(Errc::not_found, "cannot read a key attribute", rv);
  std::string value(a.value_len, '\0');
  a.value = value.data();
  rv = session.f()->C_GetAttributeValue(session.handle, object, &a, 1);
  if (rv != CKR_OK) return token_error(Errc::crypto, "cannot read a key attribute", rv);
  value.resize(a.value_len);
  return value;
}

// Every object of `object_class` with the URI's label and id (whichever it gives).
Result<std::vector<ck_object_handle_t>> find_objects(const Session& session,
                                                     ck_object_class_t object_class,
                                                     const std::string& label,
                                                     const std::string& id) {
  std::vector<struct ck_attribute> tmpl{attr(CKA_CLASS, &object_class, sizeof object_class)};
  if (!label.empty()) tmpl.push_back(attr(CKA_LABEL, label.data(), label.size()));
  if (!id.empty()) tmpl.push_back(attr(CKA_ID, id.data(), id.size()));
  auto* f = session.f();
  ck_rv_t rv = f->C_FindObjectsInit(session.handle, tmpl.data(), tmpl.size());
  if (rv != CKR_OK) return token_error(Errc::crypto, "cannot search the token", rv);
  std::vector<ck_object_handle_t> found(8);
  unsigned long count = 0;
  rv = f->C_FindObjects(session.handle, found.data(), found.size(), &count);
  f->C_FindObjectsFinal(session.handle);
  if (rv != CKR_OK) return token_error(Errc::crypto, "cannot search the token", rv);
  found.resize(count);
  return found;
}

// ---- the public key, rebuilt in OpenSSL from the token's attributes ------------------------

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};

Result<ossl::Ptr<EVP_PKEY>> pkey_from_params(const char* type, OSSL_PARAM_BLD* bld) {
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  const bool made = params != nullptr && ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1 &&
                    EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params) == 1;
  OSSL_PARAM_free(params);
  if (!made) return ossl::error("cannot rebuild the token's public key");
  return ossl::Ptr<EVP_PKEY>(key);
}

struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* p) const noexcept { OSSL_PARAM_BLD_free(p); }
};

Result<ossl::Ptr<EVP_PKEY>> read_public_key(const Session& session, ck_object_handle_t private_key,
                                            const std::string& id) {
  ck_key_type_t key_type = 0;
  struct ck_attribute a = attr(CKA_KEY_TYPE, &key_type, sizeof key_type);
  if (session.f()->C_GetAttributeValue(session.handle, private_key, &a, 1) != CKR_OK)
    return make_error(Errc::crypto, "cannot read the token key's type");
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld) return ossl::error("cannot allocate");
  if (key_type == CKK_RSA) {
    ONBOARD_TRY(std::string n, read_attribute(session, private_key, CKA_MODULUS));
    ONBOARD_TRY(std::string e, read_attribute(session, private_key, CKA_PUBLIC_EXPONENT));
    ossl::Ptr<BIGNUM> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()),
                                     static_cast<int>(n.size()), nullptr));
    ossl::Ptr<BIGNUM> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()),
                                     static_cast<int>(e.size()), nullptr));
    if (!bn_n || !bn_e ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
      return ossl::error("cannot rebuild the token's RSA public key");
    }
    return pkey_from_params("RSA", bld.get());
  }
  if (key_type != CKK_EC) {
    return make_error(Errc::invalid_input,
                      "the token key is neither RSA nor EC; the CA signs with RSA or ECDSA keys");
  }
  ONBOARD_TRY(std::string der_params, read_attribute(session, private_key, CKA_EC_PARAMS));
  const auto* p = reinterpret_cast<const unsigned char*>(der_params.data());
  ASN1_OBJECT* curve = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(der_params.size()));
  const int nid = curve != nullptr ? OBJ_obj2nid(curve) : NID_undef;
  ASN1_OBJECT_free(curve);
  if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) {
    ossl::clear_errors();
    return make_error(Errc::invalid_input, "the token's EC key is not on P-256 or P-384");
  }
  // The point is on the public key object, found by the private key's CKA_ID.
  ONBOARD_TRY(auto publics, find_objects(session, CKO_PUBLIC_KEY, "", id));
  if (publics.size() != 1) {
    return make_error(Errc::not_found,
                      "the token holds no single public key beside the private key (same CKA_ID)");
  }
  ONBOARD_TRY(std::string point, read_attribute(session, publics[0], CKA_EC_POINT));
  // PKCS#11 wants the point DER-wrapped in an OCTET STRING; some tokens give it bare.
  p = reinterpret_cast<const unsigned char*>(point.data());
  ossl::Ptr<ASN1_STRING> wrapped(
      d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(point.size())));
  if (wrapped && p == reinterpret_cast<const unsigned char*>(point.data()) + point.size()) {
    point.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(wrapped.get())),
                 static_cast<std::size_t>(ASN1_STRING_length(wrapped.get())));
  }
  ossl::clear_errors();
  if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return ossl::error("cannot rebuild the token's EC public key");
  }
  return pkey_from_params("EC", bld.get());
}

// ---- signing ---------------------------------------------------------------------------------

// The DER DigestInfo prefixes for RSA PKCS#1 v1.5 (RFC 8017, section 9.2, note 1).
constexpr unsigned char kSha256Info[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                         0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
constexpr unsigned char kSha384Info[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                         0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};

struct EcdsaSigFree {
  void operator()(ECDSA_SIG* p) const noexcept { ECDSA_SIG_free(p); }
};

// Errc::conflict when the token holds a private key of that label or id already: a key of the
// token is never replaced, nor made ambiguous.
Status check_new_key(const Session& session, const std::string& label, const std::string& id) {
  for (const auto& [by_label, by_id] : {std::pair{label, std::string()}, {std::string(), id}}) {
    if (by_label.empty() && by_id.empty()) continue;
    ONBOARD_TRY(auto existing, find_objects(session, CKO_PRIVATE_KEY, by_label, by_id));
    if (!existing.empty()) {
      return make_error(Errc::conflict,
                        "the PKCS#11 " + session.describe() + " already holds a key " +
                            (by_label.empty() ? "with that id" : "labelled '" + by_label + "'") +
                            "; choose another object= or remove that key");
    }
  }
  return ok_status();
}

}  // namespace

struct Pkcs11Signer::Impl {
  std::unique_ptr<Session> session;
  std::string module_path;
  ck_object_handle_t private_key = 0;
  std::string label, id;
  ossl::Ptr<EVP_PKEY> public_key;
  // A throwaway software key of the same kind: OpenSSL lays out the signed structure with it
  // (algorithm identifiers, encodings), then the token's signature replaces its signature.
  ossl::Ptr<EVP_PKEY> layout_key;
  mutable std::mutex mutex;  // one operation at a time on the session

  // The token's signature over `tbs`, DER-encoded as X.509 wants it.
  Result<std::string> sign_bytes(const std::string& tbs) const {
    const EVP_MD* md = signing_digest(public_key.get());
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest(tbs.data(), tbs.size(), digest, &digest_len, md, nullptr) != 1)
      return ossl::error("cannot hash the data to sign");
    const bool rsa = is_rsa(public_key.get());
    std::string input;
    if (rsa) {
      const bool sha384 = EVP_MD_get_type(md) == NID_sha384;
      input.assign(reinterpret_cast<const char*>(sha384 ? kSha384Info : kSha256Info),
                   sha384 ? sizeof kSha384Info : sizeof kSha256Info);
    }
    input.append(reinterpret_cast<const char*>(digest), digest_len);
    struct ck_mechanism mechanism {
      rsa ? CKM_RSA_PKCS : CKM_ECDSA, nullptr, 0
    };
    std::string raw;
    {
      std::lock_guard lock(mutex);
      auto* f = session->f();
      ck_rv_t rv = f->C_SignInit(session->handle, &mechanism, private_key);
      unsigned long size = 0;
      auto* in = reinterpret_cast<unsigned char*>(input.data());
      if (rv == CKR_OK) rv = f->C_Sign(session->handle, in, input.size(), nullptr, &size);
      if (rv == CKR_OK) {
        raw.resize(size);
        rv = f->C_Sign(session->handle, in, input.size(),
                       reinterpret_cast<unsigned char*>(raw.data()), &size);
        raw.resize(size);
      }
      if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED ||
          rv == CKR_SESSION_HANDLE_INVALID)
        return token_error(Errc::not_found, "the PKCS#11 " + session->describe() + " is gone", rv);
      if (rv != CKR_OK)
        return token_error(Errc::crypto, "the PKCS#11 " + session->describe() + " did not sign",
                           rv);
    }
    if (rsa) return raw;
    // CKM_ECDSA gives r and s side by side; X.509 wants ECDSA-Sig-Value (RFC 3279).
    if (raw.empty() || raw.size() % 2 != 0) return make_error(Errc::crypto, "bad ECDSA signature");
    const int half = static_cast<int>(raw.size() / 2);
    const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
    std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
    BIGNUM* r = BN_bin2bn(bytes, half, nullptr);
    BIGNUM* s = BN_bin2bn(bytes + half, half, nullptr);
    if (!sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
      BN_free(r);
      BN_free(s);
      return ossl::error("cannot encode the ECDSA signature");
    }
    unsigned char* der = nullptr;
    const int len = i2d_ECDSA_SIG(sig.get(), &der);
    if (len <= 0) return ossl::error("cannot encode the ECDSA signature");
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
  }

  // Replaces the layout key's signature with the token's over the re-encoded to-be-signed part.
  // `signature` is the structure's own (OpenSSL hands it out const; it is the object's to change).
  Status put_signature(const ASN1_BIT_STRING* signature, unsigned char* tbs, int tbs_len) const {
    if (tbs_len <= 0) return ossl::error("cannot encode the data to sign");
    std::string data(reinterpret_cast<char*>(tbs), static_cast<std::size_t>(tbs_len));
    OPENSSL_free(tbs);
    ONBOARD_TRY(std::string sig, sign_bytes(data));
    if (ASN1_BIT_STRING_set(const_cast<ASN1_BIT_STRING*>(signature),
                            reinterpret_cast<unsigned char*>(sig.data()),
                            static_cast<int>(sig.size())) != 1) {
      return ossl::error("cannot store the signature");
    }
    return ok_status();
  }
};

Pkcs11Signer::Pkcs11Signer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pkcs11Signer::~Pkcs11Signer() = default;

const EVP_PKEY* Pkcs11Signer::public_key() const { return impl_->public_key.get(); }

namespace {

Result<ossl::Ptr<EVP_PKEY>> make_layout_key(const EVP_PKEY* public_key) {
  if (is_rsa(public_key)) return generate_key(KeyAlg::rsa2048);  // the size does not show
  return generate_key(EVP_PKEY_get_bits(public_key) > 256 ? KeyAlg::p384 : KeyAlg::p256);
}

Result<std::unique_ptr<Pkcs11Signer::Impl>> finish_impl(std::unique_ptr<Session> session,
                                                        const std::string& module,
                                                        ck_object_handle_t private_key) {
  auto impl = std::make_unique<Pkcs11Signer::Impl>();
  ONBOARD_TRY(impl->label, read_attribute(*session, private_key, CKA_LABEL));
  ONBOARD_TRY(impl->id, read_attribute(*session, private_key, CKA_ID));
  ONBOARD_TRY(impl->public_key, read_public_key(*session, private_key, impl->id));
  ONBOARD_TRY(impl->layout_key, make_layout_key(impl->public_key.get()));
  impl->session = std::move(session);
  impl->module_path = module;
  impl->private_key = private_key;
  return impl;
}

}  // namespace

Result<std::unique_ptr<Pkcs11Signer>> Pkcs11Signer::open(const std::string& module,
                                                         const Pkcs11Uri& uri, const Secret& pin) {
  ONBOARD_TRY(auto session, open_session(module, uri, pin, /*read_write=*/false));
  ONBOARD_TRY(auto keys, find_objects(*session, CKO_PRIVATE_KEY, uri.object, uri.id));
  if (keys.empty()) {
    return make_error(Errc::not_found, "the PKCS#11 " + session->describe() +
                                           " holds no private key " + format_pkcs11_uri(uri));
  }
  if (keys.size() > 1) {
    return make_error(Errc::conflict, "more than one private key in the PKCS#11 " +
                                          session->describe() + " matches; add id=... to the URI");
  }
  ONBOARD_TRY(auto impl, finish_impl(std::move(session), module, keys[0]));
  return std::unique_ptr<Pkcs11Signer>(new Pkcs11Signer(std::move(impl)));
}

Status Pkcs11Signer::check_access(const std::string& module, const Pkcs11Uri& uri,
                                  const Secret& pin, const std::vector<std::string>& new_labels) {
  ONBOARD_TRY(auto session, open_session(module, uri, pin, /*read_write=*/false));
  for (const auto& label : new_labels) ONBOARD_CHECK(check_new_key(*session, label, ""));
  return ok_status();
}

Result<std::unique_ptr<Pkcs11Signer>> Pkcs11Signer::generate(const std::string& module,
                                                             const Pkcs11Uri& uri,
                                                             const Secret& pin, KeyAlg alg) {
  if (uri.object.empty()) {
    return make_error(Errc::invalid_input, "a key made in a token needs object=LABEL in its URI");
  }
  ONBOARD_TRY(auto session, open_session(module, uri, pin, /*read_write=*/true));
  ONBOARD_CHECK(check_new_key(*session, uri.object, uri.id));
  std::string id = uri.id;
  if (id.empty()) {
    id.resize(16);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(id.data()), static_cast<int>(id.size())) != 1)
      return ossl::error("cannot make a key id");
  }
  unsigned char yes = 1, no = 0;
  // A CA key signs and does nothing else: no decryption or key wrapping with it, whatever the
  // token's defaults.
  std::vector<struct ck_attribute> pub{attr(CKA_TOKEN, &yes, 1),
                                       attr(CKA_VERIFY, &yes, 1),
                                       attr(CKA_ENCRYPT, &no, 1),
                                       attr(CKA_WRAP, &no, 1),
                                       attr(CKA_LABEL, uri.object.data(), uri.object.size()),
                                       attr(CKA_ID, id.data(), id.size())};
  std::vector<struct ck_attribute> priv{attr(CKA_TOKEN, &yes, 1),
                                        attr(CKA_PRIVATE, &yes, 1),
                                        attr(CKA_SENSITIVE, &yes, 1),
                                        attr(CKA_EXTRACTABLE, &no, 1),
                                        attr(CKA_SIGN, &yes, 1),
                                        attr(CKA_DECRYPT, &no, 1),
                                        attr(CKA_UNWRAP, &no, 1),
                                        attr(CKA_DERIVE, &no, 1),
                                        attr(CKA_LABEL, uri.object.data(), uri.object.size()),
                                        attr(CKA_ID, id.data(), id.size())};
  struct ck_mechanism mechanism {};
  unsigned long bits = 0;
  const unsigned char exponent[] = {0x01, 0x00, 0x01};
  std::string curve;
  switch (alg) {
    case KeyAlg::rsa2048:
    case KeyAlg::rsa3072:
    case KeyAlg::rsa4096:
      bits = alg == KeyAlg::rsa2048 ? 2048 : alg == KeyAlg::rsa3072 ? 3072 : 4096;
      mechanism.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
      pub.push_back(attr(CKA_MODULUS_BITS, &bits, sizeof bits));
      pub.push_back(attr(CKA_PUBLIC_EXPONENT, exponent, sizeof exponent));
      break;
    case KeyAlg::p256:
    case KeyAlg::p384: {
      mechanism.mechanism = CKM_EC_KEY_PAIR_GEN;
      // A built-in object: OpenSSL's own, not to be freed.
      const ASN1_OBJECT* oid =
          OBJ_nid2obj(alg == KeyAlg::p256 ? NID_X9_62_prime256v1 : NID_secp384r1);
      unsigned char* der = nullptr;
      const int len = i2d_ASN1_OBJECT(oid, &der);
      if (len <= 0) return ossl::error("cannot encode the curve");
      curve.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
      OPENSSL_free(der);
      pub.push_back(attr(CKA_EC_PARAMS, curve.data(), curve.size()));
      break;
    }
    case KeyAlg::ed25519:
      return make_error(Errc::invalid_input,
                        "a CA key in a PKCS#11 token is RSA or EC (p256, p384), not ed25519");
  }
  ck_object_handle_t public_handle = 0, private_handle = 0;
  const ck_rv_t rv =
      session->f()->C_GenerateKeyPair(session->handle, &mechanism, pub.data(), pub.size(),
                                      priv.data(), priv.size(), &public_handle, &private_handle);
  if (rv != CKR_OK) {
    return token_error(Errc::crypto,
                       "the PKCS#11 " + session->describe() + " could not generate a " +
                           std::string(key_alg_name(alg)) + " key",
                       rv);
  }
  auto impl = finish_impl(std::move(session), module, private_handle);
  if (!impl.ok()) return std::move(impl).error();
  return std::unique_ptr<Pkcs11Signer>(new Pkcs11Signer(std::move(impl).value()));
}

std::string Pkcs11Signer::uri() const {
  Pkcs11Uri uri;
  uri.token = impl_->session->token_label;
  uri.serial = impl_->session->token_serial;
  uri.object = impl_->label;
  uri.id = impl_->id;
  return format_pkcs11_uri(uri);
}

Status Pkcs11Signer::destroy() {
  std::lock_guard lock(impl_->mutex);
  auto& session = *impl_->session;
  // The key was made in a read-write session; a signer opened read-only cannot delete.
  ONBOARD_TRY(auto publics, find_objects(session, CKO_PUBLIC_KEY, "", impl_->id));
  for (auto handle : publics) session.f()->C_DestroyObject(session.handle, handle);
  const ck_rv_t rv = session.f()->C_DestroyObject(session.handle, impl_->private_key);
  if (rv != CKR_OK) return token_error(Errc::crypto, "cannot remove the key from the token", rv);
  return ok_status();
}

Status Pkcs11Signer::sign(X509* cert) const {
  if (X509_sign(cert, impl_->layout_key.get(), signing_digest(impl_->public_key.get())) <= 0)
    return ossl::error("cannot lay out the certificate");
  const ASN1_BIT_STRING* signature = nullptr;
  X509_get0_signature(&signature, nullptr, cert);
  unsigned char* tbs = nullptr;
  const int len = i2d_re_X509_tbs(cert, &tbs);
  ONBOARD_CHECK(impl_->put_signature(signature, tbs, len));
  // Fail closed: what the token signed must verify under the CA's key before anyone sees it.
  if (X509_verify(cert, impl_->public_key.get()) != 1)
    return ossl::error("the token's certificate signature does not verify");
  return ok_status();
}

Status Pkcs11Signer::sign(X509_CRL* crl) const {
  if (X509_CRL_sign(crl, impl_->layout_key.get(), signing_digest(impl_->public_key.get())) <= 0)
    return ossl::error("cannot lay out the CRL");
  const ASN1_BIT_STRING* signature = nullptr;
  X509_CRL_get0_signature(crl, &signature, nullptr);
  unsigned char* tbs = nullptr;
  const int len = i2d_re_X509_CRL_tbs(crl, &tbs);
  ONBOARD_CHECK(impl_->put_signature(signature, tbs, len));
  if (X509_CRL_verify(crl, impl_->public_key.get()) != 1)
    return ossl::error("the token's CRL signature does not verify");
  return ok_status();
}

Status Pkcs11Signer::sign(X509_REQ* req) const {
  if (X509_REQ_sign(req, impl_->layout_key.get(), signing_digest(impl_->public_key.get())) <= 0)
    return ossl::error("cannot lay out the certificate request");
  const ASN1_BIT_STRING* signature = nullptr;
  X509_REQ_get0_signature(req, &signature, nullptr);
  unsigned char* tbs = nullptr;
  const int len = i2d_re_X509_REQ_tbs(req, &tbs);
  ONBOARD_CHECK(impl_->put_signature(signature, tbs, len));
  if (X509_REQ_verify(req, impl_->public_key.get()) != 1)
    return ossl::error("the token's request signature does not verify");
  return ok_status();
}

// ---- URI -------------------------------------------------------------------------------------

bool is_pkcs11_uri(std::string_view text) noexcept { return text.starts_with(kScheme); }

Result<Pkcs11Uri> parse_pkcs11_uri(std::string_view text) {
  if (!is_pkcs11_uri(text)) {
    return make_error(Errc::invalid_input, "not a PKCS#11 URI (pkcs11:token=...;object=...)");
  }
  if (text.size() > 4096) return make_error(Errc::invalid_input, "PKCS#11 URI too long");
  text.remove_prefix(kScheme.size());
  std::string_view query;
  if (const auto q = text.find('?'); q != std::string_view::npos) {
    query = text.substr(q + 1);
    text = text.substr(0, q);
  }
  Pkcs11Uri uri;
  auto split = [](std::string_view list, char sep, auto&& each) -> Status {
    while (!list.empty()) {
      const auto end = list.find(sep);
      const auto part = list.substr(0, end);
      list = end == std::string_view::npos ? std::string_view() : list.substr(end + 1);
      if (part.empty()) continue;
      const auto eq = part.find('=');
      if (eq == std::string_view::npos) {
        return make_error(Errc::invalid_input,
                          "PKCS#11 URI: '" + std::string(part) + "' is not NAME=VALUE");
      }
      ONBOARD_CHECK(each(part.substr(0, eq), part.substr(eq + 1)));
    }
    return ok_status();
  };
  ONBOARD_CHECK(split(text, ';', [&](std::string_view name, std::string_view value) -> Status {
    ONBOARD_TRY(std::string decoded, percent_decode(value, name));
    if (name == "token") {
      uri.token = std::move(decoded);
    } else if (name == "serial") {
      uri.serial = std::move(decoded);
    } else if (name == "object") {
      uri.object = std::move(decoded);
    } else if (name == "id") {
      uri.id = std::move(decoded);
    } else if (name == "type") {
      if (decoded != "private") {
        return make_error(Errc::invalid_input, "PKCS#11 URI: the CA key is type=private");
      }
    } else if (name == "manufacturer" || name == "model" || name == "library-description" ||
               name == "library-manufacturer" || name == "library-version" ||
               name == "slot-description" || name == "slot-id" || name == "slot-manufacturer") {
      // Narrow the search in RFC 7512; the token label (or serial) already picks one token.
    } else {
      return make_error(Errc::invalid_input,
                        "PKCS#11 URI: unknown attribute '" + std::string(name) + "'");
    }
    return ok_status();
  }));
  ONBOARD_CHECK(split(query, '&', [&](std::string_view name, std::string_view value) -> Status {
    if (name == "pin-value") {
      return make_error(Errc::invalid_input,
                        "PKCS#11 URI: no pin-value, a PIN never goes on a command line or into "
                        "ca.json; pass it with --passphrase-env VAR or --passphrase-file FILE");
    }
    if (name == "module-path") {
      ONBOARD_TRY(uri.module_path, percent_decode(value, name));
      return ok_status();
    }
    return make_error(Errc::invalid_input,
                      "PKCS#11 URI: unsupported query attribute '" + std::string(name) + "'");
  }));
  if (uri.token.empty() && uri.serial.empty()) {
    return make_error(Errc::invalid_input, "PKCS#11 URI: name the token (token=LABEL or serial=)");
  }
  if (uri.object.empty() && uri.id.empty()) {
    return make_error(Errc::invalid_input, "PKCS#11 URI: name the key (object=LABEL or id=)");
  }
  return uri;
}

std::string format_pkcs11_uri(const Pkcs11Uri& uri) {
  std::string out(kScheme);
  auto add = [&out](const char* name, const std::string& value, bool encode_all) {
    if (value.empty()) return;
    if (out.size() > kScheme.size()) out += ';';
    out += name;
    out += '=';
    out += percent_encode(value, encode_all);
  };
  add("token", uri.token, false);
  add("serial", uri.serial, false);
  add("object", uri.object, false);
  add("id", uri.id, true);
  return out;
}

std::string pkcs11_module_path(const std::string& configured) {
  if (const char* env = std::getenv("ONBOARD_PKCS11_MODULE"); env != nullptr && *env != '\0')
    return env;
  return configured;
}

}  // namespace onboard::ca
