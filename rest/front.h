// The connection front of `onboardctl serve`: one event-loop thread owns every socket while it
// waits (TLS handshake, a request head arriving, an idle keep-alive connection) and hands a
// connection to the worker pool only once a whole request head is buffered. Workers then run
// httplib's request processing on it (routing, the body read after authentication, the reply)
// and give the connection back. A slow or idle client therefore holds a connection slot, never a
// worker; connection slots are bounded in total and per peer address, and a head must arrive
// whole within a fixed time that drip-feeding cannot extend.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace httplib {
class Stream;
}

namespace onboard::rest {

struct FrontOptions {
  std::size_t workers = 8;
  std::size_t max_connections = 512;          // open at once, all peers
  std::size_t max_connections_per_peer = 16;  // open at once from one address
  // From accept (TLS handshake included), or from the first byte of a later request on a kept
  // connection, to the end of the request head: a total, not a time per read.
  std::chrono::milliseconds header_timeout{10'000};
  // From the moment a worker takes the request to the end of its body: a total.
  std::chrono::milliseconds body_timeout{30'000};
  // From the first byte of a reply to its last: a total.
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds keep_alive{5'000};  // idle time between requests
  std::size_t keep_alive_max_requests = 1000;
  std::size_t max_head_bytes = 16 * 1024;  // request line and headers
};

// Where a request head ends in what a connection has sent so far.
struct HeadScan {
  enum Kind { incomplete, complete, too_large } kind = incomplete;
  std::size_t head_bytes = 0;  // complete: the bytes up to and including the empty line
};
// Pure. The head is what httplib reads as one: the first line up to its LF, whatever it holds
// (even empty: httplib then answers 400), then header lines up to the first one that is exactly
// CRLF (a bare LF line is no end: httplib skips it and reads on). A head longer than
// `max_head_bytes`, or more than that many bytes without an end, is too_large.
HeadScan scan_head(std::string_view buffered, std::size_t max_head_bytes);

// One request on a connection whose head is buffered: httplib::Server::process_request. Returns
// false, or sets `connection_closed`, when the connection must end. `ssl` is null for plain HTTP.
using RequestProcessor = std::function<bool(httplib::Stream& stream, bool close_connection,
                                            bool& connection_closed, SSL* ssl)>;

class Front {
 public:
  // Binds host:port (0: any free port) and listens. `tls` (may be null: plain HTTP) is used for
  // every accepted connection and must outlive the Front.
  static Result<std::unique_ptr<Front>> bind(const std::string& host, int port, SSL_CTX* tls,
                                             FrontOptions options, RequestProcessor processor);
  ~Front();
  Front(const Front&) = delete;
  Front& operator=(const Front&) = delete;

  int port() const;
  // Serves until stop(): requests in flight are finished, idle connections closed.
  void run();
  // Thread-safe and async-signal-safe (one write to an eventfd).
  void stop();

  struct State;

 private:
  explicit Front(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace onboard::rest
