// The gateway's logic without threads, sockets or a clock: validates and tokenizes client
// jobs, gives them ids, bounds how many are in flight, streams token chunks back through a
// text_stream, ends jobs at stop strings (cancelling them at the scheduler) and turns client
// cancels, disconnects and shutdown deadlines into cancels. It takes and returns value types
// (proto::client_message in, proto::server_message out): each front end (the ZeroMQ bridge
// in actors/components.cpp; HTTP next) decodes its wire format, answers frames it cannot
// decode itself, and encodes the replies.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "src/cluster/codec.h"
#include "src/cluster/protocol.h"
#include "src/model/text_stream.h"
#include "src/model/tokenizer.h"

namespace troupe {

// A model the gateway accepts jobs for; the tokenizer must outlive the gateway.
struct served_model {
  std::string name;
  const tokenizer* tok = nullptr;
  int64_t max_context = 0;  // prompt + generated tokens
};

struct gateway_options {
  size_t max_queue = 256;  // jobs accepted and not finished; past it: overloaded at once
  codec::limits limits;    // for the front end that decodes client frames; the core never sees bytes
  // Access control and tenants: "KEY" or "KEY=TENANT". When not empty, a job must carry one
  // of the keys and belongs to its tenant (the key itself when none is named). When empty,
  // any key is accepted and names the job's tenant ("default" without a key).
  std::vector<std::string> api_keys;
  // This gateway's name at the scheduler; unique among the gateways of one scheduler (a
  // second one with the same id is refused). Empty: HOSTNAME-PID, unique on its own.
  std::string gateway_id;
  // The link to the scheduler: a heartbeat every heartbeat_s (on_tick), which the scheduler
  // answers. With nothing heard from it for scheduler_timeout_s, every job in flight ends
  // with a `disconnected` error naming the scheduler and new jobs get `overloaded` at once,
  // until it answers again (a restarted scheduler: the gateway needs no new registration).
  double heartbeat_s = 0.2;
  double scheduler_timeout_s = 2.0;
};

// The tenant a job with `api_key` belongs to under `api_keys` (gateway_options::api_keys), or
// nullopt when the key is refused (missing or unknown while keys are configured).
std::optional<std::string> tenant_of_key(const std::vector<std::string>& api_keys, const std::string& api_key);

struct client_reply {
  std::string peer;
  proto::server_message message;
};

struct gateway_output {
  std::vector<client_reply> to_clients;
  std::vector<proto::control_message> to_scheduler;
  void append(gateway_output&& o);
};

class gateway_core {
 public:
  // The first model is the default (a job naming no model gets it).
  gateway_core(gateway_options opts, std::vector<served_model> models);
  ~gateway_core();

  // One message from a client (`peer`: its routing id or connection): a submit or a cancel.
  gateway_output on_client_message(const std::string& peer, proto::client_message msg, double now);
  // The client's connection went away: its jobs are cancelled.
  gateway_output on_client_gone(const std::string& peer, double now);
  // One decoded message from the scheduler (events, rejections).
  gateway_output on_scheduler(const proto::control_message& msg, double now);
  // Shutdown: from now on new jobs get `overloaded`; jobs in flight run on.
  void stop_accepting() { accepting_ = false; }
  // Past the shutdown deadline: every job still in flight is cancelled with `reason`.
  gateway_output cancel_all(const std::string& reason, double now);
  // Every heartbeat_s: the heartbeat to send, and the jobs that end when the scheduler has
  // been silent for scheduler_timeout_s.
  gateway_output on_tick(double now);

  size_t in_flight() const { return jobs_.size(); }
  // False while the scheduler is silent past scheduler_timeout_s.
  bool scheduler_reachable() const { return scheduler_up_; }
  // Empty when jobs can run now: the scheduler answers and has a worker for every model
  // served here; else why not (what /health says with its 503).
  std::string not_ready() const;

 private:
  struct job_state;

  gateway_output submit(const std::string& peer, proto::job j, double now);
  gateway_output cancel(const std::string& peer, const std::string& client_request_id, double now);
  // Appends new tokens to a job's output, streaming what text is final.
  void on_tokens(job_state& s, const request_event& e, double now, gateway_output& out);
  // reason error: the job ends with a `disconnected` error, `detail` its message and
  // `field` the part of the cluster that failed.
  void finish(job_state& s, finish_reason reason, const std::string& detail, double now, gateway_output& out,
              const std::string& field = "");
  void send_chunk(job_state& s, bool final, gateway_output& out);
  static client_reply error_reply(const std::string& peer, uint64_t job_id, const std::string& client_request_id,
                                  error_info e);

  gateway_options opts_;
  std::vector<served_model> models_;
  bool accepting_ = true;
  // Ids are this gateway's own: the scheduler scopes them by the gateway that sent them
  // (scheduler_core.h), so several gateways counting from 1 never collide.
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<job_state>> jobs_;
  std::map<std::pair<std::string, std::string>, uint64_t> by_client_;  // (peer, client request id) -> job
  // The scheduler link: when it was last heard from (< 0: not yet, counting from the first
  // tick), whether it counts as reachable, and the last heartbeat's number.
  double scheduler_heard_ = -1;
  bool scheduler_up_ = true;
  bool refused_logged_ = false;
  bool scheduler_answered_ = false;
  std::vector<std::string> ready_models_;  // the scheduler's latest word
  uint64_t heartbeats_ = 0;
};

}  // namespace troupe
