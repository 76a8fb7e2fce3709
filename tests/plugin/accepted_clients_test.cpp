#include "plugin/accepted_clients.h"

#include <catch2/catch.hpp>
#include <string>
#include <string_view>
#include <vector>

using onboard::plugin::AcceptedClients;
using onboard::plugin::LogLimiter;
using Standing = AcceptedClients::Standing;

namespace {

// Stand-ins for the broker's client pointers: only their addresses are used.
int client_a, client_b;
const void* const a = &client_a;
const void* const b = &client_b;

auto with_certificate = [] { return true; };
auto without_certificate = [] { return false; };

}  // namespace

TEST_CASE("a device the connect check accepted gets its rights and nothing else does") {
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  auto v = clients.check(a, "dev-a", "dev-a", with_certificate);
  CHECK(v.standing == Standing::device);
  CHECK(v.device_id == "dev-a");

  auto unknown = clients.check(b, "dev-b", "dev-b", with_certificate);
  CHECK(unknown.standing == Standing::not_accepted);
  CHECK(unknown.has_certificate);
  CHECK(clients.check(b, "dev-b", "dev-b", without_certificate).has_certificate == false);
}

TEST_CASE("an open connection is decided without asking for its certificate") {
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  int asked = 0;
  auto v = clients.check(a, "dev-a", "dev-a", [&] { return ++asked, true; });
  CHECK(v.standing == Standing::device);
  CHECK(asked == 0);
}

TEST_CASE("a refused or re-checked client loses what its pointer held") {
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  clients.forget(a);
  CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);
  CHECK(clients.size() == 0);
}

TEST_CASE("a reused pointer under another client id or username is not vouched for") {
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  CHECK(clients.check(a, "ghost", "ghost", with_certificate).standing == Standing::not_accepted);
  // and the stale entry is gone: not even the old id gets it back
  CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);

  clients.accept_device(b, "dev-b", "dev-b");
  CHECK(clients.check(b, "dev-b", "impostor", with_certificate).standing == Standing::not_accepted);
  CHECK(clients.check(b, nullptr, "dev-b", with_certificate).standing == Standing::not_accepted);
}

TEST_CASE("a will and an offline session of an accepted device keep its rights") {
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  clients.disconnected(a, "dev-a", /*has_certificate=*/true, /*session_ends=*/false);
  // After the socket closed there is no certificate: will messages, queued deliveries.
  auto v = clients.check(a, "dev-a", "dev-a", without_certificate);
  CHECK(v.standing == Standing::device);
  CHECK(v.device_id == "dev-a");
  REQUIRE(clients.offline_session(a, "dev-a"));
  CHECK(*clients.offline_session(a, "dev-a") == Standing::device);
  CHECK_FALSE(clients.offline_session(a, "other"));

  SECTION("the broker closing the offline session again (SIGHUP) keeps it") {
    clients.disconnected(a, "dev-a", false, false);
    CHECK(clients.check(a, "dev-a", "dev-a", without_certificate).standing == Standing::device);
  }
  SECTION("a certificate on an ended connection is a new client that skipped the connect check") {
    CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);
    CHECK(clients.check(a, "dev-a", "dev-a", without_certificate).standing ==
          Standing::not_accepted);
  }
  SECTION("a new client on that memory disconnecting with a certificate drops the entry") {
    clients.disconnected(a, "dev-a", true, false);
    CHECK(clients.check(a, "dev-a", "dev-a", without_certificate).standing ==
          Standing::not_accepted);
  }
}

TEST_CASE("a session that ends with its connection is dropped at the sweep after its will") {
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  clients.disconnected(a, "dev-a", true, /*session_ends=*/true);
  CHECK(clients.check(a, "dev-a", "dev-a", without_certificate).standing == Standing::device);
  clients.sweep();
  CHECK(clients.size() == 0);

  SECTION("unless the memory was accepted again before the sweep") {
    clients.accept_device(b, "dev-b", "dev-b");
    clients.disconnected(b, "dev-b", true, true);
    clients.accept_device(b, "dev-c", "dev-c");
    clients.sweep();
    CHECK(clients.check(b, "dev-c", "dev-c", with_certificate).standing == Standing::device);
  }
}

TEST_CASE("a deferred client is deferred and never decided as the device its name matches") {
  AcceptedClients clients;
  clients.defer(a, "dashboard");
  auto v = clients.check(a, "dashboard", "dev-a", without_certificate);
  CHECK(v.standing == Standing::deferred);
  CHECK(v.device_id.empty());
  clients.disconnected(a, "dashboard", false, false);
  CHECK(clients.check(a, "dashboard", "dev-a", without_certificate).standing == Standing::deferred);
  REQUIRE(clients.offline_session(a, "dashboard"));
  CHECK(*clients.offline_session(a, "dashboard") == Standing::deferred);
  // A certificate client reusing the memory is never deferred.
  CHECK(clients.check(a, "dashboard", "dev-a", with_certificate).standing ==
        Standing::not_accepted);
}

TEST_CASE("checks on the same client in a row follow every change to its entry") {
  // The last client found is remembered (one pointer compare instead of a hash lookup): each
  // change to that client's entry must show at its very next check, while the checks before the
  // change (the positive controls) are answered from the remembered entry.
  AcceptedClients clients;
  clients.accept_device(a, "dev-a", "dev-a");
  clients.accept_device(b, "dev-b", "dev-b");
  REQUIRE(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::device);
  REQUIRE(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::device);

  SECTION("refused at a new connect on that memory") {
    clients.forget(a);
    CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);
  }
  SECTION("accepted again as another device") {
    // The old client's rules bound, and current (the positive control).
    const auto snapshot = onboard::registry::Snapshot::build({}, {}, 1);
    onboard::plugin::SnapshotChanges changes;
    changes.record(nullptr, *snapshot, 1);
    auto old = clients.check(a, "dev-a", "dev-a", with_certificate);
    REQUIRE(old.rules != nullptr);
    old.rules->bind(*snapshot, changes, old.device_id, old.client_id);
    REQUIRE(old.rules->current(changes));
    clients.accept_device(a, "dev-x", "dev-x");
    auto v = clients.check(a, "dev-x", "dev-x", with_certificate);
    CHECK(v.standing == Standing::device);
    CHECK(v.device_id == "dev-x");
    REQUIRE(v.rules != nullptr);
    CHECK_FALSE(v.rules->current(changes));  // the new entry's rules, not the old client's binding
    CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);
  }
  SECTION("deferred at a new connect") {
    clients.defer(a, "dashboard");
    CHECK(clients.check(a, "dashboard", nullptr, without_certificate).standing ==
          Standing::deferred);
  }
  SECTION("its session ended and swept") {
    clients.disconnected(a, "dev-a", true, /*session_ends=*/true);
    CHECK(clients.check(a, "dev-a", "dev-a", without_certificate).standing == Standing::device);
    clients.sweep();
    CHECK(clients.check(a, "dev-a", "dev-a", without_certificate).standing ==
          Standing::not_accepted);
  }
  SECTION("another client checked in between, then this one changed") {
    CHECK(clients.check(b, "dev-b", "dev-b", with_certificate).standing == Standing::device);
    clients.forget(a);
    CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);
    CHECK(clients.check(b, "dev-b", "dev-b", with_certificate).standing == Standing::device);
  }
  SECTION("the remembered client stale, then the other one asked") {
    CHECK(clients.check(a, "ghost", "ghost", with_certificate).standing == Standing::not_accepted);
    CHECK(clients.check(b, "dev-b", "dev-b", with_certificate).standing == Standing::device);
    CHECK(clients.check(a, "dev-a", "dev-a", with_certificate).standing == Standing::not_accepted);
  }
}

TEST_CASE("an id with a NUL in it never matches the broker's C strings") {
  AcceptedClients clients;
  clients.accept_device(a, std::string_view("dev\0a", 5), "dev");
  CHECK(clients.check(a, "dev", "dev", with_certificate).standing == Standing::not_accepted);
  clients.accept_device(a, "dev", std::string_view("dev\0a", 5));
  CHECK(clients.check(a, "dev", "dev", with_certificate).standing == Standing::not_accepted);
  // Control: the same ids without the NUL.
  clients.accept_device(a, "dev", "dev");
  CHECK(clients.check(a, "dev", "dev", with_certificate).standing == Standing::device);
}

TEST_CASE("the tick has work only while a sweep or a kick is due") {
  AcceptedClients clients;
  CHECK_FALSE(clients.has_work());
  clients.accept_device(a, "dev-a", "dev-a");
  CHECK_FALSE(clients.has_work());
  CHECK(clients.refuse(b, "rogue", "CN-rogue"));
  CHECK(clients.has_work());
  CHECK(clients.take_kicks() == std::vector<std::string>{"CN-rogue"});
  CHECK_FALSE(clients.has_work());
  clients.disconnected(a, "dev-a", true, /*session_ends=*/true);
  CHECK(clients.has_work());
  clients.sweep();
  CHECK_FALSE(clients.has_work());
  CHECK(clients.size() == 0);
}

TEST_CASE("a refused client is reported once per connection and kicked by username") {
  AcceptedClients clients;
  CHECK(clients.refuse(a, "rogue", "CN-rogue"));
  CHECK_FALSE(clients.refuse(a, "rogue", "CN-rogue"));
  CHECK(clients.refuse(b, "other", "CN-other"));
  CHECK(clients.take_kicks() == std::vector<std::string>{"CN-other", "CN-rogue"});
  CHECK(clients.take_kicks().empty());
  clients.disconnected(a, "rogue", true, true);
  CHECK(clients.refuse(a, "rogue", "CN-rogue"));  // a new connection on that memory
  CHECK(clients.refuse(b, "another", "CN-rogue"));
  CHECK(clients.take_kicks() == std::vector<std::string>{"CN-rogue"});  // each name once
}

TEST_CASE("a refused client without a name to kick by is reported but not kicked") {
  AcceptedClients clients;
  // No certificate: possibly an offline session, which must not be closed again.
  CHECK(clients.refuse(a, "restored", ""));
  CHECK_FALSE(clients.refuse(a, "restored", ""));
  CHECK(clients.take_kicks().empty());
}

TEST_CASE("the refusal log is rate-limited and says how many lines it dropped") {
  LogLimiter limiter(2, std::chrono::seconds(10));
  const auto t0 = LogLimiter::Clock::time_point{} + std::chrono::hours(1);
  std::size_t suppressed = 99;
  CHECK(limiter.allow(t0, suppressed));
  CHECK(suppressed == 0);
  CHECK(limiter.allow(t0, suppressed));
  CHECK_FALSE(limiter.allow(t0 + std::chrono::seconds(1), suppressed));
  CHECK_FALSE(limiter.allow(t0 + std::chrono::seconds(2), suppressed));
  CHECK(limiter.allow(t0 + std::chrono::seconds(10), suppressed));
  CHECK(suppressed == 2);
}
