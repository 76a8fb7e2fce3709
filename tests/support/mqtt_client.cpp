#include "tests/support/mqtt_client.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <sys/socket.h>

#include <stdexcept>

namespace onboard::test {
namespace {

struct LibInit {
  LibInit() { mosquitto_lib_init(); }
};
LibInit lib_init;

}  // namespace

MqttClient::MqttClient(const std::string& client_id, const Credentials& credentials,
                       int protocol_version, bool clean_session) {
  init(client_id, protocol_version, clean_session);
  if (mosquitto_tls_set(mosq_, credentials.cafile.c_str(), nullptr, credentials.certfile.c_str(),
                        credentials.keyfile.c_str(), nullptr) != MOSQ_ERR_SUCCESS) {
    throw std::runtime_error("mosquitto_tls_set failed for " + credentials.certfile.string());
  }
}

MqttClient::MqttClient(const std::string& client_id, const PasswordLogin& login,
                       int protocol_version) {
  init(client_id, protocol_version, true);
  set_login(login);
}

void MqttClient::set_login(const PasswordLogin& login) {
  if (mosquitto_username_pw_set(mosq_, login.username.c_str(), login.password.c_str()) !=
      MOSQ_ERR_SUCCESS) {
    throw std::runtime_error("mosquitto_username_pw_set failed");
  }
}

void MqttClient::init(const std::string& client_id, int protocol_version, bool clean_session) {
  mosq_ = mosquitto_new(client_id.c_str(), clean_session, this);
  if (mosq_ == nullptr) throw std::runtime_error("mosquitto_new failed");
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION,
                       protocol_version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
  mosquitto_connect_callback_set(mosq_, on_connect);
  mosquitto_disconnect_callback_set(mosq_, on_disconnect);
  mosquitto_subscribe_callback_set(mosq_, on_subscribe);
  mosquitto_publish_callback_set(mosq_, on_publish);
  mosquitto_publish_v5_callback_set(mosq_, on_publish_v5);
  mosquitto_message_callback_set(mosq_, on_message);
}

MqttClient::~MqttClient() {
  if (loop_started_) {
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, true);
  }
  mosquitto_destroy(mosq_);
}

int MqttClient::connect_with_auth_method(int port, const std::string& method) {
  mosquitto_property* props = nullptr;
  if (mosquitto_property_add_string(&props, MQTT_PROP_AUTHENTICATION_METHOD, method.c_str()) !=
      MOSQ_ERR_SUCCESS) {
    return -1;
  }
  int rc = connect_impl(port, std::chrono::seconds(5), props);
  mosquitto_property_free_all(&props);
  return rc;
}

int MqttClient::connect(int port, std::chrono::milliseconds timeout) {
  return connect_impl(port, timeout, nullptr);
}

int MqttClient::connect_impl(int port, std::chrono::milliseconds timeout,
                             const mosquitto_property* props) {
  {
    std::lock_guard lock(mutex_);
    connack_ = -2;
    disconnected_ = false;
  }
  if (mosquitto_connect_bind_v5(mosq_, "127.0.0.1", port, 30, nullptr, props) != MOSQ_ERR_SUCCESS)
    return -1;
  // No automatic reconnect: a test must see exactly the connections it makes.
  mosquitto_reconnect_delay_set(mosq_, 3600, 3600, false);
  if (!loop_started_) {
    mosquitto_loop_start(mosq_);
    loop_started_ = true;
  }
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return connack_ != -2 || disconnected_; });
  if (connack_ == 0) return 0;
  // Stop the library from retrying a refused or failed connection.
  lock.unlock();
  mosquitto_disconnect(mosq_);
  lock.lock();
  return connack_ == -2 ? -1 : connack_;
}

int MqttClient::subscribe(const std::string& filter, int qos) {
  int mid = 0;
  {
    std::lock_guard lock(mutex_);
    sub_granted_ = -1;
  }
  if (mosquitto_subscribe(mosq_, &mid, filter.c_str(), qos) != MOSQ_ERR_SUCCESS) return -1;
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, std::chrono::seconds(5), [&] { return sub_mid_ == mid; });
  return sub_mid_ == mid ? sub_granted_ : -1;
}

bool MqttClient::publish(const std::string& topic, const std::string& payload, int qos) {
  int mid = 0;
  if (mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                        payload.data(), qos, false) != MOSQ_ERR_SUCCESS) {
    return false;
  }
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return pub_mid_done_ == mid; });
}

int MqttClient::publish_reason(const std::string& topic, const std::string& payload, bool retain) {
  int mid = 0;
  if (mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                        payload.data(), 1, retain) != MOSQ_ERR_SUCCESS) {
    return -1;
  }
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, std::chrono::seconds(5), [&] { return pub_reason_mid_ == mid; }))
    return -1;
  return pub_reason_;
}

void MqttClient::set_will(const std::string& topic, const std::string& payload) {
  if (mosquitto_will_set(mosq_, topic.c_str(), static_cast<int>(payload.size()), payload.data(), 1,
                         false) != MOSQ_ERR_SUCCESS) {
    throw std::runtime_error("mosquitto_will_set failed");
  }
}

void MqttClient::drop_connection() {
  int fd = mosquitto_socket(mosq_);
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

std::optional<Message> MqttClient::next_message(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [&] { return !messages_.empty(); })) return std::nullopt;
  Message m = std::move(messages_.front());
  messages_.pop_front();
  return m;
}

bool MqttClient::wait_disconnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return disconnected_; });
}

bool MqttClient::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

std::chrono::steady_clock::time_point MqttClient::disconnected_at() const {
  std::lock_guard lock(mutex_);
  return disconnected_at_;
}

void MqttClient::on_connect(struct mosquitto*, void* self, int rc) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->connack_ = rc;
  c->connected_ = rc == 0;
  c->cv_.notify_all();
}

void MqttClient::on_disconnect(struct mosquitto*, void* self, int) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->connected_ = false;
  c->disconnected_ = true;
  c->disconnected_at_ = std::chrono::steady_clock::now();
  c->cv_.notify_all();
}

void MqttClient::on_subscribe(struct mosquitto*, void* self, int mid, int count,
                              const int* granted) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->sub_mid_ = mid;
  c->sub_granted_ = count > 0 ? granted[0] : -1;
  c->cv_.notify_all();
}

void MqttClient::on_publish(struct mosquitto*, void* self, int mid) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->pub_mid_done_ = mid;
  c->cv_.notify_all();
}

void MqttClient::on_publish_v5(struct mosquitto*, void* self, int mid, int reason_code,
                               const struct mqtt5__property*) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->pub_reason_mid_ = mid;
  c->pub_reason_ = reason_code;
  c->cv_.notify_all();
}

void MqttClient::on_message(struct mosquitto*, void* self,
                            const struct mosquitto_message* message) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->messages_.push_back(
      Message{message->topic, std::string(static_cast<const char*>(message->payload),
                                          static_cast<std::size_t>(message->payloadlen))});
  c->cv_.notify_all();
}

}  // namespace onboard::test
