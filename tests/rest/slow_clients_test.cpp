// `onboardctl serve` against clients that are slow or idle (issue 14, attack 2): connection caps
// per peer and in total, the request head deadline, and idle keep-alive connections that hold no
// worker. A second peer is 127.0.0.2 (Linux routes all of 127/8 to lo). Also scan_head, the pure
// function that decides when a head is complete.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <httplib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/files.h"
#include "rest/front.h"
#include "tests/support/process.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using Args = std::vector<std::string>;

namespace {

test::RunResult onboardctl_in(const std::filesystem::path& data_dir, Args args) {
  args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data_dir.string()});
  return test::run(args);
}

class Served {
 public:
  explicit Served(Args extra) {
    REQUIRE(onboardctl_in(data(), {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
    Args args{ONBOARDCTL_PATH, "--data-dir", data().string(), "serve", "--listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    server = std::make_unique<test::ChildProcess>(args, dir / "serve.log");
    const std::string line = server->read_line();
    INFO(log());
    REQUIRE(line.starts_with("serving on http://127.0.0.1:"));
    port = std::stoi(line.substr(line.rfind(':') + 1));
  }
  std::filesystem::path data() const { return dir.path() / "data"; }
  std::string log() const {
    auto text = read_file(dir.path() / "serve.log");
    return text.ok() ? *text : "";
  }
  test::TempDir dir;
  std::unique_ptr<test::ChildProcess> server;
  int port = 0;
};

// A raw TCP connection from a chosen loopback address. Every receive waits at most 3 s.
class Raw {
 public:
  Raw(int port, const char* from = "127.0.0.1") : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    timeval timeout{3, 0};
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, from, &local.sin_addr) == 1);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&local), sizeof local) == 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;
  ~Raw() { ::close(fd_); }

  // False when the server has closed the connection.
  bool send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // The status of the next whole response (0: none within 3 s, or the connection ended first).
  int status() {
    std::size_t end = 0;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos)
      if (!receive()) return 0;
    const std::string head = buffer_.substr(0, end);
    std::size_t length = 0;
    const auto at = head.find("Content-Length: ");
    if (at != std::string::npos) length = std::stoul(head.substr(at + 16));
    buffer_.erase(0, end + 4);
    while (buffer_.size() < length)
      if (!receive()) return 0;
    last_body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return head.size() > 12 ? std::stoi(head.substr(9, 3)) : 0;
  }
  int get(const std::string& path) {
    if (!send("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) return 0;
    return status();
  }
  // Whether the server ends the connection within `seconds` (rather than staying silent).
  bool closed_within(int seconds) {
    timeval timeout{seconds, 0};
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0);
    char chunk[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
      if (n < 0) return false;  // timed out
    }
  }
  std::string last_body;

 private:
  bool receive() {
    char chunk[4096];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  int fd_;
  std::string buffer_;
};

// A refused connection: answered 503 and closed, or closed (the refusal can race the client's
// own request).
void check_refused(Raw& connection) {
  connection.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  const int status = connection.status();
  INFO("status " << status << " " << connection.last_body);
  CHECK((status == 503 || status == 0));
  if (status == 503) CHECK(connection.last_body.find("unavailable") != std::string::npos);
  CHECK(connection.closed_within(2));
}

// Opens `count` connections from `from`, each proven accepted by one answered request.
std::vector<std::unique_ptr<Raw>> open_served(int port, int count, const char* from) {
  std::vector<std::unique_ptr<Raw>> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(std::make_unique<Raw>(port, from));
    REQUIRE(out.back()->get("/healthz") == 200);
  }
  return out;
}

// Whether a new connection from `from` is served within about 3 s, once the server has seen a
// closed one (which it notices on its own schedule).
bool served_once_closed(int port, const char* from) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Raw connection(port, from);
    if (connection.get("/healthz") == 200) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("a 17th connection from one peer is refused while another peer is served") {
  Served s({"--threads", "2"});
  auto held = open_served(s.port, 16, "127.0.0.1");
  Raw extra(s.port, "127.0.0.1");
  check_refused(extra);
  // Beside it: another address is served, and so is every one of the 16 still.
  Raw other(s.port, "127.0.0.2");
  CHECK(other.get("/healthz") == 200);
  for (auto& connection : held) CHECK(connection->get("/healthz") == 200);
  // Once one of the 16 closes, the peer may open another.
  held.pop_back();
  CHECK(served_once_closed(s.port, "127.0.0.1"));
}

TEST_CASE("connections beyond --max-connections are refused whoever opens them") {
  Served s({"--max-connections", "4", "--max-connections-per-peer", "8"});
  auto held = open_served(s.port, 4, "127.0.0.1");
  Raw extra(s.port, "127.0.0.2");
  check_refused(extra);
  held.pop_back();
  CHECK(served_once_closed(s.port, "127.0.0.2"));
}

TEST_CASE("a request head not complete within --header-timeout ends the connection") {
  Served s({"--header-timeout", "1"});
  // Silent from the start.
  Raw silent(s.port);
  CHECK(silent.closed_within(3));
  // One byte every 200 ms: each read comes well within any per-read timeout, the whole head
  // never does.
  Raw drip(s.port);
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  bool open = true;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0;
       open && std::chrono::steady_clock::now() - start < std::chrono::seconds(4); ++i) {
    open = drip.send(std::string(1, i < head.size() ? head[i] : 'a'));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(drip.closed_within(1));
  // Beside them: a head sent in three pieces that arrive within the time is answered, and the
  // connection stays open for the next request.
  Raw pieces(s.port);
  for (const char* piece : {"GET /heal", "thz HTTP/1.1\r\nHost: 1", "27.0.0.1\r\n\r\n"}) {
    REQUIRE(pieces.send(piece));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  CHECK(pieces.status() == 200);
  CHECK(pieces.get("/healthz") == 200);
}

TEST_CASE("a request head larger than the limit is refused 431 and the connection closed") {
  Served s({});
  Raw big(s.port);
  big.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(20 * 1024, 'a'));
  CHECK(big.status() == 431);
  CHECK(big.closed_within(2));
  Raw fine(s.port);
  CHECK(fine.get("/healthz") == 200);
}

TEST_CASE(
    "idle keep-alive connections hold no worker: with one per worker open a new one is served") {
  Served s({"--threads", "2"});
  // Each worker's worth of idle kept-alive connections: a server that keeps a connection on its
  // worker between requests has none left now, for the 5 s keep-alive time.
  auto idle = open_served(s.port, 4, "127.0.0.1");
  Raw fresh(s.port, "127.0.0.2");
  CHECK(fresh.get("/healthz") == 200);
  // The idle connections were kept open, not closed to make room.
  for (auto& connection : idle) CHECK(connection->get("/healthz") == 200);
}

TEST_CASE("over HTTPS a silent handshake and idle kept connections hold no worker") {
  test::TempDir dir;
  const auto data = dir / "data";
  REQUIRE(onboardctl_in(data, {"init", "--no-group", "--key-alg", "p256"}).exit_code == 0);
  REQUIRE(onboardctl_in(
              data, {"ca", "issue-server", "--ip", "127.0.0.1", "--key-alg", "p256", "--cert-out",
                     (dir / "server.crt").string(), "--key-out", (dir / "server.key").string()})
              .exit_code == 0);
  test::ChildProcess server(
      {ONBOARDCTL_PATH, "--data-dir", data.string(), "serve", "--listen", "127.0.0.1:0",
       "--threads", "2", "--header-timeout", "2", "--tls-cert", (dir / "server.crt").string(),
       "--tls-key", (dir / "server.key").string()},
      dir / "serve.log");
  const std::string line = server.read_line();
  REQUIRE(line.starts_with("serving on https://127.0.0.1:"));
  const int port = std::stoi(line.substr(line.rfind(':') + 1));
  const std::string chain = (data / "ca" / "chain.pem").string();
  auto client = [&] {
    auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port);
    c->set_ca_cert_path(chain.c_str());
    c->enable_server_certificate_verification(true);
    c->set_keep_alive(true);
    c->set_read_timeout(3, 0);
    return c;
  };
  // Two connections per worker that never send a ClientHello, and two kept-alive HTTPS clients
  // idle after a request each.
  std::vector<std::unique_ptr<Raw>> silent;
  for (int i = 0; i < 4; ++i) silent.push_back(std::make_unique<Raw>(port));
  std::vector<std::unique_ptr<httplib::SSLClient>> idle;
  for (int i = 0; i < 2; ++i) {
    idle.push_back(client());
    auto r = idle.back()->Get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  auto fresh = client();
  auto answered = fresh->Get("/healthz");
  REQUIRE(answered);
  CHECK(answered->status == 200);
  // The idle clients are answered again; the silent connections are closed at the head deadline.
  for (auto& c : idle) {
    auto again = c->Get("/healthz");
    REQUIRE(again);
    CHECK(again->status == 200);
  }
  for (auto& connection : silent) CHECK(connection->closed_within(3));
}

TEST_CASE("scan_head finds the end of a request head and nothing else") {
  using rest::HeadScan;
  using rest::scan_head;
  const std::string head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(scan_head(head, 1024).kind == HeadScan::complete);
  CHECK(scan_head(head, 1024).head_bytes == head.size());
  // What follows (a body, the next request) is not part of it.
  CHECK(scan_head(head + "GET /b HTTP/1.1\r\n\r\n", 1024).head_bytes == head.size());
  CHECK(scan_head(head + "{\"a\":1}", 1024).head_bytes == head.size());
  // A request line without headers.
  CHECK(scan_head("GET / HTTP/1.1\r\n\r\n", 1024).head_bytes == 18);
  for (std::size_t cut = 0; cut < head.size(); ++cut) {
    INFO(cut);
    CHECK(scan_head(head.substr(0, cut), 1024).kind == HeadScan::incomplete);
  }
  // httplib skips a header line that ends in a bare LF; an empty one does not end its head.
  CHECK(scan_head("GET / HTTP/1.1\nHost: x\n\n", 1024).kind == HeadScan::incomplete);
  CHECK(scan_head("GET / HTTP/1.1\r\nHost: x\r\n\n\r\n", 1024).head_bytes == 28);
  // The first line is the request line whatever it holds: an empty one does not end the head.
  CHECK(scan_head("\r\n\r\n", 1024).head_bytes == 4);
  CHECK(scan_head("\n\r\nGET / HTTP/1.1\r\n\r\n", 1024).head_bytes == 3);
  CHECK(scan_head("\r\n", 1024).kind == HeadScan::incomplete);
  // The bound: a head of exactly the limit is complete, one byte more is too large, and so is
  // anything over the limit without an end.
  CHECK(scan_head(head, head.size()).kind == HeadScan::complete);
  CHECK(scan_head(head, head.size() - 1).kind == HeadScan::too_large);
  CHECK(scan_head(std::string(2000, 'a'), 1024).kind == HeadScan::too_large);
  CHECK(scan_head(std::string(1024, 'a'), 1024).kind == HeadScan::incomplete);
  CHECK(scan_head(std::string(3000, '\n'), 1024).kind == HeadScan::too_large);
  CHECK(scan_head("", 1024).kind == HeadScan::incomplete);
}
