#include "plugin/crl_guard.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "core/ossl.h"
#include "core/x509.h"

namespace onboard::plugin {
namespace {

constexpr std::size_t kMaxCrlFile = 64u << 20;

// Every X509_INFO in a PEM text, as PEM_X509_INFO_read_bio (behind X509_load_crl_file) reads it.
ossl::Ptr<STACK_OF(X509_INFO)> read_infos(const std::string& pem) {
  auto bio = ossl::mem_reader(pem);
  if (!bio) return nullptr;
  ossl::Ptr<STACK_OF(X509_INFO)> infos(
      PEM_X509_INFO_read_bio(bio.get(), nullptr, nullptr, nullptr));
  return infos;
}

bool signed_by_one_of(X509_CRL* crl, STACK_OF(X509_INFO) * issuers) {
  for (int i = 0; i < sk_X509_INFO_num(issuers); ++i) {
    X509* ca = sk_X509_INFO_value(issuers, i)->x509;
    if (ca == nullptr || X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0)
      continue;
    EVP_PKEY* key = X509_get0_pubkey(ca);  // borrowed
    if (key != nullptr && X509_CRL_verify(crl, key) == 1) return true;
  }
  return false;
}

}  // namespace

CrlFileCheck check_crl_file(const std::string& path, UnixTime now, const std::string& issuers_pem) {
  CrlFileCheck check;
  const auto stamp = file_stamp(path);
  if (!stamp) {
    check.problem = "missing";
    return check;
  }
  if (static_cast<std::size_t>(stamp->size) > kMaxCrlFile) {
    check.problem = "larger than 64 MiB";
    return check;
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    check.problem = "cannot be read";
    return check;
  }
  auto infos = read_infos(text.str());
  ossl::clear_errors();
  if (!infos) {
    check.problem = "not a PEM CRL (the broker would fail to load it)";
    return check;
  }
  ossl::Ptr<STACK_OF(X509_INFO)> issuers;
  if (!issuers_pem.empty()) {
    issuers = read_infos(issuers_pem);
    ossl::clear_errors();
  }
  for (int i = 0; i < sk_X509_INFO_num(infos.get()); ++i) {
    X509_CRL* crl = sk_X509_INFO_value(infos.get(), i)->crl;
    if (crl == nullptr) continue;
    ++check.crls;
    const auto last = to_unix_time(X509_CRL_get0_lastUpdate(crl));
    const ASN1_TIME* next_time = X509_CRL_get0_nextUpdate(crl);
    const auto next = next_time != nullptr ? to_unix_time(next_time) : std::optional<UnixTime>(0);
    if (!last || !next) {
      check.problem = "a CRL with an unreadable this or next update";
      return check;
    }
    if (*last > now) {
      check.not_yet_valid = true;
      check.problem = "a CRL not valid until " + iso_time(*last) +
                      " (OpenSSL would refuse every device certificate)";
      return check;
    }
    if (*next != 0 && *next <= now) {
      check.problem = "a CRL that expired at " + iso_time(*next) +
                      " (OpenSSL would refuse every device certificate)";
      return check;
    }
    if (issuers && !signed_by_one_of(crl, issuers.get())) {
      ossl::clear_errors();
      check.problem = "a CRL not signed by the CA (OpenSSL would refuse every device certificate)";
      return check;
    }
    if (*next != 0 && (check.next_update == 0 || *next < check.next_update)) {
      check.next_update = *next;
      check.this_update = *last;
    }
  }
  if (check.crls == 0) check.problem = "no CRL in the file (the broker would fail to load it)";
  return check;
}

CrlGuard::CrlGuard(std::string path, std::string issuers_pem)
    : path_(std::move(path)), issuers_pem_(std::move(issuers_pem)), at_init_(file_stamp(path_)) {}

void CrlGuard::hold(const CrlFileCheck& check) {
  held_this_update_ = check.this_update;
  held_next_update_ = check.next_update;
  warned_ = Warned::none;
}

void CrlGuard::poll(Handover& handover, UnixTime now) {
  const auto stamp = file_stamp(path_);
  const bool reloaded = reloaded_.exchange(false, std::memory_order_acq_rel);
  // The first poll comes from the watcher thread, after the broker has loaded the file it found
  // at its start. If the file was replaced since the plugin started, that was the one from before:
  // the replacement is checked as a change below, never taken for what the broker holds.
  const bool replaced_since_init =
      !started_ && !reloaded && at_init_ && stamp && !(*stamp == *at_init_);
  if (replaced_since_init) {
    started_ = true;
    seen_ = at_init_;
  }
  if (!started_ || reloaded) {
    // The broker has just (re)read the file: whatever is there is what it holds now.
    started_ = true;
    seen_ = stamp;
    const auto check = check_crl_file(path_, now, issuers_pem_);
    if (check.ok()) {
      hold(check);
      if (reloaded) handover.post_log(LogLevel::info, "CRL " + path_ + " in force");
    } else {
      handover.post_log(LogLevel::error,
                        "the broker has loaded CRL " + path_ + ", which is " + check.problem +
                            ": the plugin still refuses revoked devices at CONNECT; write a valid "
                            "CRL (onboardctl crl)");
    }
  } else if (!stamp) {
    if (!missing_reported_)
      handover.post_log(LogLevel::warning,
                        "CRL " + path_ +
                            " is missing: the broker keeps the CRL it loaded, but "
                            "would not start with this configuration");
    missing_reported_ = true;
    seen_.reset();
  } else if (!seen_ || !(*stamp == *seen_)) {
    missing_reported_ = false;
    seen_ = stamp;
    const auto check = check_crl_file(path_, now, issuers_pem_);
    if (check.ok()) {
      // Only what was checked is handed over: the tick compares the stamp again before SIGHUP.
      hold(check);
      handover.post_crl_reload(*stamp);
    } else {
      // One not in force yet is looked at again on the next polls, until its time comes.
      if (check.not_yet_valid) seen_.reset();
      if (!reported_ || !(*reported_ == *stamp))
        handover.post_log(LogLevel::error, "CRL " + path_ + " changed but is " + check.problem +
                                               ": not handed to the broker, which keeps the CRL "
                                               "it holds");
      reported_ = stamp;
    }
  }
  check_expiry(handover, now);
}

void CrlGuard::check_expiry(Handover& handover, UnixTime now) {
  if (held_next_update_ == 0) return;
  const UnixTime left = held_next_update_ - now;
  if (left <= 0) {
    if (warned_ != Warned::expired)
      handover.post_log(LogLevel::error,
                        "the CRL the broker holds (" + path_ + ") expired at " +
                            iso_time(held_next_update_) +
                            ": TLS refuses every device until a new CRL is written (onboardctl "
                            "crl; the plugin reloads it)");
    warned_ = Warned::expired;
    return;
  }
  const UnixTime lifetime = held_next_update_ - held_this_update_;
  if (left < lifetime / 4 && warned_ == Warned::none) {
    handover.post_log(LogLevel::warning,
                      "the CRL the broker holds (" + path_ + ") expires at " +
                          iso_time(held_next_update_) +
                          "; after that TLS refuses every device. Is 'onboardctl crl "
                          "--if-expiring-within' or 'onboardctl serve' running?");
    warned_ = Warned::near;
  }
}

}  // namespace onboard::plugin
