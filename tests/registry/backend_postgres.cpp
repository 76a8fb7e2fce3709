// registry_pg_tests: the conformance suite on a fresh database of the test cluster (fixtures.h).
#include "tests/registry/fixtures.h"

namespace onboard::test {
const registry::Backend kTestBackend = registry::Backend::postgresql;
}  // namespace onboard::test
