// ca/csr.h: read_device_csr parses and checks the PEM CSR a device or a REST client sends.
// Invariants: an accepted CSR names a valid device id and carries an acceptable key, and the
// PEM written back from it is read to the same device id.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ca/csr.h"
#include "ca/keys.h"
#include "core/identity.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onboard;
  const std::string_view pem(reinterpret_cast<const char*>(data), size);
  auto csr = ca::read_device_csr(pem);
  if (!csr) return 0;
  if (!is_valid_device_id(csr->device_id)) std::abort();
  if (!csr->public_key || !ca::check_acceptable_key(csr->public_key.get())) std::abort();
  auto req = ca::csr_from_pem(pem);
  if (!req) std::abort();
  auto again = ca::read_device_csr(ca::csr_to_pem(req->get()));
  if (!again || again->device_id != csr->device_id) std::abort();
  return 0;
}
