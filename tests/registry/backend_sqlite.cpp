// registry_tests: the conformance suite on an SQLite file (fixtures.h).
#include "tests/registry/fixtures.h"

namespace onboard::test {
const registry::Backend kTestBackend = registry::Backend::sqlite;
}  // namespace onboard::test
