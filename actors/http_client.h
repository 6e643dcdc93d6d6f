// An HTTP/SSE load client for the OpenAI-compatible API: many streaming requests at once on
// one I/O thread (Boost.Beast, in http_client.cpp only), one connection each. `troupe bench
// --http` and bench_cluster drive it; events come back through next(), time-stamped.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace troupe::actors {

class http_load_client {
 public:
  struct event {
    enum class kind : unsigned char { chunk, done, error } what = kind::chunk;
    std::string id;
    std::chrono::steady_clock::time_point at;
    uint32_t completion_tokens = 0;  // done: the usage chunk's (stream_options.include_usage)
    int status = 0;                  // error: the HTTP status (0: no answer)
    std::string message;             // error: the server's message, or the socket's
  };

  // `host_port`: HOST:PORT (an http:// prefix and a path are ignored); `api_key` goes into
  // Authorization: Bearer.
  http_load_client(const std::string& host_port, std::string api_key = {});
  ~http_load_client();
  http_load_client(const http_load_client&) = delete;
  http_load_client& operator=(const http_load_client&) = delete;

  // POSTs `body` (JSON, "stream": true) to `path` on a connection of its own; thread-safe.
  // `api_key` non-empty: this request's key instead of the client's.
  void submit(const std::string& id, const std::string& path, std::string body, const std::string& api_key = {});
  // The next event, or nullopt after `timeout_ms`.
  std::optional<event> next(int timeout_ms);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace troupe::actors
