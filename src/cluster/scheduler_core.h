// The scheduler's logic without threads, sockets or a clock: it runs the policy driver
// (src/sched/driver.h: planning, steps in flight, results) with the `now` it is given, keeps
// the replicas (workers) and their heartbeats and drains, sends each plan to its worker and
// routes request events back to the gateway that submitted each request. The scheduler actor
// (actors/scheduler_actor) is a thin shell over it.
//
// Any number of gateways may connect. Each numbers its requests on its own (1, 2, ...), so
// the scheduler scopes ids by the sending gateway: a request (gateway peer, its id) gets a
// cluster-wide id of the scheduler's own, the one the policy, the plans and the trace see
// (sched::request::id stays a plain uint64), and events and rejections go back to that
// gateway under the gateway's id. A cancel names the gateway's id, so it can only reach that
// gateway's own requests; one matching none of them is ignored and logged.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/cluster/protocol.h"
#include "src/sched/driver.h"
#include "src/sched/policy.h"

namespace troupe {

struct scheduler_options {
  sched::policy_config policy;
  double heartbeat_timeout_s = 2.0;  // a worker silent this long is removed (its requests re-planned)
  // A gateway that sends heartbeats and falls silent this long is dropped (its requests
  // cancelled): a stopped gateway process keeps its connection open.
  double gateway_timeout_s = 2.0;
  // Where the scheduler actor appends the policy's decision trace (JSONL, replayable by
  // sim/ and sched::replay); empty: no trace. Setting it turns policy.trace on.
  std::string trace_path;
};

// A control message for one peer (its ZeroMQ routing id).
struct addressed_message {
  std::string peer;
  proto::control_message message;
};

class scheduler_core {
 public:
  explicit scheduler_core(scheduler_options opts);
  ~scheduler_core();

  using outbox = std::vector<addressed_message>;

  // One decoded message from `peer`; returns what to send.
  outbox on_message(const std::string& peer, proto::control_message msg, double now);
  // The peer's connection went away (or it stopped answering): its replica is removed and
  // its requests re-planned elsewhere, resuming from the tokens already generated.
  outbox on_peer_gone(const std::string& peer, double now);
  // Periodic: removes replicas whose heartbeats stopped, and draining replicas whose
  // deadline passed (their sequences move to other replicas; the worker is shut down).
  outbox on_tick(double now);
  // Asks every worker to stop (the scheduler is shutting down).
  outbox shutdown_workers(const std::string& reason);

  // The policy's trace lines recorded since the last call (empty unless tracing).
  std::string take_trace();

  size_t replicas() const { return replicas_.size(); }
  // The models some replica that is not draining serves (told to gateways, for /health).
  std::vector<std::string> ready_models() const;
  // Requests in flight that `gateway_peer` submitted (finished ones are forgotten).
  size_t requests_of(const std::string& gateway_peer) const;

  // The gateway id in a gateway's routing id "ID#NONCE" (actors/components.cpp adds a random
  // nonce per process, so that two gateways started with the same --gateway-id still reach
  // the scheduler and the second can be refused with an error instead of being dropped
  // silently by ZeroMQ); a routing id without '#' is its own gateway id.
  static std::string gateway_id_of(const std::string& peer);
  size_t queued() const;
  size_t running() const;

 private:
  struct replica {
    uint32_t id = 0;
    std::string peer;
    double last_seen = 0;
    std::string model;
    bool draining = false;      // its worker asked to stop: no new work, shutdown once empty
    double drain_deadline = 0;  // > 0: when its sequences move elsewhere (seconds, `now`'s clock)
    sched::replica_info info;   // as registered
  };

  outbox on_registration(const std::string& peer, const proto::worker_registration& r, double now);
  void on_step_result(replica& r, const proto::step_outcome& o, double now, outbox& out);
  void reject_sequences(replica& r, const proto::step_outcome& o, double now, outbox& out);
  // drained: a replica retired after its drain: an info line, not a warning, and when it was
  // the last one its queued requests wait for the next worker instead of failing.
  void remove(uint32_t replica_id, const std::string& why, double now, outbox& out, bool drained = false);
  void on_drain(replica& r, const proto::drain& d, double now, outbox& out);
  // Sends shutdown to every draining replica with nothing left to run, and removes it.
  void retire_drained(double now, outbox& out);
  // Plans steps for every replica below its in-flight limit.
  void pump(double now, outbox& out);
  void route(std::vector<sched::request_event> events, outbox& out);
  void on_request(const std::string& peer, sched::request& q, double now, outbox& out);
  void on_cancel(const std::string& peer, const proto::cancel_request& c, double now, outbox& out);
  std::string claim_gateway(const std::string& peer);
  static std::string gateway_id_taken(const std::string& peer);
  void gateway_gone(const std::string& peer, const std::string& why, double now);
  // Forgets a finished (or orphaned) request's bookkeeping.
  void forget(uint64_t id);
  class sink;  // the driver's plans and events, into an outbox

  scheduler_options opts_;
  sched::driver driver_;
  std::map<uint32_t, replica> replicas_;
  std::map<std::string, uint32_t> replica_of_peer_;
  uint32_t next_replica_ = 1;
  // Where a request came from: the gateway's peer and the id that gateway gave it.
  struct origin {
    std::string peer;
    uint64_t gateway_request = 0;
  };
  uint64_t next_request_ = 1;
  std::unordered_map<uint64_t, origin> gateway_of_;                  // cluster id -> its gateway
  std::map<std::pair<std::string, uint64_t>, uint64_t> cluster_id_;  // (gateway peer, its id) -> cluster id
  std::map<std::string, std::string> gateway_peer_;                  // gateway id -> the peer that holds it
  std::map<std::string, double> gateway_seen_;                       // gateway peer -> its last heartbeat
  std::set<std::string> refused_gateways_;                           // peers refused their gateway id (logged)
  std::unordered_map<uint64_t, double> admitted_at_;                 // until first scheduled
  std::unordered_map<uint64_t, double> queue_ms_;                    // first scheduled, not yet reported
  std::unordered_map<uint64_t, std::string> model_of_;               // request id -> its model, when it names one
};

}  // namespace troupe
