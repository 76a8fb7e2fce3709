#include "registry/sql.h"

#include <limits>
#include <new>

namespace onboard::registry::sql {

int Statement::int32(int column) const {
  const std::int64_t value = int64(column);
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    throw CorruptValue("an integer out of range");
  }
  return static_cast<int>(value);
}

std::int64_t query_int64(Database& db, std::string_view sql) {
  auto statement = prepare(db, sql);
  if (!statement.step() || statement.is_null(0)) throw CorruptValue("a missing value");
  return statement.int64(0);
}

DeviceStatus device_status_from(std::string_view text) {
  if (auto status = parse_device_status(text)) return *status;
  throw CorruptValue("an unknown device status");
}

ChangeKind change_kind_from(std::string_view text) {
  for (auto kind : {ChangeKind::device, ChangeKind::group, ChangeKind::crl, ChangeKind::claim}) {
    if (text == to_string(kind)) return kind;
  }
  throw CorruptValue("an unknown change kind");
}

Error current_exception_error(std::string_view what) {
  const std::string prefix = std::string(what) + ": ";
  try {
    throw;
  } catch (const Failure& e) {
    return make_error(e.errc, prefix + e.what());
  } catch (const CorruptValue& e) {
    return make_error(Errc::corrupt, prefix + "the registry holds " + e.what());
  } catch (const std::bad_alloc&) {
    return make_error(Errc::internal, prefix + "out of memory");
  } catch (...) {
    return make_error(Errc::internal, prefix + "internal error");
  }
}

}  // namespace onboard::registry::sql
