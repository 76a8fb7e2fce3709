// A real MQTT client over mTLS (libmosquitto), with blocking helpers for tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

struct mosquitto;
struct mosquitto_message;
struct mqtt5__property;

namespace onboard::test {

struct Credentials {
  std::filesystem::path cafile, certfile, keyfile;
};

// A username/password client on a plain TCP listener (no TLS, no certificate).
struct PasswordLogin {
  std::string username, password;
};

struct Message {
  std::string topic;
  std::string payload;
};

class MqttClient {
 public:
  // `clean_session` false: the broker keeps the session (subscriptions, queued QoS 1 messages)
  // while the client is away.
  MqttClient(const std::string& client_id, const Credentials& credentials, int protocol_version = 4,
             bool clean_session = true);
  MqttClient(const std::string& client_id, const PasswordLogin& login, int protocol_version = 4);
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;
  ~MqttClient();

  // The CONNACK code (0 = accepted; 5 / 135 = not authorised), or -1 when no CONNACK came (TLS
  // refused, timeout).
  int connect(int port, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // MQTT v5 only: connects asking for enhanced authentication with this method.
  int connect_with_auth_method(int port, const std::string& method);
  // The granted QoS, or 128 (0x80, v3.1.1) / the v5 reason code (>= 0x80) when refused; -1 on
  // timeout.
  int subscribe(const std::string& filter, int qos = 1);
  // Publishes with QoS 1 and waits for the PUBACK: true when it came.
  bool publish(const std::string& topic, const std::string& payload, int qos = 1);
  // MQTT v5: publishes with QoS 1 (retained when asked) and returns the PUBACK's reason code
  // (0 = success, 0x87 = not authorised), or -1 when none came.
  int publish_reason(const std::string& topic, const std::string& payload, bool retain = false);
  // Before connect(): a username and password to send as well (a certificate client may send one).
  void set_login(const PasswordLogin& login);
  // Before connect(): the message the broker publishes if the connection is lost.
  void set_will(const std::string& topic, const std::string& payload);
  // Ends the connection abruptly (no DISCONNECT packet), so that the broker publishes the will.
  void drop_connection();
  std::optional<Message> next_message(std::chrono::milliseconds timeout = std::chrono::seconds(2));
  // True when the broker closed the connection within the timeout.
  bool wait_disconnected(std::chrono::milliseconds timeout);
  bool connected() const;
  // When the last disconnect was seen.
  std::chrono::steady_clock::time_point disconnected_at() const;

 private:
  void init(const std::string& client_id, int protocol_version, bool clean_session);
  int connect_impl(int port, std::chrono::milliseconds timeout,
                   const struct mqtt5__property* props);
  static void on_connect(struct mosquitto*, void* self, int rc);
  static void on_disconnect(struct mosquitto*, void* self, int rc);
  static void on_subscribe(struct mosquitto*, void* self, int mid, int count, const int* granted);
  static void on_publish(struct mosquitto*, void* self, int mid);
  static void on_publish_v5(struct mosquitto*, void* self, int mid, int reason_code,
                            const struct mqtt5__property* props);
  static void on_message(struct mosquitto*, void* self, const struct mosquitto_message* message);

  struct mosquitto* mosq_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int connack_ = -2;
  bool connected_ = false;
  bool disconnected_ = false;
  std::chrono::steady_clock::time_point disconnected_at_{};
  int sub_mid_ = -1, sub_granted_ = -1;
  int pub_mid_done_ = -1;
  int pub_reason_mid_ = -1, pub_reason_ = -1;
  std::deque<Message> messages_;
  bool loop_started_ = false;
};

}  // namespace onboard::test
