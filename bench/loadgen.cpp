// onboard_loadgen: MQTT load over mTLS for bench/run's broker parts (issue 7).
//
//   onboard_loadgen throughput --targets FILE --cafile CA.pem --connections N --qos Q --rounds K
//                              --seconds S [--settle S] [--rate R] [--window W]
//   onboard_loadgen storm      --targets FILE --cafile CA.pem --count K --concurrency C --rounds K
//   onboard_loadgen check      --ids FILE (the first two ids)                         DEVICE
//   onboard_loadgen revocation --ids FILE --connections N --victims FILE --rate R
//                              --onboardctl PATH --data-dir DIR [--timeout-ms T]     DEVICE
//   onboard_loadgen soak       --ids FILE ("ID TYPE" lines) --seconds S --rate R
//                              --onboardctl PATH --data-dir DIR [--broker-pid P]     DEVICE
//   onboard_loadgen provision  --count N --prefix P (a claim's certificate: DIR/claim.crt, .key)
//                              [--timeout S] [--renew-share F] [--broker-pid P]
//                              [--server-pid P]                                      DEVICE
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
//   summary     revocation: the counts and percentiles over all victims; soak: decisions checked
//               and wrong by kind, disconnect latencies, message rates
//   summary     provision: enrolment over MQTT: N devices at once, each with its own new key,
//               connect with the claim's certificate, publish a CSR to $provision/<id>/csr as soon
//               as they are connected and wait for the answer; the counts, enrolments per second,
//               the percentiles of claim-to-certificate (connect start to answer),
//               request-to-answer and connect, the connect times in 100 ms buckets, and the CPU
//               seconds this process, the broker and the server (--broker-pid, --server-pid) spent
//               meanwhile
//   renewal     provision with --renew-share: the same for the renewal that follows: that share of
//               the enrolled devices reconnect with their new certificates at once and each renews
//               on $provision/<id>/renew for a new key (proof: a signature by the old key over the
//               new CSR's DER); "wrong_certificate" counts answers whose certificate is not one for
//               the new key
//   soak also: fleet (devices connected), memory (broker RSS every few seconds), wrong (the first
//   20 wrong decisions), mismatch (model vs `acl check`), late_disconnect, unexpected_close,
//   failed_command. Its exit status is 3 when it found a wrong decision, a late disconnect, a
//   mismatch or a failed command.
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
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cli_checks.h"
#include "registry/acl.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::milliseconds;
namespace acl = onboard::acl;

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
      const int saved_errno = errno;
      char detail[256] = "no OpenSSL error";
      if (const unsigned long e = ERR_peek_last_error(); e != 0)
        ERR_error_string_n(e, detail, sizeof detail);
      throw std::runtime_error("cannot make a TLS context for " + cert + ": " + detail + " (" +
                               std::strerror(saved_errno) + ")");
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    slot = std::move(ctx);
    return slot.get();
  }
  // A context for `id` from a certificate and key in memory (provision: a device's certificate,
  // just issued), verifying the server as get() does.
  void add(const std::string& id, X509* cert, EVP_PKEY* key) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx || SSL_CTX_load_verify_locations(ctx.get(), cafile_.c_str(), nullptr) != 1 ||
        SSL_CTX_use_certificate(ctx.get(), cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx.get(), key) != 1 ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx.get()), "127.0.0.1") != 1) {
      throw std::runtime_error("cannot make a TLS context for " + id);
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    contexts_[id] = std::move(ctx);
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
  std::string answer;                           // provision: the topic of the answer, once it came
  std::string answer_payload;                   // and its payload
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
  if (std::string_view(message->topic).starts_with("$provision/")) {
    c->answer = message->topic;
    c->answer_payload.assign(static_cast<const char*>(message->payload),
                             static_cast<std::size_t>(message->payloadlen));
    return;
  }
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

// libmosquitto gives every client a socket pair whose only use is to wake its own threaded loop,
// which this program does not run: three descriptors per connection instead of one, so a process
// limited to 20,000 descriptors stops at about 6,600 connections. The pair is not made if no
// descriptor is free while the client is created (libmosquitto goes on without it), so the soft
// limit is lowered to the lowest free descriptor for that moment. This program has one thread:
// nothing else opens a descriptor meanwhile.
mosquitto* new_client(const std::string& id, void* userdata) {
  rlimit limit{};
  const int lowest_free = dup(STDERR_FILENO);
  if (lowest_free < 0 || getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    if (lowest_free >= 0) close(lowest_free);
    return mosquitto_new(id.c_str(), true, userdata);
  }
  close(lowest_free);
  rlimit none_free = limit;
  none_free.rlim_cur = static_cast<rlim_t>(lowest_free);
  const bool lowered = setrlimit(RLIMIT_NOFILE, &none_free) == 0;
  mosquitto* client = mosquitto_new(id.c_str(), true, userdata);
  if (lowered && setrlimit(RLIMIT_NOFILE, &limit) != 0)
    throw std::runtime_error("cannot restore the descriptor limit");
  return client;
}

// `tls_id`: whose certificate it connects with (the device's own, or a claim's). `wait_for_tcp`:
// whether the TCP connect blocks until the broker's SYN-ACK (libmosquitto's mosquitto_connect);
// otherwise it only starts (mosquitto_connect_async), and the Pump must be told to drive the
// handshake on writability (Pump::handshake_on_writable).
std::unique_ptr<Connection> start_connect(const Endpoint& endpoint, const std::string& id,
                                          const std::string& tls_id = {},
                                          bool wait_for_tcp = true) {
  auto c = std::make_unique<Connection>();
  c->id = id;
  c->topic = "devices/" + id + "/load";
  c->mosq.reset(new_client(id, c.get()));
  if (!c->mosq) throw std::runtime_error("mosquitto_new failed");
  auto* m = c->mosq.get();
  // With a context of our own (and no defaults added to it) libmosquitto still runs TLS but
  // leaves verification to the context.
  if (mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != MOSQ_ERR_SUCCESS ||
      mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, endpoint.tls->get(tls_id.empty() ? id : tls_id)) !=
          MOSQ_ERR_SUCCESS) {
    throw std::runtime_error("cannot set the TLS context for " + id);
  }
  // Without it Nagle's algorithm meets the broker's delayed ACKs and QoS 1 flat out stalls in
  // 40 ms steps, randomly per run (bench/run also sets the broker's set_tcp_nodelay).
  mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_connect_callback_set(m, on_connect);
  mosquitto_disconnect_callback_set(m, on_disconnect);
  mosquitto_subscribe_callback_set(m, on_subscribe);
  mosquitto_message_callback_set(m, on_message);
  // The TCP connect to loopback completes at once unless the broker's accept queue is full (its
  // SYN is then dropped, and a blocking connect waits for the retransmission, a second or more);
  // the TLS handshake and CONNECT then proceed without blocking, through the poll loop.
  int rc = wait_for_tcp ? mosquitto_connect(m, "127.0.0.1", endpoint.port, kKeepaliveSeconds)
                        : mosquitto_connect_async(m, "127.0.0.1", endpoint.port, kKeepaliveSeconds);
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
  // C: any connection type with a `mosq` owner (Connection here, SoakConnection in soak mode).
  template <class C>
  bool turn(const std::vector<C*>& connections, milliseconds timeout, int extra_fd = -1) {
    fds_.clear();
    owners_.clear();
    for (auto* c : connections) {
      int sock = mosquitto_socket(c->mosq.get());
      if (sock < 0) continue;
      short events = POLLIN;
      if (mosquitto_want_write(c->mosq.get())) events |= POLLOUT;
      fds_.push_back({sock, events, 0});
      owners_.push_back(c->mosq.get());
    }
    if (extra_fd >= 0) fds_.push_back({extra_fd, POLLIN, 0});
    int ready = ::poll(fds_.data(), fds_.size(), static_cast<int>(timeout.count()));
    bool extra_ready = false;
    if (ready > 0) {
      for (std::size_t i = 0; i < owners_.size(); ++i) {
        auto* m = owners_[i];
        // libmosquitto continues a TLS handshake only in its read call: one that stopped because
        // the TCP connect had not completed yet (connect_async) goes on once writable.
        const short wake = handshake_on_writable_ ? (POLLIN | POLLERR | POLLHUP | POLLOUT)
                                                  : (POLLIN | POLLERR | POLLHUP);
        if (fds_[i].revents & wake) mosquitto_loop_read(m, 1);
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
  void handshake_on_writable(bool on) { handshake_on_writable_ = on; }

 private:
  bool handshake_on_writable_ = false;
  std::vector<pollfd> fds_;
  std::vector<mosquitto*> owners_;
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
  // Its standard output goes to `out` (truncated first), or nowhere.
  explicit Child(const std::vector<std::string>& argv, const std::string& out = "/dev/null") {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
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

// ---- soak (issue 14): churn with an oracle
// ------------------------------------------------------
//
// Devices connected over mTLS (MQTT v5, QoS 1, so that a refused publish shows as PUBACK 0x87)
// carry traffic while a churn runs one `onboardctl` change every --churn-interval seconds:
// a group rule removed and granted again, a device-level deny rule added and removed, a device
// disabled and enabled, moved to the other group, revoked, a new device registered and
// connected. Every decision the broker makes that this client can observe is checked against
// the registry's answer at that moment:
//   connect    CONNACK (or a refused handshake) of every connect and reconnect
//   subscribe  the SUBACK code of each filter
//   publish    the PUBACK code of each message (0/16 allowed, 0x87 refused)
//   read       each delivery, and each non-delivery to a device that held a granted
//              subscription matching the topic from before the publish and stayed connected
// The answer comes from acl::evaluate, the function the plugin decides with, over a model of the
// registry's rules, groups and device states that starts from `onboardctl acl list` and takes
// every change the churn commits; after every change `onboardctl acl check --json` (the
// registry's own explanation) is asked about the device and topic the change touched and must
// agree with the model. A decision made during [a, b] may match any registry state that may have
// been in effect then: a change counts from its command's start, and the previous state stays
// acceptable until --window-ms after the command's exit (the propagation window).
// Revoked and disabled devices must be disconnected within --window-ms of the command's exit.

struct SoakOptions {
  DeviceOptions device;
  std::string ids, onboardctl, data_dir;
  double seconds = 0, rate = 0, churn_interval = 1, memory_interval = 5, connect_seconds = 1800;
  long window_ms = 1000;
  long broker_pid = 0;
  std::size_t cell = 4;
};

enum class DeviceStatus { active, disabled, revoked };
struct DeviceModel {
  std::string type;
  DeviceStatus status = DeviceStatus::active;
};
// What the broker decides from, as far as this run changes it.
struct RegistryModel {
  std::map<std::string, std::vector<acl::Rule>> group_rules, device_rules;
  std::unordered_map<std::string, DeviceModel> devices;
};

bool model_connects(const RegistryModel& m, const std::string& id) {
  auto d = m.devices.find(id);
  return d != m.devices.end() && d->second.status == DeviceStatus::active;
}

// The device's rules, then default's, then its type's: the sets the registry evaluates.
bool model_allows(const RegistryModel& m, const std::string& id, acl::Access access,
                  const std::string& topic) {
  auto d = m.devices.find(id);
  if (d == m.devices.end() || d->second.status != DeviceStatus::active) return false;
  std::vector<std::span<const acl::Rule>> sets;
  auto add = [&](const std::map<std::string, std::vector<acl::Rule>>& rules,
                 const std::string& key) {
    auto found = rules.find(key);
    if (found != rules.end()) sets.emplace_back(found->second);
  };
  add(m.device_rules, id);
  add(m.group_rules, "default");
  if (!d->second.type.empty() && d->second.type != "default") add(m.group_rules, d->second.type);
  const acl::Substitutions subs{id, id, id};
  return acl::evaluate(sets, access, topic, subs).decision == acl::Decision::allow;
}

acl::Rule rule_from_json(const nlohmann::json& j) {
  acl::Rule rule;
  rule.id = j.at("id").get<std::int64_t>();
  rule.pattern = acl::Pattern(j.at("pattern").get<std::string>());
  auto access = acl::parse_access(j.at("access").get<std::string>());
  auto effect = acl::parse_effect(j.at("effect").get<std::string>());
  if (!access || !effect) throw std::runtime_error("acl list: unknown access or effect");
  rule.access = *access;
  rule.effect = *effect;
  rule.priority = j.at("priority").get<int>();
  return rule;
}

// The registry's states since the start, each from the start of the command that made it.
class History {
 public:
  History(RegistryModel initial, Clock::duration window) : window_(window) {
    auto now = Clock::now();
    versions_.push_back({now, now, std::make_shared<const RegistryModel>(std::move(initial))});
  }
  const RegistryModel& current() const { return *versions_.back().model; }
  void commit(RegistryModel next, Clock::time_point from, Clock::time_point committed) {
    versions_.push_back({from, committed, std::make_shared<const RegistryModel>(std::move(next))});
    // Decisions are judged within seconds; a minute of history is plenty.
    while (versions_.size() > 2 &&
           versions_[1].committed + window_ + std::chrono::seconds(60) < committed) {
      versions_.pop_front();
    }
  }
  // For a wrong decision's report: how long before `at` the last state committed by then was
  // committed (negative: none was).
  double ms_since_last_commit(Clock::time_point at) const {
    for (auto v = versions_.rbegin(); v != versions_.rend(); ++v) {
      if (v->committed <= at)
        return std::chrono::duration<double, std::milli>(at - v->committed).count();
    }
    return -1;
  }
  // Which answers (bit 1: refused, bit 2: allowed) the states that may have been in effect
  // during [a, b] give.
  template <class Ask>
  int answers(Clock::time_point a, Clock::time_point b, Ask ask) const {
    int bits = 0;
    for (std::size_t i = 0; i < versions_.size(); ++i) {
      if (i > 0 && versions_[i].from > b) break;
      if (i + 1 < versions_.size() && versions_[i + 1].committed + window_ < a) continue;
      bits |= ask(*versions_[i].model) ? 2 : 1;
    }
    return bits;
  }

 private:
  struct Version {
    Clock::time_point from, committed;
    std::shared_ptr<const RegistryModel> model;
  };
  std::deque<Version> versions_;
  Clock::duration window_;
};

class SoakRun;
struct SoakConnection {
  SoakRun* run = nullptr;
  std::size_t device = 0;
  MosquittoPtr mosq;
  bool connected = false, closed = false, judged_connect = false;
  Clock::time_point started, closed_at;
  std::map<int, std::pair<std::string, Clock::time_point>> subscribing;  // mid: filter, sent
  std::map<std::string, Clock::time_point> granted;                      // filter: SUBACK seen
  std::unordered_map<int, std::uint64_t> publishing;                     // mid: record key
  Clock::time_point next_send, next_resubscribe;
  std::uint64_t turn = 0;
};

struct SoakDevice {
  std::string id;
  std::size_t cell = 0;
  std::unique_ptr<SoakConnection> conn;
  bool revoked = false, busy = false;  // busy: in a churn step (disabled, awaiting reconnect)
  std::uint64_t seq = 0;
};

// One published message, until it is judged.
struct SoakRecord {
  std::size_t sender = 0;
  std::string topic;
  Clock::time_point sent, acked;
  int reason = -1;
  std::vector<std::size_t> received;
};

constexpr std::size_t kSoakPayload = 24;  // sender index, sequence number, send time

class SoakRun {
 public:
  SoakRun(const std::vector<Endpoint>& endpoints, const SoakOptions& options)
      : endpoints_(endpoints),
        o_(options),
        window_(milliseconds(options.window_ms)),
        history_(initial_model(), window_) {}

  int run();

  // Callbacks (record only; the loop acts).
  void on_connect(SoakConnection& c, int rc);
  void on_disconnect(SoakConnection& c);
  void on_subscribe(SoakConnection& c, int mid, int count, const int* codes);
  void on_publish(SoakConnection& c, int mid, int reason);
  void on_message(SoakConnection& c, const mosquitto_message* message);

 private:
  struct Command {
    std::vector<std::string> args;  // after onboardctl --data-dir DIR
    std::function<void(RegistryModel&, const std::string& out)> apply;  // on success
    std::function<void(Clock::time_point exited, const std::string& out)> after;
  };

  RegistryModel initial_model();
  std::string ctl_output(const std::vector<std::string>& args);
  void connect(std::size_t device);
  void wrong(const std::string& kind, const std::string& what);
  void judge_connect(SoakConnection& c, bool accepted);
  void resolve(std::uint64_t key);
  void churn_step();
  void start_command();
  void finish_command(int rc);
  void cross_check(const std::string& device, const std::string& access, const std::string& topic);
  std::size_t pick_device();
  std::string cell_topic(char group, std::size_t device) const {
    return std::string("fleet/") + group + "/" + std::to_string(devices_[device].cell) + "/" +
           devices_[device].id;
  }
  std::string cell_filter(char group, std::size_t cell) const {
    return std::string("fleet/") + group + "/" + std::to_string(cell) + "/#";
  }
  void at(Clock::time_point when, std::function<void()> task) {
    tasks_.emplace(when, std::move(task));
  }

  std::vector<Endpoint> endpoints_;
  const SoakOptions& o_;
  Clock::duration window_;
  std::vector<SoakDevice> devices_;
  std::unordered_map<std::string, std::size_t> index_of_;
  std::vector<std::vector<std::size_t>> cells_;
  std::int64_t soak_a_rule_ = 0;  // the group rule the churn removes and grants again (0: removed)
  History history_;               // after the members initial_model fills
  std::unordered_map<std::uint64_t, SoakRecord> records_;
  std::deque<std::pair<Clock::time_point, std::uint64_t>> due_;
  std::multimap<Clock::time_point, std::function<void()>> tasks_;
  std::deque<Command> commands_;
  std::unique_ptr<Child> child_;
  Command running_;
  Clock::time_point command_started_;
  std::string scratch_;
  std::size_t step_ = 0, pick_ = 0, registered_ = 0;
  std::map<std::string, std::uint64_t> checked_, wrong_;
  std::uint64_t wrong_total_ = 0, published_ = 0, delivered_ = 0, unresolved_ = 0,
                late_deliveries_ = 0, failed_commands_ = 0, model_mismatches_ = 0,
                unexpected_closes_ = 0, late_disconnects_ = 0, changes_ = 0;
  std::vector<double> disconnect_ms_;
  std::vector<std::size_t> pending_connects_;
  bool stopping_ = false;  // the run's own disconnects at the end
};

SoakRun* soak_of(void* self) { return static_cast<SoakConnection*>(self)->run; }
void soak_on_connect(mosquitto*, void* self, int rc) {
  soak_of(self)->on_connect(*static_cast<SoakConnection*>(self), rc);
}
void soak_on_disconnect(mosquitto*, void* self, int) {
  soak_of(self)->on_disconnect(*static_cast<SoakConnection*>(self));
}
void soak_on_subscribe(mosquitto*, void* self, int mid, int count, const int* codes,
                       const mosquitto_property*) {
  soak_of(self)->on_subscribe(*static_cast<SoakConnection*>(self), mid, count, codes);
}
void soak_on_publish(mosquitto*, void* self, int mid, int reason, const mosquitto_property*) {
  soak_of(self)->on_publish(*static_cast<SoakConnection*>(self), mid, reason);
}
void soak_on_message(mosquitto*, void* self, const mosquitto_message* message) {
  soak_of(self)->on_message(*static_cast<SoakConnection*>(self), message);
}

std::string SoakRun::ctl_output(const std::vector<std::string>& args) {
  std::vector<std::string> argv{o_.onboardctl, "--data-dir", o_.data_dir};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = o_.data_dir + "/../soak-ctl.out";
  Child child(argv, out);
  if (child.reap() != 0) throw std::runtime_error("onboardctl " + args.front() + " failed");
  std::ifstream in(out);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Ids "ID TYPE" from --ids; rules from `acl list` of default and the two types.
RegistryModel SoakRun::initial_model() {
  RegistryModel m;
  for (const auto& line : read_lines(o_.ids)) {
    std::istringstream fields(line);
    SoakDevice d;
    std::string type;
    if (!(fields >> d.id >> type)) throw std::runtime_error("bad --ids line: " + line);
    d.cell = devices_.size() / o_.cell;
    index_of_[d.id] = devices_.size();
    if (cells_.size() <= d.cell) cells_.resize(d.cell + 1);
    cells_[d.cell].push_back(devices_.size());
    devices_.push_back(std::move(d));
    m.devices[devices_.back().id] = DeviceModel{type, DeviceStatus::active};
  }
  for (const std::string group : {"default", "soak-a", "soak-b"}) {
    auto rules = nlohmann::json::parse(ctl_output({"acl", "list", "--group", group, "--json"}));
    for (const auto& r : rules) {
      m.group_rules[group].push_back(rule_from_json(r));
      if (group == "soak-a" && r.at("pattern") == "fleet/a/#") soak_a_rule_ = r.at("id");
    }
  }
  if (soak_a_rule_ == 0) throw std::runtime_error("group soak-a has no rule fleet/a/#");
  return m;
}

void SoakRun::wrong(const std::string& kind, const std::string& what) {
  ++wrong_[kind];
  if (++wrong_total_ <= 20) emit({{"type", "wrong"}, {"decision", kind}, {"what", what}});
}

void SoakRun::connect(std::size_t device) {
  auto c = std::make_unique<SoakConnection>();
  c->run = this;
  c->device = device;
  c->started = Clock::now();
  const std::string& id = devices_[device].id;
  c->mosq.reset(new_client(id, c.get()));
  if (!c->mosq) throw std::runtime_error("mosquitto_new failed");
  auto* m = c->mosq.get();
  const Endpoint& endpoint = endpoints_[device % endpoints_.size()];
  if (mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5) != MOSQ_ERR_SUCCESS ||
      mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0) != MOSQ_ERR_SUCCESS ||
      mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, endpoint.tls->get(id)) != MOSQ_ERR_SUCCESS) {
    throw std::runtime_error("cannot set up the connection of " + id);
  }
  mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_connect_callback_set(m, soak_on_connect);
  mosquitto_disconnect_callback_set(m, soak_on_disconnect);
  mosquitto_subscribe_v5_callback_set(m, soak_on_subscribe);
  mosquitto_publish_v5_callback_set(m, soak_on_publish);
  mosquitto_message_callback_set(m, soak_on_message);
  if (mosquitto_connect(m, "127.0.0.1", endpoint.port, kKeepaliveSeconds) != MOSQ_ERR_SUCCESS) {
    c->closed = true;
    c->closed_at = Clock::now();
  }
  devices_[device].conn = std::move(c);
}

void SoakRun::judge_connect(SoakConnection& c, bool accepted) {
  if (c.judged_connect) return;
  c.judged_connect = true;
  ++checked_["connect"];
  const std::string& id = devices_[c.device].id;
  int bits = history_.answers(c.started, Clock::now(),
                              [&](const RegistryModel& m) { return model_connects(m, id); });
  if (!(bits & (accepted ? 2 : 1))) {
    wrong("connect", id + (accepted ? " was accepted" : " was refused"));
  }
}

void SoakRun::on_connect(SoakConnection& c, int rc) {
  judge_connect(c, rc == 0);
  if (rc != 0) return;
  c.connected = true;
  const auto& d = devices_[c.device];
  for (const auto& filter :
       {"devices/" + d.id + "/#", cell_filter('a', d.cell), cell_filter('b', d.cell)}) {
    int mid = 0;
    if (mosquitto_subscribe_v5(c.mosq.get(), &mid, filter.c_str(), 1, 0, nullptr) ==
        MOSQ_ERR_SUCCESS) {
      c.subscribing[mid] = {filter, Clock::now()};
    }
  }
  const auto spread = duration<double>(static_cast<double>(devices_.size()) / o_.rate);
  c.next_send = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   spread * (static_cast<double>(c.device % 97) / 97.0));
  c.next_resubscribe = Clock::now() + std::chrono::seconds(5);
}

void SoakRun::on_disconnect(SoakConnection& c) {
  if (!c.judged_connect) judge_connect(c, false);  // refused during the handshake
  const auto& d = devices_[c.device];
  if (c.connected && !d.busy && !stopping_) {
    ++unexpected_closes_;
    emit({{"type", "unexpected_close"}, {"device", d.id}});
  }
  c.connected = false;
  c.closed = true;
  c.closed_at = Clock::now();
}

void SoakRun::on_subscribe(SoakConnection& c, int mid, int count, const int* codes) {
  auto found = c.subscribing.find(mid);
  if (found == c.subscribing.end() || count != 1) return;
  const auto [filter, sent] = found->second;
  c.subscribing.erase(found);
  const bool granted = codes[0] < 0x80;
  ++checked_["subscribe"];
  const std::string& id = devices_[c.device].id;
  int bits = history_.answers(sent, Clock::now(), [&](const RegistryModel& m) {
    return model_allows(m, id, acl::kSubscribe, filter);
  });
  if (!(bits & (granted ? 2 : 1))) {
    char timing[128];
    std::snprintf(timing, sizeof timing,
                  " (sent %.1f ms after the last change committed, answered %.1f ms later)",
                  history_.ms_since_last_commit(sent),
                  duration<double, std::milli>(Clock::now() - sent).count());
    wrong("subscribe", id + " " + filter + (granted ? " granted" : " refused") + timing);
  }
  if (granted) c.granted.emplace(filter, Clock::now());
}

void SoakRun::on_publish(SoakConnection& c, int mid, int reason) {
  auto found = c.publishing.find(mid);
  if (found == c.publishing.end()) return;
  auto record = records_.find(found->second);
  if (record != records_.end()) {
    record->second.reason = reason;
    record->second.acked = Clock::now();
    // Deliveries leave the broker before the PUBACK; two seconds more for them to arrive.
    due_.emplace_back(record->second.acked + std::chrono::seconds(2), found->second);
  }
  c.publishing.erase(found);
}

void SoakRun::on_message(SoakConnection& c, const mosquitto_message* message) {
  if (message->payloadlen != static_cast<int>(kSoakPayload)) return;
  std::uint64_t sender = 0, seq = 0;
  std::memcpy(&sender, message->payload, 8);
  std::memcpy(&seq, static_cast<const char*>(message->payload) + 8, 8);
  ++delivered_;
  auto record = records_.find(sender << 32 | seq);
  if (record == records_.end()) {
    ++late_deliveries_;
    return;
  }
  record->second.received.push_back(c.device);
}

// Judges one message: its publish decision, and the read decision of every device that could
// have received it.
void SoakRun::resolve(std::uint64_t key) {
  auto found = records_.find(key);
  if (found == records_.end()) return;
  const SoakRecord r = std::move(found->second);
  records_.erase(found);
  const std::string& sender = devices_[r.sender].id;
  const bool accepted = r.reason >= 0 && r.reason < 0x80;
  if (r.reason != 0 && r.reason != 16 && r.reason != 0x87) {
    wrong("publish", sender + " " + r.topic + " PUBACK reason " + std::to_string(r.reason));
  }
  ++checked_["publish"];
  int bits = history_.answers(r.sent, r.acked, [&](const RegistryModel& m) {
    return model_allows(m, sender, acl::kPublish, r.topic);
  });
  if (!(bits & (accepted ? 2 : 1))) {
    wrong("publish", sender + " " + r.topic + (accepted ? " accepted" : " refused"));
  }
  // Who could receive it: the owner of a devices/ID/ topic, the cell of a fleet topic.
  std::vector<std::size_t> candidates;
  if (r.topic.starts_with("devices/")) {
    auto id = r.topic.substr(8, r.topic.find('/', 8) - 8);
    candidates.push_back(index_of_.at(id));
  } else {
    candidates = cells_[devices_[r.sender].cell];
  }
  for (std::size_t receiver : candidates) {
    const auto& device = devices_[receiver];
    const bool received =
        std::find(r.received.begin(), r.received.end(), receiver) != r.received.end();
    const std::string filter = r.topic.starts_with("devices/")
                                   ? "devices/" + device.id + "/#"
                                   : cell_filter(r.topic[6], device.cell);
    if (!received) {
      // Judged only where a delivery was due: a subscription granted before the publish, on a
      // connection open from before it until now.
      const auto* c = device.conn.get();
      if (!accepted || c == nullptr || !c->connected || c->started > r.sent) continue;
      auto g = c->granted.find(filter);
      if (g == c->granted.end() || g->second > r.sent) continue;
    }
    ++checked_["read"];
    int read = history_.answers(r.sent, r.acked, [&](const RegistryModel& m) {
      return model_allows(m, device.id, acl::kRead, r.topic);
    });
    if (received && !accepted) {
      wrong("read", device.id + " received " + r.topic + " that was refused to " + sender);
    } else if (!(read & (received ? 2 : 1))) {
      wrong("read", device.id + (received ? " received " : " did not receive ") + r.topic +
                        " from " + sender);
    }
  }
}

std::size_t SoakRun::pick_device() {
  // A stride through the fleet, so that successive steps touch different cells.
  for (std::size_t tries = 0; tries < devices_.size(); ++tries) {
    pick_ = (pick_ + 7919) % devices_.size();
    auto& d = devices_[pick_];
    if (!d.revoked && !d.busy && d.conn && d.conn->connected) return pick_;
  }
  return devices_.size();
}

void SoakRun::cross_check(const std::string& device, const std::string& access,
                          const std::string& topic) {
  commands_.push_back({{"acl", "check", device, access, topic, "--json"},
                       nullptr,
                       [this, device, access, topic](Clock::time_point, const std::string& out) {
                         auto answer = nlohmann::json::parse(out, nullptr, false);
                         const bool allowed =
                             !answer.is_discarded() && answer.value("decision", "") == "allow";
                         const auto mask = *acl::parse_access(access);
                         const bool model = model_allows(history_.current(), device,
                                                         static_cast<acl::Access>(mask), topic);
                         if (allowed != model) {
                           ++model_mismatches_;
                           emit({{"type", "mismatch"},
                                 {"device", device},
                                 {"access", access},
                                 {"topic", topic},
                                 {"registry", allowed},
                                 {"model", model}});
                         }
                       }});
}

// One change, in turn: the group rule, a device deny rule, disable (enable follows), a move to
// the other group, a revocation, a registration.
void SoakRun::churn_step() {
  const std::size_t kind = step_++ % 6;
  const std::size_t target = pick_device();
  if (kind != 0 && kind != 5 && target == devices_.size()) return;
  const std::string id = target < devices_.size() ? devices_[target].id : "";
  const auto watch_close = [this, target](Clock::time_point exited, const std::string&) {
    auto* c = devices_[target].conn.get();
    at(exited + window_, [this, target, exited, c] {
      auto* now_c = devices_[target].conn.get();
      if (now_c != c || c == nullptr) return;
      if (!c->closed) {
        ++late_disconnects_;
        emit({{"type", "late_disconnect"}, {"device", devices_[target].id}});
      } else {
        disconnect_ms_.push_back(duration<double, std::milli>(c->closed_at - exited).count());
      }
    });
    // The reconnect must be refused (judged by the connect oracle).
    at(exited + window_ + milliseconds(500), [this, target] { connect(target); });
  };
  switch (kind) {
    case 0: {  // the group rule fleet/a/#: removed, then granted again
      const bool present = soak_a_rule_ > 0;
      if (present) {
        const auto rule = soak_a_rule_;
        commands_.push_back({{"acl", "remove", std::to_string(rule)},
                             [rule](RegistryModel& m, const std::string&) {
                               std::erase_if(m.group_rules["soak-a"],
                                             [&](const acl::Rule& r) { return r.id == rule; });
                             },
                             nullptr});
        soak_a_rule_ = 0;
      } else {
        commands_.push_back(
            {{"acl", "grant", "--group", "soak-a", "--access", "readwrite", "--topic", "fleet/a/#"},
             [this](RegistryModel& m, const std::string& out) {
               acl::Rule rule;
               rule.id = std::stoll(out.substr(5));  // "rule N: ..."
               rule.pattern = acl::Pattern("fleet/a/#");
               rule.access = acl::kReadWrite;
               rule.effect = acl::Effect::allow;
               m.group_rules["soak-a"].push_back(rule);
               soak_a_rule_ = rule.id;
             },
             nullptr});
      }
      if (target < devices_.size()) cross_check(id, "publish", cell_topic('a', target));
      return;
    }
    case 1: {  // a device-level deny at the group allow's priority: deny wins the tie
      auto& rules = history_.current().device_rules;
      auto has = rules.find(id);
      if (has != rules.end() && !has->second.empty()) {
        const auto rule = has->second.front().id;
        commands_.push_back({{"acl", "remove", std::to_string(rule)},
                             [id, rule](RegistryModel& m, const std::string&) {
                               std::erase_if(m.device_rules[id],
                                             [&](const acl::Rule& r) { return r.id == rule; });
                             },
                             nullptr});
      } else {
        commands_.push_back(
            {{"acl", "deny", "--device", id, "--access", "publish", "--topic", "fleet/+/+/%d"},
             [id](RegistryModel& m, const std::string& out) {
               acl::Rule rule;
               rule.id = std::stoll(out.substr(5));
               rule.pattern = acl::Pattern("fleet/+/+/%d");
               rule.access = acl::kPublish;
               rule.effect = acl::Effect::deny;
               m.device_rules[id].push_back(rule);
             },
             nullptr});
      }
      break;
    }
    case 2: {  // disable; enable three seconds later, and the device connects again
      devices_[target].busy = true;
      commands_.push_back(
          {{"device", "disable", id},
           [id](RegistryModel& m, const std::string&) {
             m.devices[id].status = DeviceStatus::disabled;
           },
           [this, id, target, watch_close](Clock::time_point exited, const std::string& out) {
             watch_close(exited, out);
             at(exited + std::chrono::seconds(3), [this, id, target] {
               commands_.push_back({{"device", "enable", id},
                                    [id](RegistryModel& m, const std::string&) {
                                      m.devices[id].status = DeviceStatus::active;
                                    },
                                    [this, target](Clock::time_point done, const std::string&) {
                                      at(done + window_ + milliseconds(500), [this, target] {
                                        connect(target);
                                        devices_[target].busy = false;
                                      });
                                    }});
             });
           }});
      cross_check(id, "publish", "devices/" + id + "/load");
      return;
    }
    case 3: {  // to the other group
      const std::string to =
          history_.current().devices.at(id).type == "soak-a" ? "soak-b" : "soak-a";
      commands_.push_back(
          {{"device", "update", id, "--type", to},
           [id, to](RegistryModel& m, const std::string&) { m.devices[id].type = to; },
           nullptr});
      cross_check(id, "publish", cell_topic(to.back(), target));
      return;
    }
    case 4: {  // revoke
      devices_[target].busy = true;
      devices_[target].revoked = true;
      commands_.push_back({{"device", "revoke", id},
                           [id](RegistryModel& m, const std::string&) {
                             m.devices[id].status = DeviceStatus::revoked;
                           },
                           watch_close});
      break;
    }
    case 5: {  // register a new device of soak-a, then connect it
      SoakDevice d;
      d.id = "soak-new-" + std::to_string(registered_++);
      d.cell = devices_.size() / o_.cell;
      d.busy = true;
      const std::size_t index = devices_.size();
      index_of_[d.id] = index;
      if (cells_.size() <= d.cell) cells_.resize(d.cell + 1);
      cells_[d.cell].push_back(index);
      devices_.push_back(std::move(d));
      const std::string nid = devices_[index].id;
      commands_.push_back({{"device", "register", nid, "--type", "soak-a", "--key-alg", "p256",
                            "--key-out", o_.device.certs + "/" + nid + ".key", "--cert-out",
                            o_.device.certs + "/" + nid + ".crt"},
                           [nid](RegistryModel& m, const std::string&) {
                             m.devices[nid] = DeviceModel{"soak-a", DeviceStatus::active};
                           },
                           [this, index](Clock::time_point exited, const std::string&) {
                             at(exited + window_ + milliseconds(500), [this, index] {
                               connect(index);
                               devices_[index].busy = false;
                             });
                           }});
      cross_check(nid, "subscribe", cell_filter('a', devices_[index].cell));
      return;
    }
  }
  cross_check(id, "publish", cell_topic('a', target));
}

void SoakRun::start_command() {
  if (child_ || commands_.empty()) return;
  running_ = std::move(commands_.front());
  commands_.pop_front();
  std::vector<std::string> argv{o_.onboardctl, "--data-dir", o_.data_dir};
  argv.insert(argv.end(), running_.args.begin(), running_.args.end());
  command_started_ = Clock::now();
  child_ = std::make_unique<Child>(argv, scratch_);
}

void SoakRun::finish_command(int rc) {
  const auto exited = Clock::now();
  child_.reset();
  std::ifstream in(scratch_);
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (rc != 0) {
    ++failed_commands_;
    emit({{"type", "failed_command"}, {"command", running_.args}, {"status", rc}});
    return;
  }
  if (running_.apply) {
    RegistryModel next = history_.current();
    running_.apply(next, out);
    history_.commit(std::move(next), command_started_, exited);
    ++changes_;
  }
  if (running_.after) running_.after(exited, out);
}

int SoakRun::run() {
  scratch_ = o_.data_dir + "/../soak-command.out";
  const auto start = Clock::now();
  // --seconds of traffic and churn with the whole fleet up, counted from when it is: 10,000 TLS
  // handshakes take minutes on a small machine. Connecting gets --connect-seconds at most.
  const auto seconds_of = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(duration<double>(s));
  };
  auto end = start + seconds_of(o_.connect_seconds + o_.seconds);
  for (std::size_t i = devices_.size(); i-- > 0;) pending_connects_.push_back(i);
  Pump pump;
  auto next_churn = start + std::chrono::seconds(5);  // after the fleet has connected
  auto next_memory = start;
  const auto churn_every =
      std::chrono::duration_cast<Clock::duration>(duration<double>(o_.churn_interval));
  const auto memory_every =
      std::chrono::duration_cast<Clock::duration>(duration<double>(o_.memory_interval));
  std::vector<SoakConnection*> live;
  std::uint64_t published_at_churn = 0;
  Clock::time_point traffic_from{};
  bool fleet_up = false;
  while (Clock::now() < end) {
    auto now = Clock::now();
    // Connect the fleet, 32 handshakes at a time.
    std::size_t handshakes = 0;
    for (auto& d : devices_) {
      if (d.conn && !d.conn->judged_connect && !d.conn->closed) ++handshakes;
    }
    while (!pending_connects_.empty() && handshakes < 32) {
      connect(pending_connects_.back());
      pending_connects_.pop_back();
      ++handshakes;
    }
    if (!fleet_up && pending_connects_.empty() && handshakes == 0) {
      fleet_up = true;
      traffic_from = now;
      published_at_churn = published_;
      std::size_t connected = 0;
      for (auto& d : devices_) connected += d.conn && d.conn->connected ? 1 : 0;
      emit({{"type", "fleet"},
            {"devices", devices_.size()},
            {"connected", connected},
            {"seconds", rounded(seconds_between(start, now), 2)}});
      next_churn = std::max(next_churn, now + std::chrono::seconds(1));
      end = now + seconds_of(o_.seconds);
    }
    // Traffic: each connection in turn publishes to its own subtree, its cell's fleet/a and
    // fleet/b topics, and its neighbour's subtree (never allowed).
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        duration<double>(static_cast<double>(devices_.size()) / o_.rate));
    live.clear();
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      auto& d = devices_[i];
      if (!d.conn) continue;
      auto& c = *d.conn;
      if (c.closed) continue;
      live.push_back(&c);
      if (!c.connected) continue;
      if (c.next_send <= now) {
        std::string topic;
        switch (c.turn++ % 4) {
          case 0:
            topic = "devices/" + d.id + "/load";
            break;
          case 1:
            topic = cell_topic('a', i);
            break;
          case 2:
            topic = cell_topic('b', i);
            break;
          default: {
            const auto& cell = cells_[d.cell];
            const auto at_cell =
                static_cast<std::size_t>(std::find(cell.begin(), cell.end(), i) - cell.begin());
            const auto other = cell[(at_cell + 1) % cell.size()];
            topic = "devices/" + devices_[other].id + "/load";
          }
        }
        const std::uint64_t seq = ++d.seq;
        unsigned char payload[kSoakPayload];
        const std::uint64_t sender = i;
        const std::int64_t sent_ns = now.time_since_epoch().count();
        std::memcpy(payload, &sender, 8);
        std::memcpy(payload + 8, &seq, 8);
        std::memcpy(payload + 16, &sent_ns, 8);
        int mid = 0;
        if (mosquitto_publish_v5(c.mosq.get(), &mid, topic.c_str(), kSoakPayload, payload, 1, false,
                                 nullptr) == MOSQ_ERR_SUCCESS) {
          records_[sender << 32 | seq] = SoakRecord{i, topic, now, {}, -1, {}};
          c.publishing[mid] = sender << 32 | seq;
          ++published_;
        }
        c.next_send += interval;
        if (c.next_send < now) c.next_send = now + interval;
      }
      // Filters refused earlier are asked for again, so that a right granted later is used.
      if (c.next_resubscribe <= now) {
        c.next_resubscribe = now + std::chrono::seconds(5);
        for (const auto& filter :
             {"devices/" + d.id + "/#", cell_filter('a', d.cell), cell_filter('b', d.cell)}) {
          if (c.granted.contains(filter)) continue;
          int mid = 0;
          if (mosquitto_subscribe_v5(c.mosq.get(), &mid, filter.c_str(), 1, 0, nullptr) ==
              MOSQ_ERR_SUCCESS) {
            c.subscribing[mid] = {filter, now};
          }
        }
      }
    }
    const bool child_done = pump.turn(live, milliseconds(2), child_ ? child_->fd() : -1);
    if (child_done) finish_command(child_->reap());
    now = Clock::now();
    if (fleet_up && now >= next_churn) {
      next_churn += churn_every;
      if (commands_.size() < 4) churn_step();
    }
    start_command();
    while (!tasks_.empty() && tasks_.begin()->first <= now) {
      auto task = std::move(tasks_.begin()->second);
      tasks_.erase(tasks_.begin());
      task();
    }
    while (!due_.empty() && due_.front().first <= now) {
      resolve(due_.front().second);
      due_.pop_front();
    }
    if (now >= next_memory && o_.broker_pid > 0) {
      next_memory += memory_every;
      std::ifstream status("/proc/" + std::to_string(o_.broker_pid) + "/status");
      long rss_kb = 0;
      for (std::string line; std::getline(status, line);) {
        if (line.starts_with("VmRSS:")) rss_kb = std::stol(line.substr(6));
      }
      emit({{"type", "memory"},
            {"t", rounded(seconds_between(start, now), 1)},
            {"rss_kb", rss_kb},
            {"cpu_s", rounded(process_cpu_us(o_.broker_pid) / 1e6, 2)}});
    }
  }
  // The last messages: judged once they are due.
  const auto drain = Clock::now() + std::chrono::seconds(3);
  while (Clock::now() < drain) {
    live.clear();
    for (auto& d : devices_) {
      if (d.conn && !d.conn->closed) live.push_back(d.conn.get());
    }
    pump.turn(live, milliseconds(5));
    while (!due_.empty() && due_.front().first <= Clock::now()) {
      resolve(due_.front().second);
      due_.pop_front();
    }
  }
  unresolved_ += records_.size();
  const double traffic_seconds = fleet_up ? seconds_between(traffic_from, Clock::now()) : 0;
  std::uint64_t checked = 0;
  nlohmann::ordered_json checked_json, wrong_json;
  for (const auto& [kind, n] : checked_) {
    checked += n;
    checked_json[kind] = n;
    wrong_json[kind] = wrong_.contains(kind) ? wrong_.at(kind) : 0;
  }
  std::size_t connected = 0;
  for (auto& d : devices_) connected += d.conn && d.conn->connected ? 1 : 0;
  emit({{"type", "summary"},
        {"devices", devices_.size()},
        {"connected_at_end", connected},
        {"seconds", rounded(o_.seconds, 1)},
        {"changes", changes_},
        {"failed_commands", failed_commands_},
        {"model_mismatches", model_mismatches_},
        {"decisions", checked},
        {"checked", checked_json},
        {"wrong", wrong_total_},
        {"wrong_by_kind", wrong_json},
        {"published", published_},
        {"delivered", delivered_},
        {"msgs_per_s",
         rounded(traffic_seconds > 0
                     ? static_cast<double>(published_ - published_at_churn) / traffic_seconds
                     : 0.0,
                 1)},
        {"deliveries_per_s",
         rounded(traffic_seconds > 0 ? static_cast<double>(delivered_) / traffic_seconds : 0.0, 1)},
        {"unresolved", unresolved_},
        {"late_deliveries", late_deliveries_},
        {"unexpected_closes", unexpected_closes_},
        {"disconnects", disconnect_ms_.size()},
        {"late_disconnects", late_disconnects_},
        {"disconnect_p50_ms", rounded(percentile(disconnect_ms_, 0.5), 1)},
        {"disconnect_p99_ms", rounded(percentile(disconnect_ms_, 0.99), 1)},
        {"disconnect_max_ms",
         rounded(disconnect_ms_.empty()
                     ? 0.0
                     : *std::max_element(disconnect_ms_.begin(), disconnect_ms_.end()),
                 1)}});
  stopping_ = true;
  for (auto& d : devices_) {
    if (d.conn && !d.conn->closed) mosquitto_disconnect(d.conn->mosq.get());
  }
  live.clear();
  for (auto& d : devices_) {
    if (d.conn) live.push_back(d.conn.get());
  }
  pump.turn(live, milliseconds(50));
  return wrong_total_ == 0 && late_disconnects_ == 0 && model_mismatches_ == 0 &&
                 failed_commands_ == 0
             ? 0
             : 3;
}

// The options every mode that talks to one broker takes.
// ---- provision: devices enrolling themselves ----------------------------------------------------

struct ProvisionOptions {
  DeviceOptions device;
  std::string prefix = "enroll-";
  std::size_t count = 0;
  double timeout = 120;
  double renew_share = 0;               // of the enrolled devices, the share that then renews
  long broker_pid = 0, server_pid = 0;  // whose CPU time each phase reports, when given
};

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;

// A CSR whose CN is `id`, signed by `key`: its PEM and its DER (what a renewal's proof signs).
struct Csr {
  std::string pem, der;
};
Csr make_csr(const std::string& id, EVP_PKEY* key) {
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), &X509_REQ_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!req || !bio ||
      X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(id.c_str()), -1, -1,
                                 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key) != 1 ||
      X509_REQ_sign(req.get(), key, EVP_sha256()) <= 0 ||
      PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    throw std::runtime_error("cannot make a CSR for " + id);
  }
  Csr csr;
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  csr.pem.assign(data, static_cast<std::size_t>(size));
  unsigned char* der = nullptr;
  const int length = i2d_X509_REQ(req.get(), &der);
  if (length <= 0) throw std::runtime_error("cannot encode the CSR of " + id);
  csr.der.assign(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  return csr;
}

KeyPtr new_p256_key() {
  KeyPtr key(EVP_EC_gen("P-256"), &EVP_PKEY_free);
  if (!key) throw std::runtime_error("cannot make a P-256 key");
  return key;
}

// The renewal proof: ECDSA with SHA-256 by the old key over the new CSR's DER, standard base64.
std::string renewal_proof(EVP_PKEY* old_key, const std::string& csr_der) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::size_t size = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(csr_der.data());
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, old_key) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &size, data, csr_der.size()) != 1)
    throw std::runtime_error("cannot sign a renewal proof");
  std::vector<unsigned char> signature(size);
  if (EVP_DigestSign(md.get(), signature.data(), &size, data, csr_der.size()) != 1)
    throw std::runtime_error("cannot sign a renewal proof");
  std::string text(4 * ((size + 2) / 3) + 1, '\0');
  const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(text.data()),
                                     signature.data(), static_cast<int>(size));
  text.resize(static_cast<std::size_t>(length));
  return text;
}

X509Ptr certificate_from_pem(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr, &X509_free);
  return cert;
}

// One device's request in a phase (enrolment or renewal): it connects as `tls_id`'s certificate
// under client id `id`, publishes `payload` to `topic` once connected and waits for the answer.
struct ProvisionRequest {
  std::string id, tls_id, topic, payload;
  std::unique_ptr<Connection> c;
  Clock::time_point started{}, asked{};
  bool sent = false, accepted = false;
  std::string certificate;  // the answer's, when accepted
};

struct PhaseResult {
  std::size_t accepted = 0, rejected = 0, refused = 0, timed_out = 0;
  double seconds = 0;  // first connect to last answer
  std::vector<double> to_certificate_ms, to_answer_ms, to_connected_ms;
  std::map<std::string, std::size_t> codes;  // rejections by code
  // CPU seconds during the phase: this process, and the broker and the server when known.
  double cpu_self_s = 0, cpu_broker_s = 0, cpu_server_s = 0;
};

double own_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}
double pid_cpu_s(long pid) { return pid > 0 ? process_cpu_us(pid) / 1e6 : 0.0; }

// Starts every request's connect at once and drives them all until each has its answer, was
// refused, or `timeout` passed. The connects do not wait for TCP: a device whose SYN the broker's
// full accept queue dropped waits for its retransmission alone, as a real device does, instead of
// holding up every device after it in this one thread.
PhaseResult run_phase(const Endpoint& endpoint, std::vector<ProvisionRequest>& requests,
                      const ProvisionOptions& options) {
  constexpr std::size_t kStartsPerTurn = 50;
  PhaseResult result;
  Pump pump;
  pump.handshake_on_writable(true);
  const double cpu0 = own_cpu_s(), broker0 = pid_cpu_s(options.broker_pid),
               server0 = pid_cpu_s(options.server_pid);
  const auto t0 = Clock::now();
  std::vector<ProvisionRequest*> waiting;
  const auto deadline = after(options.timeout);
  Clock::time_point last_answer = t0;
  std::vector<Connection*> live;
  std::size_t next = 0;
  while ((next < requests.size() || !waiting.empty()) && Clock::now() < deadline) {
    // Every connect is started without a pause; between every few dozen starts the devices
    // started so far go on with their handshakes, as devices of their own would meanwhile.
    for (std::size_t k = 0; k < kStartsPerTurn && next < requests.size(); ++k, ++next) {
      auto& r = requests[next];
      r.started = Clock::now();
      r.c = start_connect(endpoint, r.id, r.tls_id, /*wait_for_tcp=*/false);
      waiting.push_back(&r);
    }
    live.clear();
    for (auto* r : waiting) live.push_back(r->c.get());
    pump.turn(live, next < requests.size() ? milliseconds(0) : milliseconds(5));
    std::erase_if(waiting, [&](ProvisionRequest* r) {
      Connection& c = *r->c;
      if (c.state == State::connected && !r->sent) {
        r->asked = Clock::now();
        r->sent = true;
        mosquitto_publish(c.mosq.get(), nullptr, r->topic.c_str(),
                          static_cast<int>(r->payload.size()), r->payload.data(), 1, false);
        return false;
      }
      if (!c.answer.empty()) {
        const auto now = Clock::now();
        last_answer = now;
        if (c.answer.ends_with("/accepted")) {
          ++result.accepted;
          r->accepted = true;
          const auto body = nlohmann::json::parse(c.answer_payload, nullptr, false);
          if (body.is_object() && body.contains("certificate") && body["certificate"].is_string())
            r->certificate = body["certificate"].get<std::string>();
          result.to_certificate_ms.push_back(seconds_between(r->started, now) * 1e3);
          result.to_answer_ms.push_back(seconds_between(r->asked, now) * 1e3);
          result.to_connected_ms.push_back(seconds_between(r->started, r->asked) * 1e3);
        } else {
          ++result.rejected;
          const auto body = nlohmann::json::parse(c.answer_payload, nullptr, false);
          ++result.codes[body.is_object() && body.contains("code") && body["code"].is_string()
                             ? body["code"].get<std::string>()
                             : std::string("unreadable")];
        }
        mosquitto_disconnect(c.mosq.get());
        return true;
      }
      if (c.state == State::refused || c.state == State::closed) {
        ++result.refused;
        return true;
      }
      return false;
    });
  }
  result.timed_out = waiting.size() + (requests.size() - next);
  result.seconds = seconds_between(t0, last_answer);
  result.cpu_self_s = own_cpu_s() - cpu0;
  result.cpu_broker_s = pid_cpu_s(options.broker_pid) - broker0;
  result.cpu_server_s = pid_cpu_s(options.server_pid) - server0;
  // Let the DISCONNECTs go out.
  live.clear();
  for (auto& r : requests) {
    if (r.c) live.push_back(r.c.get());
  }
  for (int i = 0; i < 20; ++i) pump.turn(live, milliseconds(5));
  return result;
}

// The connect times in 100 ms buckets up to the slowest: SYNs dropped by a full accept queue show
// as clusters at the retransmission times (1 s, 3 s, 7 s after the first SYN).
nlohmann::ordered_json connect_histogram(const std::vector<double>& connect_ms) {
  std::vector<std::size_t> buckets;
  for (double ms : connect_ms) {
    const auto i = static_cast<std::size_t>(ms / 100);
    if (buckets.size() <= i) buckets.resize(i + 1);
    ++buckets[i];
  }
  return buckets;
}

nlohmann::ordered_json phase_fields(const PhaseResult& r, const char* per_second_name) {
  nlohmann::ordered_json out{
      {"accepted", r.accepted},
      {"rejected", r.rejected},
      {"refused", r.refused},
      {"timed_out", r.timed_out},
      {"seconds", rounded(r.seconds, 3)},
      {per_second_name,
       rounded(r.seconds > 0 ? static_cast<double>(r.accepted) / r.seconds : 0.0, 1)},
      {"request_to_answer_ms_p50", rounded(percentile(r.to_answer_ms, 0.5), 1)},
      {"request_to_answer_ms_p99", rounded(percentile(r.to_answer_ms, 0.99), 1)},
      // Connect start to CONNACK (the TLS handshake and the plugin's connect check): the part of
      // the whole before the request is sent.
      {"connect_ms_p50", rounded(percentile(r.to_connected_ms, 0.5), 1)},
      {"connect_ms_p99", rounded(percentile(r.to_connected_ms, 0.99), 1)},
      {"cpu_loadgen_s", rounded(r.cpu_self_s, 3)},
      {"cpu_broker_s", rounded(r.cpu_broker_s, 3)},
      {"cpu_server_s", rounded(r.cpu_server_s, 3)},
      {"connect_histogram_100ms", connect_histogram(r.to_connected_ms)}};
  if (!r.codes.empty()) out["rejected_codes"] = r.codes;
  return out;
}

int run_provision(const Endpoint& endpoint, const ProvisionOptions& options) {
  // What a device does on first boot, outside the clock: a P-256 key and a CSR whose CN is its id.
  std::vector<ProvisionRequest> enrolments(options.count);
  std::vector<KeyPtr> keys;
  for (std::size_t i = 0; i < options.count; ++i) {
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, "%06zu", i);
    auto& r = enrolments[i];
    r.id = options.prefix + suffix;
    r.tls_id = "claim";
    r.topic = "$provision/" + r.id + "/csr";
    keys.push_back(new_p256_key());
    r.payload = nlohmann::json{{"csr", make_csr(r.id, keys.back().get()).pem}}.dump();
  }
  const PhaseResult enrolled = run_phase(endpoint, enrolments, options);
  auto summary = phase_fields(enrolled, "enrolments_per_s");
  summary["claim_to_certificate_ms_p50"] = rounded(percentile(enrolled.to_certificate_ms, 0.5), 1);
  summary["claim_to_certificate_ms_p99"] = rounded(percentile(enrolled.to_certificate_ms, 0.99), 1);
  nlohmann::ordered_json line{{"type", "summary"}, {"devices", options.count}};
  line.update(summary);
  emit(line);
  bool ok = enrolled.accepted == options.count;
  if (options.renew_share <= 0) return ok ? 0 : 3;

  // Renewal: the first renew_share of the devices that were answered with a certificate reconnect
  // with it, all at once, and each asks for a new one for a new key, proving it holds the old one.
  // Keys, CSRs and proofs are made outside the clock, as the CSRs of the enrolment.
  const auto wanted =
      static_cast<std::size_t>(std::ceil(options.renew_share * static_cast<double>(options.count)));
  std::vector<ProvisionRequest> renewals;
  std::vector<KeyPtr> new_keys;
  std::vector<std::string> old_certificates;
  for (std::size_t i = 0; i < enrolments.size() && renewals.size() < wanted; ++i) {
    const auto& e = enrolments[i];
    if (!e.accepted) continue;
    auto cert = certificate_from_pem(e.certificate);
    if (!cert) throw std::runtime_error("the certificate answered to " + e.id + " is unreadable");
    endpoint.tls->add(e.id, cert.get(), keys[i].get());
    ProvisionRequest r;
    r.id = e.id;
    r.tls_id = e.id;
    r.topic = "$provision/" + r.id + "/renew";
    new_keys.push_back(new_p256_key());
    const Csr csr = make_csr(r.id, new_keys.back().get());
    r.payload =
        nlohmann::json{{"csr", csr.pem}, {"proof", renewal_proof(keys[i].get(), csr.der)}}.dump();
    old_certificates.push_back(e.certificate);
    renewals.push_back(std::move(r));
  }
  const PhaseResult renewed = run_phase(endpoint, renewals, options);
  // Each device must have been answered with one new certificate: for its new key, not the old.
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < renewals.size(); ++i) {
    if (!renewals[i].accepted) continue;
    auto cert = certificate_from_pem(renewals[i].certificate);
    if (!cert || renewals[i].certificate == old_certificates[i] ||
        EVP_PKEY_eq(X509_get0_pubkey(cert.get()), new_keys[i].get()) != 1)
      ++wrong;
  }
  nlohmann::ordered_json renewal{{"type", "renewal"}, {"devices", renewals.size()}};
  renewal.update(phase_fields(renewed, "renewals_per_s"));
  renewal["wrong_certificate"] = wrong;
  emit(renewal);
  ok = ok && renewals.size() == wanted && renewed.accepted == renewals.size() && wrong == 0;
  return ok ? 0 : 3;
}

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

  SoakOptions soak;
  auto* soak_mode = app.add_subcommand(
      "soak",
      "devices carry traffic while onboardctl changes rules, groups and device states every "
      "--churn-interval seconds; every observed decision is checked against the registry's "
      "answer at that moment (see loadgen.cpp)");
  soak_mode->add_option("--ids", soak.ids, "\"ID TYPE\" per line: the registered devices")
      ->required()
      ->check(CLI::ExistingFile);
  soak_mode
      ->add_option("--seconds", soak.seconds,
                   "how long the run lasts once every device has connected (or failed to)")
      ->required()
      ->check(positive);
  soak_mode->add_option("--rate", soak.rate, "QoS 1 messages per second in all")
      ->required()
      ->check(positive);
  soak_mode
      ->add_option("--connect-seconds", soak.connect_seconds,
                   "the most the fleet may take to connect; the run ends then if it is not up")
      ->capture_default_str()
      ->check(positive);
  soak_mode->add_option("--churn-interval", soak.churn_interval, "seconds between changes")
      ->capture_default_str()
      ->check(positive);
  soak_mode
      ->add_option("--window-ms", soak.window_ms,
                   "propagation window: a change may be seen this long after its command exits, "
                   "and a revoked or disabled device must be disconnected by then")
      ->capture_default_str()
      ->check(count);
  soak_mode->add_option("--cell", soak.cell, "devices per fleet/G/CELL topic group")
      ->capture_default_str()
      ->check(count);
  soak_mode->add_option("--broker-pid", soak.broker_pid, "the broker whose memory is sampled")
      ->check(count);
  soak_mode->add_option("--memory-interval", soak.memory_interval, "seconds between samples")
      ->capture_default_str()
      ->check(positive);
  soak_mode->add_option("--onboardctl", soak.onboardctl, "the onboardctl binary")
      ->required()
      ->check(CLI::ExistingFile);
  soak_mode->add_option("--data-dir", soak.data_dir, "the data directory the broker's plugin reads")
      ->required()
      ->check(CLI::ExistingDirectory);
  add_device_options(*soak_mode, soak.device);

  ProvisionOptions provision;
  auto* provision_mode = app.add_subcommand(
      "provision",
      "enrolment over MQTT: --count devices at once with the claim certificate in --certs "
      "(claim.crt, claim.key), each asking for its own certificate");
  provision_mode->add_option("--count", provision.count, "devices enrolling at once")
      ->required()
      ->check(count);
  provision_mode->add_option("--prefix", provision.prefix, "their ids: PREFIX000000, ...")
      ->capture_default_str();
  provision_mode->add_option("--timeout", provision.timeout, "seconds to wait for every answer")
      ->capture_default_str()
      ->check(positive);
  provision_mode
      ->add_option("--renew-share", provision.renew_share,
                   "after the enrolment, this share of the devices (0 to 1) reconnect with their "
                   "new certificates and renew at once")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  provision_mode->add_option("--broker-pid", provision.broker_pid,
                             "the broker's PID: its CPU time per phase is reported");
  provision_mode->add_option("--server-pid", provision.server_pid,
                             "the signer's PID: its CPU time per phase is reported");
  add_device_options(*provision_mode, provision.device);

  CLI11_PARSE(app, argc, argv);
  try {
    LibMosquitto library;
    if (*throughput_mode) return run_throughput(throughput);
    if (*storm_mode) return run_storm(storm);
    const DeviceOptions& device =
        *check_mode
            ? check.device
            : (*soak_mode ? soak.device : (*provision_mode ? provision.device : revocation.device));
    TlsContexts tls(device.cafile, device.certs);
    std::vector<Endpoint> endpoints;
    for (int port : device.ports) endpoints.push_back(Endpoint{port, &tls});
    if (*check_mode) {
      if (endpoints.size() != 1) throw std::runtime_error("check talks to one broker: one --port");
      return run_check(endpoints.front(), check);
    }
    if (*soak_mode) {
      SoakRun run(endpoints, soak);
      return run.run();
    }
    if (*provision_mode) return run_provision(endpoints.front(), provision);
    return run_revocation(endpoints, revocation);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "onboard_loadgen: %s\n", e.what());
    return 1;
  }
}
