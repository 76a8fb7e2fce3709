// onboard_loadgen: MQTT load over mTLS for bench/run's broker parts (issue 7).
//
//   onboard_loadgen throughput --targets FILE --cafile CA.pem --connections N --qos Q --rounds K
//                              --seconds S [--settle S] [--rate R] [--window W]
//   onboard_loadgen storm      --targets FILE --cafile CA.pem --count K --concurrency C --rounds K
//   onboard_loadgen check      --ids FILE (the first two ids)                         DEVICE
//   onboard_loadgen revocation --ids FILE --connections N --victims FILE --rate R
//                              --onboardctl PATH --data-dir DIR [--timeout-ms T]     DEVICE
//   DEVICE: --port P --cafile CA.pem --certs DIR (DIR/ID.crt and DIR/ID.key per device id);
//   revocation takes --port once per broker of a fleet on one registry (onboardctl then finds
//   the registry as it would anyway, e.g. through $ONBOARD_REGISTRY, which it inherits)
//   --targets FILE: one broker per line, "NAME PORT PID CERTS_DIR IDS_FILE"
//   (`onboard_loadgen MODE --help` lists each mode's options.)
//
// Results are JSON lines on stdout, one object per line, each with a "type", for
// bench/report/broker.py to parse:
//   result      throughput and storm: one per target and round ("target", "round" and the counts)
//   check       whether the set-up refused a foreign subscription and publish, and delivered the
//               device's own message
//   fleet       revocation: devices connected, and refused at the start
//   revocation  one per victim: "device", "broker" (the index of its --port), "closed" (within
//               --timeout-ms) and "ms" when closed
//   reconnect   one per closed victim: "device", "broker", "accepted" (must be false)
//   summary     revocation: the counts and percentiles over all victims
//
// One libmosquitto connection per device certificate, all driven by this one thread through
// poll(2) and libmosquitto's external-loop calls (mosquitto_loop_read/write/misc): a thread per
// connection would cost more CPU than the broker on this 2-core machine.
//
// Traffic: every connection subscribes to devices/<id>/# and publishes to devices/<id>/load, so
// each message is one write decision and one read decision for the same device. That is the only
// traffic the rights under test (devices/%u/# read+write) allow in all four access-control set-ups:
// a device may not read another's subtree, and one identity cannot hold two connections (client id
// = device id, and a second connect takes the first one's session over).
#include <fcntl.h>
#include <mosquitto.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_checks.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::milliseconds;

constexpr std::size_t kPayloadBytes = 64;  // the send time (8 bytes) and padding
constexpr int kKeepaliveSeconds = 60;

// ---- options and inputs
// --------------------------------------------------------------------------

// Each mode's options, as CLI11 fills them in main.
struct ThroughputOptions {
  std::string targets, cafile;
  std::size_t connections = 0, rounds = 0;
  int qos = 0, window = 8;
  double seconds = 0, settle = 1, rate = 0;
};
struct StormOptions {
  std::string targets, cafile;
  std::size_t count = 0, concurrency = 0, rounds = 0;
};
// check talks to one broker, given by its port; revocation to one or more brokers on one registry,
// the devices spread over them in turn.
struct DeviceOptions {
  std::vector<int> ports;
  std::string cafile, certs;
};
struct CheckOptions {
  DeviceOptions device;
  std::string ids;
};
struct RevocationOptions {
  DeviceOptions device;
  std::string ids, victims, onboardctl, data_dir;
  std::size_t connections = 0;
  double rate = 0;
  long timeout_ms = 3000;
};

// One result object as one line on stdout, "type" first, flushed at once so that a run cut short
// keeps the lines written so far.
void emit(const nlohmann::ordered_json& record) { std::cout << record.dump() << std::endl; }

// Figures are rounded to what the report uses (and below what the clocks and /proc's 10 ms
// ticks resolve), so that the lines stay short.
double rounded(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return duration<double>(b - a).count();
}

// The broker's user + system CPU time in microseconds, from /proc/PID/stat (fields 14 and 15,
// counted after the parenthesised command name, which may itself contain spaces).
double process_cpu_us(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');
  if (close == std::string::npos) throw std::runtime_error("cannot read /proc/PID/stat");
  std::vector<std::string> fields;
  std::size_t pos = close + 2;
  while (pos < stat.size()) {
    auto end = stat.find(' ', pos);
    if (end == std::string::npos) end = stat.size();
    fields.push_back(stat.substr(pos, end - pos));
    pos = end + 1;
  }
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  double ticks = std::stod(fields.at(11)) + std::stod(fields.at(12));
  return ticks * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

// ---- connections
// ---------------------------------------------------------------------------------

struct LibMosquitto {
  LibMosquitto() { mosquitto_lib_init(); }
  ~LibMosquitto() { mosquitto_lib_cleanup(); }
  LibMosquitto(const LibMosquitto&) = delete;
  LibMosquitto& operator=(const LibMosquitto&) = delete;
};

struct MosquittoDeleter {
  void operator()(mosquitto* mosq) const { mosquitto_destroy(mosq); }
};
using MosquittoPtr = std::unique_ptr<mosquitto, MosquittoDeleter>;

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// One TLS context per device, made on first use and kept: libmosquitto would otherwise build a
// context and parse the CA, certificate and key files for every connect, which made the load
// generator, not the broker, the limit of the connect storm. Verification stays as strict as
// libmosquitto's own: the server's chain against the CA and its IP address 127.0.0.1.
class TlsContexts {
 public:
  explicit TlsContexts(std::string cafile, std::string certs)
      : cafile_(std::move(cafile)), certs_(std::move(certs)) {}
  SSL_CTX* get(const std::string& id) {
    auto& slot = contexts_[id];
    if (slot) return slot.get();
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    const std::string cert = certs_ + "/" + id + ".crt", key = certs_ + "/" + id + ".key";
    if (!ctx || SSL_CTX_load_verify_locations(ctx.get(), cafile_.c_str(), nullptr) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx.get()), "127.0.0.1") != 1) {
      throw std::runtime_error("cannot make a TLS context for " + cert);
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    slot = std::move(ctx);
    return slot.get();
  }

 private:
  std::string cafile_, certs_;
  std::map<std::string, SslCtxPtr> contexts_;
};

struct Endpoint {
  int port = 0;
  TlsContexts* tls = nullptr;  // the device certificates and the CA
};

// leaving: the client has sent DISCONNECT (storm) and waits for it to be written.
enum class State { connecting, connected, subscribed, leaving, refused, closed };

// One device's connection. Callbacks only record what happened; the main loop acts on it, since
// libmosquitto defers writes made from inside its callbacks.
struct Connection {
  std::string id, topic;
  MosquittoPtr mosq;
  State state = State::connecting;
  int connack = -1;
  bool subscribe_sent = false;
  int last_granted = -1;  // of the latest SUBACK
  int in_flight = 0;      // published, not yet received back
  std::uint64_t received = 0;
  std::uint64_t stalls = 0;           // flat out: windows restarted after a second without receipts
  Clock::time_point last_received{};  // to notice a lost QoS 0 message
  Clock::time_point next_send{};      // fixed-rate schedule
  Clock::time_point closed_at{};
  std::vector<double>* latencies_us = nullptr;  // where receipts are recorded, when measuring
};

void on_connect(mosquitto*, void* self, int rc) {
  auto* c = static_cast<Connection*>(self);
  c->connack = rc;
  c->state = rc == 0 ? State::connected : State::refused;
}
void on_disconnect(mosquitto*, void* self, int) {
  auto* c = static_cast<Connection*>(self);
  if (c->state != State::refused) c->state = State::closed;
  c->closed_at = Clock::now();
}
void on_subscribe(mosquitto*, void* self, int, int count, const int* granted) {
  auto* c = static_cast<Connection*>(self);
  // 0x80: the broker refused the subscription (it would leave the run with no deliveries).
  c->last_granted = count == 1 ? granted[0] : 0x80;
  if (c->state == State::connected)
    c->state = c->last_granted < 0x80 ? State::subscribed : State::refused;
}
void on_message(mosquitto*, void* self, const mosquitto_message* message) {
  auto* c = static_cast<Connection*>(self);
  auto now = Clock::now();
  ++c->received;
  if (c->in_flight > 0) --c->in_flight;
  c->last_received = now;
  if (c->latencies_us != nullptr && message->payloadlen >= 8) {
    std::int64_t sent_ns = 0;
    std::memcpy(&sent_ns, message->payload, sizeof sent_ns);
    auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch());
    c->latencies_us->push_back(static_cast<double>(now_ns.count() - sent_ns) / 1e3);
  }
}

std::unique_ptr<Connection> start_connect(const Endpoint& endpoint, const std::string& id) {
  auto c = std::make_unique<Connection>();
  c->id = id;
  c->topic = "devices/" + id + "/load";
  c->mosq.reset(mosquitto_new(id.c_str(), true, c.get()));
  if (!c->mosq) throw std::runtime_error("mosquitto_new failed");
  auto* m = c->mosq.get();
  // With a context of our own (and no defaults added to it) libmosquitto still runs TLS but
  // leaves verification to the context.
  if (mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != MOSQ_ERR_SUCCESS ||
      mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, endpoint.tls->get(id)) != MOSQ_ERR_SUCCESS) {
    throw std::runtime_error("cannot set the TLS context for " + id);
  }
  // Without it Nagle's algorithm meets the broker's delayed ACKs and QoS 1 flat out stalls in
  // 40 ms steps, randomly per run (bench/run also sets the broker's set_tcp_nodelay).
  mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_connect_callback_set(m, on_connect);
  mosquitto_disconnect_callback_set(m, on_disconnect);
  mosquitto_subscribe_callback_set(m, on_subscribe);
  mosquitto_message_callback_set(m, on_message);
  // The TCP connect to loopback completes at once; the TLS handshake and CONNECT then proceed
  // without blocking, through the poll loop.
  int rc = mosquitto_connect(m, "127.0.0.1", endpoint.port, kKeepaliveSeconds);
  if (rc != MOSQ_ERR_SUCCESS) {
    c->state = State::closed;
    c->closed_at = Clock::now();
  }
  return c;
}

// One turn of the event loop over `connections`: waits up to `timeout` for socket activity (and
// for `extra_fd`, when not -1), then lets libmosquitto read and write. Returns whether extra_fd
// became readable.
class Pump {
 public:
  bool turn(const std::vector<Connection*>& connections, milliseconds timeout, int extra_fd = -1) {
    fds_.clear();
    owners_.clear();
    for (auto* c : connections) {
      int sock = mosquitto_socket(c->mosq.get());
      if (sock < 0) continue;
      short events = POLLIN;
      if (mosquitto_want_write(c->mosq.get())) events |= POLLOUT;
      fds_.push_back({sock, events, 0});
      owners_.push_back(c);
    }
    if (extra_fd >= 0) fds_.push_back({extra_fd, POLLIN, 0});
    int ready = ::poll(fds_.data(), fds_.size(), static_cast<int>(timeout.count()));
    bool extra_ready = false;
    if (ready > 0) {
      for (std::size_t i = 0; i < owners_.size(); ++i) {
        auto* m = owners_[i]->mosq.get();
        if (fds_[i].revents & (POLLIN | POLLERR | POLLHUP)) mosquitto_loop_read(m, 1);
        if ((fds_[i].revents & POLLOUT) && mosquitto_socket(m) >= 0) mosquitto_loop_write(m, 1);
      }
      extra_ready = extra_fd >= 0 && (fds_.back().revents & POLLIN);
    }
    auto now = Clock::now();
    if (now - last_misc_ >= std::chrono::seconds(1)) {  // keepalive pings
      last_misc_ = now;
      for (auto* c : connections) mosquitto_loop_misc(c->mosq.get());
    }
    return extra_ready;
  }

 private:
  std::vector<pollfd> fds_;
  std::vector<Connection*> owners_;
  Clock::time_point last_misc_ = Clock::now();
};

void publish(Connection& c, int qos) {
  unsigned char payload[kPayloadBytes] = {};
  auto now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
  std::int64_t sent_ns = now_ns.count();
  std::memcpy(payload, &sent_ns, sizeof sent_ns);
  if (mosquitto_publish(c.mosq.get(), nullptr, c.topic.c_str(), kPayloadBytes, payload, qos,
                        false) == MOSQ_ERR_SUCCESS) {
    ++c.in_flight;
  }
}

// Connects every id (at most `concurrency` handshakes at a time, so that a big fleet does not
// overrun the broker's listen backlog) and subscribes each to its own subtree. Returns the
// connections that are subscribed; the others are counted in `refused`.
std::vector<std::unique_ptr<Connection>> connect_all(const Endpoint& endpoint,
                                                     const std::vector<std::string>& ids, int qos,
                                                     Pump& pump, int& refused) {
  constexpr std::size_t kConcurrency = 32;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  std::vector<std::unique_ptr<Connection>> all;
  std::vector<Connection*> pending;
  std::size_t next = 0;
  refused = 0;
  while ((next < ids.size() || !pending.empty()) && Clock::now() < deadline) {
    while (next < ids.size() && pending.size() < kConcurrency) {
      all.push_back(start_connect(endpoint, ids[next++]));
      pending.push_back(all.back().get());
    }
    pump.turn(pending, milliseconds(5));
    for (auto* c : pending) {
      if (c->state == State::connected && !c->subscribe_sent) {
        // Subscribing is a request like any other: its SUBACK arrives through later turns.
        mosquitto_subscribe(c->mosq.get(), nullptr, ("devices/" + c->id + "/#").c_str(), qos);
        c->subscribe_sent = true;
      }
    }
    std::erase_if(pending, [](Connection* c) {
      return c->state != State::connecting && c->state != State::connected;
    });
  }
  std::vector<std::unique_ptr<Connection>> subscribed;
  for (auto& c : all) {
    if (c->state == State::subscribed) {
      subscribed.push_back(std::move(c));
    } else {
      ++refused;
    }
  }
  return subscribed;
}

std::vector<Connection*> pointers(const std::vector<std::unique_ptr<Connection>>& owned) {
  std::vector<Connection*> raw;
  for (const auto& c : owned) raw.push_back(c.get());
  return raw;
}

// Drives traffic until `until`. Flat out (rate 0): each connection keeps `window` messages in
// flight, publishing the next as one comes back, so the broker is never idle yet nothing piles
// up without bound. At a fixed total rate: each connection publishes on its own schedule of
// connections/rate seconds, staggered, so the load is smooth. A negative rate publishes nothing
// and only lets what is under way arrive.
void drive(const std::vector<Connection*>& live, int qos, double rate, int window, Pump& pump,
           Clock::time_point until) {
  const auto interval = rate > 0 ? std::chrono::duration_cast<Clock::duration>(
                                       duration<double>(static_cast<double>(live.size()) / rate))
                                 : Clock::duration::zero();
  while (Clock::now() < until) {
    auto now = Clock::now();
    auto wake = until;
    for (auto* c : live) {
      if (c->state != State::subscribed || rate < 0) continue;
      if (rate > 0) {
        if (c->next_send <= now) {
          publish(*c, qos);
          c->next_send += interval;
          if (c->next_send < now) c->next_send = now + interval;  // fell behind: do not burst
        }
        wake = std::min(wake, c->next_send);
      } else {
        // A QoS 0 message may be dropped; after a second without receipts the window restarts.
        if (c->in_flight > 0 && now - c->last_received > std::chrono::seconds(1)) {
          ++c->stalls;
          c->in_flight = 0;
          c->last_received = now;
        }
        while (c->in_flight < window) publish(*c, qos);
      }
    }
    auto timeout =
        rate != 0 ? std::chrono::duration_cast<milliseconds>(wake - now) : milliseconds(1);
    pump.turn(live, std::clamp(timeout, milliseconds(0), milliseconds(10)));
  }
}

// A broker under test, from a --targets file line "NAME PORT PID CERTS_DIR IDS_FILE": the
// brokers of all set-ups run at once (idle ones cost nothing), and the load moves from one to the
// next every few seconds, so that load from elsewhere on the machine falls on all of them alike.
struct Target {
  std::string name;
  long pid = 0;
  std::vector<std::string> ids;
  std::unique_ptr<TlsContexts> tls;
  Endpoint endpoint;
  std::vector<std::unique_ptr<Connection>> owned;
  std::vector<Connection*> live;
};

std::vector<Target> read_targets(const std::string& path, const std::string& cafile) {
  std::vector<Target> targets;
  for (const auto& line : read_lines(path)) {
    Target t;
    std::string port, pid, certs, ids;
    std::istringstream fields(line);
    if (!(fields >> t.name >> port >> pid >> certs >> ids)) {
      throw std::runtime_error("bad --targets line: " + line);
    }
    t.pid = std::stol(pid);
    t.ids = read_lines(ids);
    t.tls = std::make_unique<TlsContexts>(cafile, certs);
    t.endpoint = Endpoint{std::stoi(port), t.tls.get()};
    targets.push_back(std::move(t));
  }
  if (targets.empty()) throw std::runtime_error("no targets");
  return targets;
}

Clock::time_point after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(duration<double>(seconds));
}

// Rounds of: for each target (the order rotated by one every round), a settling phase and a
// measured phase of the same load. One "result" line per target and round.
int run_throughput(const ThroughputOptions& options) {
  auto targets = read_targets(options.targets, options.cafile);
  const std::size_t connections = options.connections, rounds = options.rounds;
  const int qos = options.qos, window = options.window;
  const double rate = options.rate, seconds = options.seconds, settle = options.settle;
  Pump pump;
  for (auto& t : targets) {
    t.ids.resize(std::min(t.ids.size(), connections));
    int refused = 0;
    t.owned = connect_all(t.endpoint, t.ids, qos, pump, refused);
    t.live = pointers(t.owned);
    if (t.live.size() != t.ids.size()) {
      throw std::runtime_error(t.name + ": " + std::to_string(refused) + " connections failed");
    }
  }
  const auto interval = [&](std::size_t n) {
    return std::chrono::duration_cast<Clock::duration>(
        duration<double>(static_cast<double>(n) / rate));
  };
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::size_t k = 0; k < targets.size(); ++k) {
      Target& t = targets[(k + round) % targets.size()];
      // Keepalive for everyone, then a fresh start for this target's windows and schedule.
      for (auto& other : targets) {
        for (auto* c : other.live) mosquitto_loop_misc(c->mosq.get());
      }
      const auto start = Clock::now();
      for (std::size_t i = 0; i < t.live.size(); ++i) {
        t.live[i]->last_received = start;
        t.live[i]->in_flight = 0;
        t.live[i]->next_send = start + (rate > 0 ? interval(i) : Clock::duration::zero());
      }
      drive(t.live, qos, rate, window, pump, after(settle));

      std::vector<double> latencies_us;
      std::uint64_t before = 0, stalls_before = 0;
      for (auto* c : t.live) {
        c->latencies_us = &latencies_us;
        before += c->received;
        stalls_before += c->stalls;
      }
      const double cpu_before = process_cpu_us(t.pid);
      const auto t0 = Clock::now();
      drive(t.live, qos, rate, window, pump, after(seconds));
      const auto t1 = Clock::now();
      const double cpu = process_cpu_us(t.pid) - cpu_before;
      std::uint64_t received = 0, stalls = 0;
      std::size_t closed = 0;
      for (auto* c : t.live) {
        c->latencies_us = nullptr;
        received += c->received;
        stalls += c->stalls;
        closed += c->state == State::closed ? 1 : 0;
      }
      const double delivered = static_cast<double>(received - before);
      emit({{"type", "result"},
            {"round", round + 1},
            {"target", t.name},
            {"delivered", received - before},
            {"msgs_per_s", rounded(delivered / seconds_between(t0, t1), 1)},
            {"cpu_us_per_msg", rounded(delivered > 0 ? cpu / delivered : 0.0, 3)},
            {"p50_us", rounded(percentile(latencies_us, 0.5), 1)},
            {"p99_us", rounded(percentile(latencies_us, 0.99), 1)},
            {"stalls", stalls - stalls_before},
            {"closed", closed}});
      // Let this target's last messages come back before the next one's turn.
      drive(t.live, qos, -1, 0, pump, after(0.2));
    }
  }
  for (auto& t : targets) {
    for (auto* c : t.live) mosquitto_disconnect(c->mosq.get());
    pump.turn(t.live, milliseconds(50));
  }
  return 0;
}

// Rounds of K connects per target (cycling through its ids), at most C under way at once; each
// disconnects cleanly as soon as its CONNACK arrives. A refusal is a CONNACK with a non-zero code
// or a connection closed before any CONNACK (TLS refused).
int run_storm(const StormOptions& options) {
  auto targets = read_targets(options.targets, options.cafile);
  const std::size_t count = options.count, rounds = options.rounds;
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::size_t k = 0; k < targets.size(); ++k) {
      Target& t = targets[(k + round) % targets.size()];
      // Never more at once than there are ids: one identity twice at once would take its own
      // session over.
      const auto concurrency = std::min(options.concurrency, t.ids.size());
      const auto deadline = after(120);
      std::vector<std::unique_ptr<Connection>> slots;
      std::size_t started = 0, accepted = 0, refused = 0;
      Pump pump;
      const double cpu_before = process_cpu_us(t.pid);
      const auto t0 = Clock::now();
      while ((started < count || !slots.empty()) && Clock::now() < deadline) {
        while (started < count && slots.size() < concurrency) {
          slots.push_back(start_connect(t.endpoint, t.ids[started % t.ids.size()]));
          ++started;
        }
        pump.turn(pointers(slots), milliseconds(5));
        std::erase_if(slots, [&](const std::unique_ptr<Connection>& c) {
          switch (c->state) {
            case State::connected:
              ++accepted;
              mosquitto_disconnect(c->mosq.get());
              c->state = State::leaving;
              return false;
            case State::leaving:
              return !mosquitto_want_write(c->mosq.get());
            case State::refused:
            case State::closed:
              ++refused;
              return true;
            case State::connecting:
            case State::subscribed:
              return false;
          }
          return false;
        });
      }
      const auto t1 = Clock::now();
      const double cpu = process_cpu_us(t.pid) - cpu_before;
      emit({{"type", "result"},
            {"round", round + 1},
            {"target", t.name},
            {"connects", accepted},
            {"refused", refused},
            {"timed_out", count - accepted - refused},
            {"seconds", rounded(seconds_between(t0, t1), 3)},
            {"connects_per_s", rounded(static_cast<double>(accepted) / seconds_between(t0, t1), 1)},
            {"cpu_us_per_connect",
             rounded(accepted > 0 ? cpu / static_cast<double>(accepted) : 0.0, 1)}});
    }
  }
  return 0;
}

// Pumps until `done` or the deadline; returns `done()`.
template <class Done>
bool pump_until(Pump& pump, const std::vector<Connection*>& live, milliseconds limit, Done done) {
  const auto deadline = Clock::now() + limit;
  while (!done() && Clock::now() < deadline) pump.turn(live, milliseconds(5));
  return done();
}

// Does the set-up enforce anything? The first id tries to subscribe to, and publish into, the
// second id's subtree; the second publishing into its own subtree is the positive control.
int run_check(const Endpoint& endpoint, const CheckOptions& options) {
  auto ids = read_lines(options.ids);
  if (ids.size() < 2) throw std::runtime_error("check needs two ids");
  ids.resize(2);
  Pump pump;
  int refused = 0;
  auto owned = connect_all(endpoint, ids, 0, pump, refused);
  if (owned.size() != 2) throw std::runtime_error("check: the two devices could not connect");
  auto live = pointers(owned);
  Connection &intruder = *live[0], &owner = *live[1];
  const std::string foreign = "devices/" + owner.id + "/#";
  intruder.last_granted = -1;
  mosquitto_subscribe(intruder.mosq.get(), nullptr, foreign.c_str(), 0);
  pump_until(pump, live, milliseconds(2000), [&] { return intruder.last_granted >= 0; });
  const std::string topic = "devices/" + owner.id + "/check";
  mosquitto_publish(intruder.mosq.get(), nullptr, topic.c_str(), 5, "check", 0, false);
  const bool foreign_delivered =
      pump_until(pump, live, milliseconds(300), [&] { return owner.received > 0; });
  mosquitto_publish(owner.mosq.get(), nullptr, topic.c_str(), 5, "check", 0, false);
  const bool own_delivered =
      pump_until(pump, live, milliseconds(2000), [&] { return owner.received > 0; });
  emit({{"type", "check"},
        {"foreign_subscribe_granted", intruder.last_granted >= 0 && intruder.last_granted < 0x80},
        {"foreign_publish_delivered", foreign_delivered},
        {"own_publish_delivered", own_delivered}});
  for (auto* c : live) mosquitto_disconnect(c->mosq.get());
  pump.turn(live, milliseconds(50));
  return 0;
}

// A child process, waited for through a pidfd so that the event loop keeps running meanwhile.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
    // glibc 2.36 declares pidfd_open without C linkage for C++; the system call is the same.
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd_ < 0) throw std::runtime_error("pidfd_open failed");
  }
  ~Child() {
    if (!reaped_) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(pidfd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  int fd() const { return pidfd_; }
  // The exit status once the child has exited (pidfd readable), reaping it.
  int reap() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool reaped_ = false;
};

// With N devices connected (spread over the brokers in turn: device i to broker i mod B, victim
// j to broker j mod B) and traffic flowing at a fixed rate, revokes the victims one at a time with
// `onboardctl device revoke` and measures from the command's exit (its transaction has committed
// by then) to this client seeing its connection closed; then checks that the revoked device's
// reconnect to the same broker is refused.
int run_revocation(const std::vector<Endpoint>& endpoints, const RevocationOptions& options) {
  auto ids = read_lines(options.ids);
  const auto victims = read_lines(options.victims);
  const std::size_t connections = options.connections, brokers = endpoints.size();
  ids.resize(std::min(ids.size(), connections - std::min(connections, victims.size())));
  const double rate = options.rate;
  const auto timeout = milliseconds(options.timeout_ms);
  const std::string &onboardctl = options.onboardctl, &data_dir = options.data_dir;
  std::vector<std::vector<std::string>> ids_of(brokers);
  std::map<std::string, std::size_t> broker_of;
  for (std::size_t i = 0; i < ids.size(); ++i) ids_of[i % brokers].push_back(ids[i]);
  for (std::size_t j = 0; j < victims.size(); ++j) {
    ids_of[j % brokers].push_back(victims[j]);
    broker_of[victims[j]] = j % brokers;
  }
  Pump pump;
  int refused_at_start = 0;
  std::vector<std::unique_ptr<Connection>> owned;
  for (std::size_t b = 0; b < brokers; ++b) {
    int refused = 0;
    auto some = connect_all(endpoints[b], ids_of[b], 0, pump, refused);
    refused_at_start += refused;
    emit({{"type", "broker"},
          {"broker", b},
          {"connections", some.size()},
          {"refused_at_start", refused}});
    for (auto& c : some) owned.push_back(std::move(c));
  }
  auto live = pointers(owned);
  std::map<std::string, Connection*> by_id;
  for (auto* c : live) by_id[c->id] = c;
  auto start = Clock::now();
  for (std::size_t i = 0; i < live.size(); ++i) {
    live[i]->next_send = start + std::chrono::duration_cast<Clock::duration>(
                                     duration<double>(static_cast<double>(i) / rate));
  }
  drive(live, 0, rate, 0, pump, start + std::chrono::seconds(1));
  emit({{"type", "fleet"},
        {"connections", live.size()},
        {"brokers", brokers},
        {"refused_at_start", refused_at_start}});

  std::size_t not_closed = 0, reconnect_accepted = 0, failed_commands = 0, other_closed = 0;
  std::vector<double> latencies_ms;
  for (const auto& victim : victims) {
    auto found = by_id.find(victim);
    if (found == by_id.end() || found->second->state != State::subscribed) continue;
    Connection* target = found->second;
    const std::size_t broker = broker_of[victim];
    Child revoke({onboardctl, "--data-dir", data_dir, "device", "revoke", victim});
    // Traffic keeps flowing while the command runs.
    const auto command_deadline = Clock::now() + std::chrono::seconds(30);
    while (!pump.turn(live, milliseconds(1), revoke.fd()) && Clock::now() < command_deadline) {
      drive(live, 0, rate, 0, pump, Clock::now());
    }
    if (revoke.reap() != 0) {
      ++failed_commands;
      continue;
    }
    const auto exited = Clock::now();
    const auto close_deadline = exited + timeout;
    while (target->state == State::subscribed && Clock::now() < close_deadline) {
      drive(live, 0, rate, 0, pump, std::min(close_deadline, Clock::now() + milliseconds(1)));
    }
    if (target->state == State::subscribed) {
      ++not_closed;
      emit({{"type", "revocation"}, {"device", victim}, {"broker", broker}, {"closed", false}});
      continue;
    }
    // Negative when the broker closed the connection before the command had exited.
    const double ms = duration<double, std::milli>(target->closed_at - exited).count();
    latencies_ms.push_back(ms);
    emit({{"type", "revocation"},
          {"device", victim},
          {"broker", broker},
          {"closed", true},
          {"ms", rounded(ms, 2)}});

    auto again = start_connect(endpoints[broker], victim);
    std::vector<Connection*> one{again.get()};
    const auto reconnect_deadline = Clock::now() + std::chrono::seconds(5);
    while (again->state == State::connecting && Clock::now() < reconnect_deadline) {
      pump.turn(one, milliseconds(5));
    }
    const bool accepted = again->state == State::connected;
    if (accepted) ++reconnect_accepted;
    emit({{"type", "reconnect"}, {"device", victim}, {"broker", broker}, {"accepted", accepted}});
  }
  for (auto* c : live) {
    bool victim = std::find(victims.begin(), victims.end(), c->id) != victims.end();
    if (!victim && c->state != State::subscribed) ++other_closed;
  }
  emit({{"type", "summary"},
        {"revocations", latencies_ms.size()},
        {"not_closed", not_closed},
        {"reconnect_accepted", reconnect_accepted},
        {"failed_commands", failed_commands},
        {"other_closed", other_closed},
        {"p50_ms", rounded(percentile(latencies_ms, 0.5), 2)},
        {"p99_ms", rounded(percentile(latencies_ms, 0.99), 2)},
        {"max_ms",
         rounded(latencies_ms.empty() ? 0.0
                                      : *std::max_element(latencies_ms.begin(), latencies_ms.end()),
                 2)}});
  for (auto* c : live) mosquitto_disconnect(c->mosq.get());
  pump.turn(live, milliseconds(50));
  return 0;
}

// The options every mode that talks to one broker takes.
void add_device_options(CLI::App& mode, DeviceOptions& o) {
  mode.add_option("--port", o.ports,
                  "the broker's mTLS port on 127.0.0.1 (revocation: once per broker, all on one "
                  "registry)")
      ->required()
      ->take_all()
      ->check(CLI::Range(1, 65535));
  mode.add_option("--cafile", o.cafile, "CA certificate (PEM) the broker's certificate chains to")
      ->required()
      ->check(CLI::ExistingFile);
  mode.add_option("--certs", o.certs, "directory with ID.crt and ID.key for every device id")
      ->required()
      ->check(CLI::ExistingDirectory);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "MQTT load over mTLS for bench/run's broker parts. Results are JSON lines on stdout, one "
      "object per line with a \"type\" (see loadgen.cpp)."};
  app.require_subcommand(1);
  const auto targets_help =
      "brokers under test, one per line: NAME PORT PID CERTS_DIR IDS_FILE (the load moves "
      "from one to the next, the order rotated each round)";
  const auto count = bench_cli::whole_number(1);
  const auto positive = bench_cli::positive_number();
  const auto non_negative = bench_cli::positive_number(true);

  ThroughputOptions throughput;
  auto* throughput_mode = app.add_subcommand(
      "throughput", "delivered messages per second, broker CPU per message and latency");
  throughput_mode->add_option("--targets", throughput.targets, targets_help)
      ->required()
      ->check(CLI::ExistingFile);
  throughput_mode->add_option("--cafile", throughput.cafile, "CA certificate (PEM) of the brokers")
      ->required()
      ->check(CLI::ExistingFile);
  throughput_mode
      ->add_option("--connections", throughput.connections,
                   "connections per target, one per device id")
      ->required()
      ->check(count);
  throughput_mode->add_option("--qos", throughput.qos, "QoS of subscriptions and publishes")
      ->required()
      ->check(CLI::Range(0, 2));
  throughput_mode->add_option("--rounds", throughput.rounds, "rounds over all targets")
      ->required()
      ->check(count);
  throughput_mode->add_option("--seconds", throughput.seconds, "measured seconds per turn")
      ->required()
      ->check(positive);
  throughput_mode
      ->add_option("--settle", throughput.settle, "seconds of the same load before measuring")
      ->capture_default_str()
      ->check(non_negative);
  throughput_mode
      ->add_option("--rate", throughput.rate,
                   "messages per second in all (0: flat out, --window in flight per connection)")
      ->capture_default_str()
      ->check(non_negative);
  throughput_mode
      ->add_option("--window", throughput.window, "flat out: messages in flight per connection")
      ->capture_default_str()
      ->check(count);

  StormOptions storm;
  auto* storm_mode = app.add_subcommand(
      "storm", "mTLS connects per second, each disconnecting as soon as its CONNACK arrives");
  storm_mode->add_option("--targets", storm.targets, targets_help)
      ->required()
      ->check(CLI::ExistingFile);
  storm_mode->add_option("--cafile", storm.cafile, "CA certificate (PEM) of the brokers")
      ->required()
      ->check(CLI::ExistingFile);
  storm_mode->add_option("--count", storm.count, "connects per target and round")
      ->required()
      ->check(count);
  storm_mode
      ->add_option("--concurrency", storm.concurrency,
                   "connects under way at once (at most the number of ids)")
      ->required()
      ->check(count);
  storm_mode->add_option("--rounds", storm.rounds, "rounds over all targets")
      ->required()
      ->check(count);

  CheckOptions check;
  auto* check_mode = app.add_subcommand(
      "check",
      "does the broker enforce? The first id subscribes to and publishes into the second id's "
      "subtree; the second id's own publish is the control");
  check_mode->add_option("--ids", check.ids, "device ids, one per line (the first two are used)")
      ->required()
      ->check(CLI::ExistingFile);
  add_device_options(*check_mode, check.device);

  RevocationOptions revocation;
  auto* revocation_mode = app.add_subcommand(
      "revocation",
      "with traffic flowing, revokes the victims one at a time with `onboardctl device revoke` "
      "and measures from its exit to the connection closed");
  revocation_mode
      ->add_option("--ids", revocation.ids, "device ids that carry traffic, one per line")
      ->required()
      ->check(CLI::ExistingFile);
  revocation_mode->add_option("--victims", revocation.victims, "device ids to revoke, one per line")
      ->required()
      ->check(CLI::ExistingFile);
  revocation_mode
      ->add_option("--connections", revocation.connections, "devices connected, victims included")
      ->required()
      ->check(count);
  revocation_mode->add_option("--rate", revocation.rate, "QoS 0 messages per second in all")
      ->required()
      ->check(positive);
  revocation_mode->add_option("--onboardctl", revocation.onboardctl, "the onboardctl binary")
      ->required()
      ->check(CLI::ExistingFile);
  revocation_mode
      ->add_option("--data-dir", revocation.data_dir,
                   "the data directory the broker's plugin reads")
      ->required()
      ->check(CLI::ExistingDirectory);
  revocation_mode
      ->add_option("--timeout-ms", revocation.timeout_ms,
                   "how long a revoked device's connection may stay open")
      ->capture_default_str()
      ->check(count);
  add_device_options(*revocation_mode, revocation.device);

  CLI11_PARSE(app, argc, argv);
  try {
    LibMosquitto library;
    if (*throughput_mode) return run_throughput(throughput);
    if (*storm_mode) return run_storm(storm);
    const DeviceOptions& device = *check_mode ? check.device : revocation.device;
    TlsContexts tls(device.cafile, device.certs);
    std::vector<Endpoint> endpoints;
    for (int port : device.ports) endpoints.push_back(Endpoint{port, &tls});
    if (*check_mode) {
      if (endpoints.size() != 1) throw std::runtime_error("check talks to one broker: one --port");
      return run_check(endpoints.front(), check);
    }
    return run_revocation(endpoints, revocation);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "onboard_loadgen: %s\n", e.what());
    return 1;
  }
}
