// The Store seam: everything the rest of the project may ask of the registry's storage, as the
// composition of narrow roles, one header each. SQLite implements it now (sqlite_store.h),
// PostgreSQL later; callers never see SQL.
//
//   AccessStore    access_store.h    what the broker decides from (the plugin needs only this)
//   DeviceStore    device_store.h    devices and their certificates
//   CrlStore       crl_store.h       revoked certificates and CRL numbers
//   RuleStore      rule_store.h      ACL rules and groups
//   AuditStore     audit_store.h     the audit log and the change feed
//   DeliveryStore  delivery_store.h  held keys, batches and bundles
//   TokenStore     token_store.h     the REST server's API tokens
//   ClaimStore     claim_store.h     claims devices enroll themselves with
//
// A caller takes the narrowest role that does its job (the snapshot loader takes AccessStore&), so
// that a new backend can serve it before implementing the rest. onboardctl and the REST server
// hold a whole Store.
//
// Contract for every implementation of every role:
// - Every mutating method is ONE transaction that also appends its audit row and its change row:
//   either all of it is written or nothing is. A method that finds nothing to change (revoking a
//   revoked device, disabling a disabled one) writes nothing at all, audit included.
// - No exception escapes: failures are Result errors with a message safe to show an operator.
//   Errc::not_found for an unknown device, certificate, group or rule; Errc::conflict for a
//   duplicate or a state that forbids the change; Errc::invalid_input for malformed values;
//   Errc::io for disk, permission and lock problems; Errc::corrupt for a damaged or foreign file.
// - A Store object belongs to one thread at a time; open one per thread or process.
#pragma once

#include "registry/access_store.h"
#include "registry/audit_store.h"
#include "registry/claim_store.h"
#include "registry/crl_store.h"
#include "registry/delivery_store.h"
#include "registry/device_store.h"
#include "registry/rule_store.h"
#include "registry/token_store.h"

namespace onboard::registry {

class Store : public AccessStore,
              public DeviceStore,
              public CrlStore,
              public RuleStore,
              public AuditStore,
              public DeliveryStore,
              public TokenStore,
              public ClaimStore {};

}  // namespace onboard::registry
