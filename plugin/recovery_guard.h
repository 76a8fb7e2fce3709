// What the plugin alone knows for a claim client that asks again after a lost answer
// (registry/claim_recovery.h, docs/provisioning.md "A lost answer"): which client ids are
// connected on this broker, and as what, a claim client or a device (a claim connect must never
// take over, and so disconnect, a live client of that id: Mosquitto disconnects the older of two
// clients with one id; and an answer goes only to a holder of the kind that asked), and which
// recently enrolled devices connected here with their own certificate (then the answer reached
// them, and their session on this broker, with its subscriptions and queued messages, is no
// claim's to take over).
//
// Broker thread only: no lock. Bounded: at most `capacity` devices remembered; when a device cannot
// be remembered (full of devices seen within the window), every recovery is refused (fail closed)
// for a window from then.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

namespace onboard::plugin {

class RecoveryGuard {
 public:
  using Clock = std::chrono::steady_clock;
  using Client = const void*;

  RecoveryGuard(Clock::duration window, std::size_t capacity) noexcept
      : window_(window), capacity_(capacity) {}

  // The plugin accepted `client` (a device, or a claim client when `claim`) with this client id.
  // The broker holds one client per id: a newer one takes the id over (and the older one's
  // disconnect follows), a client accepted again (SIGHUP) is the same one.
  void connected(Client client, std::string_view client_id, bool claim);
  // The connection of `client` with this id ended (or was refused): forgotten, unless the id
  // belongs to a newer client by now.
  void disconnected(Client client, std::string_view client_id);
  // Whether a client the plugin accepted with this id is connected.
  bool live(std::string_view client_id) const;
  // Whether a client other than `client` that the plugin accepted with this id is connected.
  // Mosquitto re-runs the connect check for every connected client on SIGHUP (and the plugin
  // raises SIGHUP itself for a changed CRL): a client checked again is not in its own way.
  bool live_other(Client client, std::string_view client_id) const;
  // Whether `client` is the claim client the plugin accepted with this id and still connected:
  // Mosquitto checking it again (SIGHUP), not a new connect.
  bool live_claim(Client client, std::string_view client_id) const;
  // Whether `client` is the device client the plugin accepted with this id and still connected:
  // Mosquitto checking it again (SIGHUP), not a new connect.
  bool live_device(Client client, std::string_view client_id) const;
  // Who holds this client id now, as far as the plugin accepted it: an answer to a claim's
  // request goes to a claim client only, an answer to a device's renewal never to a claim client.
  enum class Holder { none, claim, device };
  Holder holder(std::string_view client_id) const;

  // Device `device_id`, recently enrolled, connected with its own certificate at `now`.
  void device_seen(std::string_view device_id, Clock::time_point now);
  // Whether claim client `client` may ask again for device `device_id`'s certificate: no other
  // client of that id is connected (`client` itself may be, checked again on SIGHUP) and the
  // device did not connect here with its certificate within the window (and the memory of that
  // is not full).
  bool may_recover(Client client, std::string_view device_id, Clock::time_point now);

  std::size_t live_count() const noexcept { return live_.size(); }
  std::size_t seen_count() const noexcept { return seen_.size(); }

 private:
  void prune(Clock::time_point now);

  Clock::duration window_;
  std::size_t capacity_;
  struct Live {
    Client client;
    bool claim;
  };
  std::unordered_map<std::string, Live> live_;  // client id → the client that has it
  std::unordered_map<std::string, Clock::time_point> seen_;
  // A device could not be remembered (full): every recovery is refused until this time, when the
  // device it forgot is past its window.
  Clock::time_point refuse_until_{};
  Clock::time_point next_prune_{};
};

}  // namespace onboard::plugin
