// A client of the gateway: one DEALER socket, used from one thread (troupe submit, tests and
// the overhead benchmark). Not an actor: a client process has no other component.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "src/cluster/protocol.h"

namespace troupe::actors {

class gateway_client {
 public:
  explicit gateway_client(const std::string& address);
  ~gateway_client();
  gateway_client(const gateway_client&) = delete;
  gateway_client& operator=(const gateway_client&) = delete;

  void submit(const proto::job& j);
  void cancel(const std::string& client_request_id);
  // Sends arbitrary frames as one message (tests of malformed input).
  void send_frames(const std::vector<std::string>& frames);
  // The next message from the gateway, or nullopt after `timeout_ms`. Throws troupe::error
  // when the reply cannot be decoded.
  std::optional<proto::server_message> receive(int timeout_ms);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// What one job produced, as the client saw it.
struct job_result {
  std::string client_request_id;
  std::vector<int32_t> ids;
  std::string text;
  bool ok = false;  // a done message arrived (else `error` is set)
  proto::job_done done;
  error_info error;         // of the job_error that ended it
  uint32_t next_index = 0;  // index expected for the next chunk
  bool index_gap = false;   // a chunk arrived with another index: a lost or duplicated token
};

// Folds one message into `r`; returns true when the job is over (done or error).
bool apply_message(job_result& r, const proto::server_message& m);

// Submits one job and waits for its end, calling `on_chunk` for every chunk. Throws
// troupe::error(disconnected) when nothing arrives for `timeout_ms`.
job_result run_job(gateway_client& c, const proto::job& j, int timeout_ms = 30000,
                   const std::function<void(const proto::token_chunk&)>& on_chunk = {});

}  // namespace troupe::actors
