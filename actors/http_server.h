// The gateway's HTTP/1.1 front door: the OpenAI-compatible API (src/api/openai.h) on an
// asynchronous server (Boost.Beast over Asio, one I/O thread for every connection: no thread
// per client), feeding the same gateway core as the ZeroMQ socket. Beast's headers stay in
// http_server.cpp: this header is light.
//
// A request's jobs reach the gateway actor as client frames from peer "http:N" (one peer per
// HTTP request); the gateway hands that peer's server messages back through deliver(). A
// client that goes away (its socket closes) is a peer gone: its jobs are cancelled.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "src/api/openai.h"
#include "src/cluster/protocol.h"

namespace troupe::actors {

struct http_options {
  std::string listen;                          // HOST:PORT (port 0: any free port)
  size_t max_body_bytes = size_t{8} << 20;     // larger: 413
  size_t max_header_bytes = size_t{16} << 10;  // larger: 431
  double request_timeout_s = 15;  // a request (headers and body) must arrive within this; also the keep-alive idle time
  double write_timeout_s = 30;    // a client that reads slower than this is dropped
  double keepalive_comment_s = 5;  // SSE comments while a streamed job has nothing to send
  size_t max_connections = 8192;
  std::vector<std::string> api_keys;  // as the gateway's; checked here for /v1/models and /tokenize
};

// What /health reports: empty = ready (200), else why not (503).
using health_probe = std::function<std::string()>;

class http_server {
 public:
  // `submit(peer, frame)`: a client frame (codec::encode of a proto::client_message) for the
  // gateway; `gone(peer)`: that peer's jobs are to be cancelled. Both are called on the
  // server's I/O thread and must be thread-safe (they send to the gateway actor).
  http_server(http_options opts, std::vector<api::api_model> models, api::chat_renderer render,
              std::function<void(const std::string& peer, std::string frame)> submit,
              std::function<void(const std::string& peer)> gone, health_probe health);
  ~http_server();  // stops
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Starts accepting connections (the constructor binds, so that an address in use fails
  // there, before the gateway is wired to deliver()).
  void start();
  // The bound address, HOST:PORT.
  std::string endpoint() const;
  // A gateway reply for `peer` (thread-safe): queued to the connection that waits for it.
  void deliver(const std::string& peer, proto::server_message m);
  void stop();

  static bool owns(const std::string& peer) { return peer.rfind("http:", 0) == 0; }

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace troupe::actors
