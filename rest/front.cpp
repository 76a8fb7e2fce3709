#include "rest/front.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rest/http.h"

namespace onboard::rest {

HeadScan scan_head(std::string_view buffered, std::size_t max_head_bytes) {
  // httplib reads the request line up to its LF whatever it holds, then header lines up to one
  // that is exactly CRLF; a bare LF line is skipped, not an end. Ending the head anywhere else
  // would hand a worker a head httplib then waits on.
  const std::size_t first = buffered.find('\n');
  if (first != std::string_view::npos) {
    std::size_t start = first + 1;
    while (start <= max_head_bytes) {
      const std::size_t end = buffered.find('\n', start);
      if (end == std::string_view::npos) break;
      if (end == start + 1 && buffered[start] == '\r') {
        if (end + 1 > max_head_bytes) break;
        return {HeadScan::complete, end + 1};
      }
      start = end + 1;
    }
  }
  if (buffered.size() > max_head_bytes) return {HeadScan::too_large, 0};
  return {HeadScan::incomplete, 0};
}

namespace {

using Clock = std::chrono::steady_clock;

struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};

struct Connection {
  int fd = -1;
  std::unique_ptr<SSL, SslFree> ssl;  // null: plain HTTP
  std::string peer;                   // the peer's address, the key of the per-peer cap
  int peer_port = 0;
  std::string local;
  int local_port = 0;
  std::string in;  // received and not yet processed: a head being read, or what followed one
  enum class Phase { handshake, head, idle, working } phase = Phase::head;
  Clock::time_point deadline;  // handshake, head, idle: closed then
  std::uint32_t events = 0;    // registered with epoll; 0: not registered
  std::size_t requests = 0;    // served on this connection
  bool keep = false;           // set by the worker: serve the next request
  bool graceful = true;        // TLS: send close_notify when closing
};

enum class Io { done, want_read, want_write, failed };

// One non-blocking read; `n` 0 with done: the peer closed.
Io read_once(Connection& c, char* buffer, std::size_t size, std::size_t& n) {
  n = 0;
  if (!c.ssl) {
    for (;;) {
      const ssize_t r = ::recv(c.fd, buffer, size, 0);
      if (r >= 0) {
        n = static_cast<std::size_t>(r);
        return Io::done;
      }
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? Io::want_read : Io::failed;
    }
  }
  ERR_clear_error();
  const int r =
      SSL_read(c.ssl.get(), buffer, static_cast<int>(std::min<std::size_t>(size, INT_MAX)));
  if (r > 0) {
    n = static_cast<std::size_t>(r);
    return Io::done;
  }
  switch (SSL_get_error(c.ssl.get(), r)) {
    case SSL_ERROR_WANT_READ:
      return Io::want_read;
    case SSL_ERROR_WANT_WRITE:
      return Io::want_write;
    case SSL_ERROR_ZERO_RETURN:
      return Io::done;
    default:
      return Io::failed;
  }
}

Io write_once(Connection& c, const char* data, std::size_t size, std::size_t& n) {
  n = 0;
  if (!c.ssl) {
    for (;;) {
      const ssize_t r = ::send(c.fd, data, size, MSG_NOSIGNAL);
      if (r >= 0) {
        n = static_cast<std::size_t>(r);
        return Io::done;
      }
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? Io::want_write : Io::failed;
    }
  }
  ERR_clear_error();
  const int r =
      SSL_write(c.ssl.get(), data, static_cast<int>(std::min<std::size_t>(size, INT_MAX)));
  if (r > 0) {
    n = static_cast<std::size_t>(r);
    return Io::done;
  }
  switch (SSL_get_error(c.ssl.get(), r)) {
    case SSL_ERROR_WANT_READ:
      return Io::want_read;
    case SSL_ERROR_WANT_WRITE:
      return Io::want_write;
    default:
      return Io::failed;
  }
}

Io handshake(Connection& c) {
  ERR_clear_error();
  const int r = SSL_accept(c.ssl.get());
  if (r == 1) return Io::done;
  switch (SSL_get_error(c.ssl.get(), r)) {
    case SSL_ERROR_WANT_READ:
      return Io::want_read;
    case SSL_ERROR_WANT_WRITE:
      return Io::want_write;
    default:
      return Io::failed;
  }
}

// Waits until the socket is ready for `events` or the deadline passed (false).
bool wait_until(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, INT_MAX)));
    if (r > 0) return true;  // ready, or an error the next read or write reports
    if (r < 0 && errno != EINTR) return false;
  }
}

// A complete short reply written by the loop when it refuses a connection or a head: one
// non-blocking attempt, since the loop never waits on a client.
std::string refusal_bytes(int status, const char* reason, std::string_view code,
                          std::string_view message) {
  const Reply reply = error_reply(status, code, message);
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(reply.body.size()) + "\r\nConnection: close\r\n\r\n" + reply.body;
}

void write_best_effort(Connection& c, const std::string& bytes) {
  std::size_t n = 0;
  (void)write_once(c, bytes.data(), bytes.size(), n);
}

// The request's bytes as httplib reads them: the buffered head first, then the socket, waiting
// at most until the body deadline in total; a reply's writes share one deadline too.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(Connection& c, const FrontOptions& options)
      : c_(c),
        read_deadline_(Clock::now() + options.body_timeout),
        write_timeout_(options.write_timeout) {}
  ~ConnectionStream() override { c_.in.erase(0, pos_); }
  ConnectionStream(const ConnectionStream&) = delete;
  ConnectionStream& operator=(const ConnectionStream&) = delete;

  bool broken() const { return broken_; }

  bool is_readable() const override { return pos_ < c_.in.size(); }
  // The write itself waits (up to the reply's deadline).
  bool is_writable() const override { return !broken_; }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == c_.in.size()) {
      c_.in.clear();
      pos_ = 0;
      if (!fill()) return broken_ ? -1 : 0;
    }
    const std::size_t n = std::min(size, c_.in.size() - pos_);
    std::memcpy(ptr, c_.in.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (broken_) return -1;
    if (!write_deadline_) write_deadline_ = Clock::now() + write_timeout_;
    std::size_t done = 0;
    while (done < size) {
      std::size_t n = 0;
      const Io r = write_once(c_, ptr + done, size - done, n);
      if (r == Io::done) {
        done += n;
        continue;
      }
      if (r == Io::failed ||
          !wait_until(c_.fd, r == Io::want_read ? POLLIN : POLLOUT, *write_deadline_)) {
        broken_ = true;
        return -1;
      }
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.peer;
    port = c_.peer_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local;
    port = c_.local_port;
  }
  // httplib built without CPPHTTPLIB_USE_POLL answers 500 to a stream whose socket is at or
  // above FD_SETSIZE, since its own streams select() on it; this stream polls, so the number it
  // reports stays below that limit.
  socket_t socket() const override { return c_.fd < FD_SETSIZE ? c_.fd : 0; }

 private:
  // Reads what the socket has, waiting until the body deadline. False: the peer closed (not
  // broken) or the read failed or timed out (broken).
  bool fill() {
    char buffer[16 * 1024];
    for (;;) {
      std::size_t n = 0;
      const Io r = read_once(c_, buffer, sizeof buffer, n);
      if (r == Io::done) {
        if (n == 0) {
          broken_ = true;  // a request cut short: the connection has nothing more to give
          return false;
        }
        c_.in.append(buffer, n);
        return true;
      }
      if (r == Io::failed ||
          !wait_until(c_.fd, r == Io::want_write ? POLLOUT : POLLIN, read_deadline_)) {
        broken_ = true;
        return false;
      }
    }
  }

  Connection& c_;
  std::size_t pos_ = 0;
  Clock::time_point read_deadline_;
  std::chrono::milliseconds write_timeout_;
  std::optional<Clock::time_point> write_deadline_;
  bool broken_ = false;
};

std::string address_text(const sockaddr_storage& address, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    const auto& a6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &a6.sin6_addr, text, sizeof text);
    port = ntohs(a6.sin6_port);
  } else {
    const auto& a4 = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &a4.sin_addr, text, sizeof text);
    port = ntohs(a4.sin_port);
  }
  return text;
}

}  // namespace

struct Front::State {
  FrontOptions options;
  RequestProcessor processor;
  SSL_CTX* tls = nullptr;
  int listen_fd = -1, epoll_fd = -1, stop_fd = -1, return_fd = -1;
  int port = 0;
  bool accept_paused = false;

  std::unordered_map<int, std::unique_ptr<Connection>> connections;  // by socket
  std::unordered_map<std::string, std::size_t> per_peer;

  std::mutex work_mutex;
  std::condition_variable work_ready;
  std::deque<Connection*> work;
  bool workers_stop = false;

  std::mutex returned_mutex;
  std::vector<Connection*> returned;

  ~State() {
    for (int fd : {listen_fd, epoll_fd, stop_fd, return_fd})
      if (fd >= 0) ::close(fd);
  }

  bool watch(int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    return ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0;
  }

  void set_events(Connection& c, std::uint32_t events) {
    if (events == c.events) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = c.fd;
    const int op = c.events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    (void)::epoll_ctl(epoll_fd, op, c.fd, &ev);
    c.events = events;
  }

  void close_connection(int fd) {
    auto it = connections.find(fd);
    if (it == connections.end()) return;
    Connection& c = *it->second;
    if (c.ssl && c.graceful && c.phase != Connection::Phase::handshake) {
      ERR_clear_error();
      (void)SSL_shutdown(c.ssl.get());  // one non-blocking attempt at close_notify
    }
    set_events(c, 0);
    auto peer = per_peer.find(c.peer);
    if (peer != per_peer.end() && --peer->second == 0) per_peer.erase(peer);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    connections.erase(it);
    if (accept_paused) accept_paused = !watch(listen_fd, EPOLLIN);
  }

  // Refused before it is read: beyond the caps. Plain HTTP gets a 503 when the socket takes it at
  // once; over TLS there is no channel to say so before a handshake the loop will not spend.
  void refuse(int fd, bool per_peer_cap) {
    if (tls == nullptr) {
      static const std::string total =
          refusal_bytes(503, "Service Unavailable", "unavailable",
                        "the server has too many open connections; retry later");
      static const std::string peer =
          refusal_bytes(503, "Service Unavailable", "unavailable",
                        "too many open connections from this address; close some and retry");
      const std::string& bytes = per_peer_cap ? peer : total;
      (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(fd);
  }

  void accept_all() {
    for (;;) {
      sockaddr_storage address{};
      socklen_t length = sizeof address;
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&address), &length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors or memory: stop accepting (the listen socket stays readable, and
          // watching it would spin) until a connection closes.
          log_line("cannot accept a connection (" + std::string(std::strerror(errno)) +
                   "); accepting again once a connection closes");
          (void)::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
          accept_paused = true;
        }
        return;
      }
      auto c = std::make_unique<Connection>();
      c->fd = fd;
      c->peer = address_text(address, c->peer_port);
      const std::size_t from_peer = per_peer.contains(c->peer) ? per_peer[c->peer] : 0;
      if (connections.size() >= options.max_connections ||
          from_peer >= options.max_connections_per_peer) {
        refuse(fd, from_peer >= options.max_connections_per_peer);
        continue;
      }
      sockaddr_storage local{};
      socklen_t local_length = sizeof local;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) == 0)
        c->local = address_text(local, c->local_port);
      const int one = 1;
      // Without it every response waits for the peer's delayed ACK.
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (tls != nullptr) {
        c->ssl.reset(SSL_new(tls));
        if (!c->ssl || SSL_set_fd(c->ssl.get(), fd) != 1) {
          ::close(fd);
          continue;
        }
        SSL_set_accept_state(c->ssl.get());
        SSL_set_mode(c->ssl.get(),
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        c->phase = Connection::Phase::handshake;
      }
      c->deadline = Clock::now() + options.header_timeout;
      Connection& added = *c;
      connections.emplace(fd, std::move(c));
      ++per_peer[added.peer];
      set_events(added, EPOLLIN);
    }
  }

  void dispatch(Connection& c) {
    set_events(c, 0);
    c.phase = Connection::Phase::working;
    {
      std::lock_guard lock(work_mutex);
      work.push_back(&c);
    }
    work_ready.notify_one();
  }

  // The socket is ready: go on with the handshake, or read what came and hand a complete head
  // to a worker.
  void on_ready(int fd) {
    auto it = connections.find(fd);
    if (it == connections.end()) return;
    Connection& c = *it->second;
    if (c.phase == Connection::Phase::working) return;
    if (c.phase == Connection::Phase::handshake) {
      const Io r = handshake(c);
      if (r == Io::want_read || r == Io::want_write) {
        set_events(c, r == Io::want_read ? EPOLLIN : EPOLLOUT);
        return;
      }
      if (r == Io::failed) {
        close_connection(fd);
        return;
      }
      c.phase = Connection::Phase::head;
    }
    char buffer[16 * 1024];
    bool peer_closed = false;
    while (c.in.size() <= options.max_head_bytes) {
      std::size_t n = 0;
      const Io r = read_once(c, buffer, sizeof buffer, n);
      if (r == Io::done && n > 0) {
        if (c.phase == Connection::Phase::idle) {
          // A new request on a kept connection: its head has the same time as the first one.
          c.phase = Connection::Phase::head;
          c.deadline = Clock::now() + options.header_timeout;
        }
        c.in.append(buffer, n);
        continue;
      }
      if (r == Io::want_read || r == Io::want_write) {
        set_events(c, r == Io::want_read ? EPOLLIN : EPOLLOUT);
        break;
      }
      peer_closed = true;  // closed, or failed
      break;
    }
    const HeadScan scan = scan_head(c.in, options.max_head_bytes);
    if (scan.kind == HeadScan::complete) {
      // A request sent whole before the client shut its side down is still answered.
      dispatch(c);
      return;
    }
    if (scan.kind == HeadScan::too_large) {
      static const std::string too_large =
          refusal_bytes(431, "Request Header Fields Too Large", "headers_too_large",
                        "the request line and headers are too large");
      write_best_effort(c, too_large);
      c.graceful = false;
      close_connection(fd);
      return;
    }
    if (peer_closed) close_connection(fd);
  }

  void take_returned() {
    std::uint64_t count = 0;
    (void)!::read(return_fd, &count, sizeof count);
    std::vector<Connection*> back;
    {
      std::lock_guard lock(returned_mutex);
      back.swap(returned);
    }
    for (Connection* c : back) {
      if (!c->keep) {
        close_connection(c->fd);
        continue;
      }
      c->phase = Connection::Phase::idle;
      c->deadline = Clock::now() + options.keep_alive;
      if (!c->in.empty()) {
        c->phase = Connection::Phase::head;  // the next request came with the last one
        c->deadline = Clock::now() + options.header_timeout;
      }
      set_events(*c, EPOLLIN);
      // TLS may hold decrypted bytes that epoll cannot see: look now.
      on_ready(c->fd);
    }
  }

  // Closes every waiting connection past its deadline.
  void sweep() {
    static const std::string timed_out = refusal_bytes(408, "Request Timeout", "request_timeout",
                                                       "the request head did not arrive in time");
    const auto now = Clock::now();
    std::vector<int> expired;
    for (const auto& [fd, c] : connections)
      if (c->phase != Connection::Phase::working && c->deadline <= now) expired.push_back(fd);
    for (int fd : expired) {
      Connection& c = *connections.at(fd);
      if (c.phase == Connection::Phase::head && !c.in.empty()) {
        write_best_effort(c, timed_out);
        c.graceful = false;
      }
      if (c.phase == Connection::Phase::handshake) c.graceful = false;
      close_connection(fd);
    }
  }

  void work_loop() {
    for (;;) {
      Connection* c = nullptr;
      {
        std::unique_lock lock(work_mutex);
        work_ready.wait(lock, [this] { return !work.empty() || workers_stop; });
        if (work.empty()) return;
        c = work.front();
        work.pop_front();
      }
      serve_one(*c);
      {
        std::lock_guard lock(returned_mutex);
        returned.push_back(c);
      }
      const std::uint64_t one = 1;
      (void)!::write(return_fd, &one, sizeof one);
    }
  }

  void serve_one(Connection& c) {
    ++c.requests;
    const bool last = c.requests >= options.keep_alive_max_requests;
    bool closed = false;
    bool ok = false;
    bool broken = false;
    {
      ConnectionStream stream(c, options);
      try {
        ok = processor(stream, last, closed, c.ssl.get());
      } catch (...) {
        ok = false;  // process_request catches the handlers' exceptions; this is belt and braces
      }
      broken = stream.broken();
    }
    c.graceful = ok && !broken;
    c.keep = ok && !closed && !last && !broken;
  }
};

Front::Front(std::unique_ptr<State> state) : state_(std::move(state)) {}
Front::~Front() = default;

int Front::port() const { return state_->port; }

void Front::stop() {
  const std::uint64_t one = 1;
  (void)!::write(state_->stop_fd, &one, sizeof one);
}

Result<std::unique_ptr<Front>> Front::bind(const std::string& host, int port, SSL_CTX* tls,
                                           FrontOptions options, RequestProcessor processor) {
  // A peer that closes while a reply is written must not end the process: over TLS, OpenSSL
  // writes with write(2), which raises SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  // Every connection is a descriptor; a limit below the cap would stop accepting early.
  const rlim_t needed = static_cast<rlim_t>(options.max_connections) + 64;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < needed) {
    files.rlim_cur = std::min(needed, files.rlim_max);
    (void)::setrlimit(RLIMIT_NOFILE, &files);
    if (files.rlim_cur < needed)
      return make_error(Errc::invalid_input,
                        "--max-connections " + std::to_string(options.max_connections) + " needs " +
                            std::to_string(needed) + " open files, but the limit (ulimit -n) is " +
                            std::to_string(files.rlim_max));
  }

  auto state = std::make_unique<State>();
  state->options = options;
  state->processor = std::move(processor);
  state->tls = tls;
  state->options.workers = std::max<std::size_t>(options.workers, 1);
  state->options.keep_alive_max_requests =
      std::max<std::size_t>(options.keep_alive_max_requests, 1);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const auto cannot_listen =
      make_error(Errc::io, "cannot listen on " + host + ":" + service +
                               " (in use, not an address of this host, or not permitted)");
  if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0) return cannot_listen;
  for (addrinfo* a = found; a != nullptr && state->listen_fd < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
      state->listen_fd = fd;
    } else {
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (state->listen_fd < 0) return cannot_listen;
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof bound;
  if (::getsockname(state->listen_fd, reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0)
    return cannot_listen;
  (void)address_text(bound, state->port);

  state->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  state->stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  state->return_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (state->epoll_fd < 0 || state->stop_fd < 0 || state->return_fd < 0 ||
      !state->watch(state->listen_fd, EPOLLIN) || !state->watch(state->stop_fd, EPOLLIN) ||
      !state->watch(state->return_fd, EPOLLIN))
    return make_error(Errc::io,
                      std::string("cannot set up the connection loop: ") + std::strerror(errno));
  return std::unique_ptr<Front>(new Front(std::move(state)));
}

void Front::run() {
  State& s = *state_;
  std::vector<std::thread> workers;
  for (std::size_t i = 0; i < s.options.workers; ++i) workers.emplace_back([&s] { s.work_loop(); });
  std::vector<epoll_event> events(256);
  auto next_sweep = Clock::now();
  bool stopping = false;
  while (!stopping) {
    const int n = ::epoll_wait(s.epoll_fd, events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      if (fd == s.stop_fd) {
        stopping = true;
      } else if (fd == s.listen_fd) {
        s.accept_all();
      } else if (fd == s.return_fd) {
        s.take_returned();
      } else {
        s.on_ready(fd);
      }
    }
    // Deadlines are looked at ten times a second: a closed connection is late by at most that.
    const auto now = Clock::now();
    if (now >= next_sweep) {
      s.sweep();
      next_sweep = now + std::chrono::milliseconds(100);
    }
  }
  // Requests whose heads were complete are answered; then every connection ends.
  (void)::epoll_ctl(s.epoll_fd, EPOLL_CTL_DEL, s.listen_fd, nullptr);
  {
    std::lock_guard lock(s.work_mutex);
    s.workers_stop = true;
  }
  s.work_ready.notify_all();
  for (auto& worker : workers) worker.join();
  std::vector<int> open;
  for (const auto& [fd, c] : s.connections) open.push_back(fd);
  for (int fd : open) s.close_connection(fd);
}

}  // namespace onboard::rest
