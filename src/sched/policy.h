// The scheduling policy: a plain library with no threads, no I/O and no clock. Every
// call takes `now` (seconds, from any fixed origin); randomness comes from a seeded
// generator. The scheduler actor drives it with real time; sim/ drives the very same
// code with a virtual clock. It owns every decision (admission, batching, preemption,
// routing) and the KV block tables; it never touches memory.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "troupe/error.h"
#include "troupe/sampling.h"
#include "troupe/step.h"

namespace troupe::sched {

enum class finish_reason : unsigned char { none, stop, length, cancelled, error };

struct request {
  uint64_t id = 0;  // unique, given by the gateway
  std::string tenant = "default";
  int32_t priority = 0;  // higher runs first
  std::vector<int32_t> prompt;
  sampling_params sampling;
  std::vector<int32_t> eos_ids;  // the model's end-of-sequence ids (ignored with sampling.ignore_eos)
};

struct replica_info {
  uint32_t id = 0;
  int64_t kv_blocks = 0;
  int32_t block_size = 16;
  int32_t max_batch = 64;  // sequences per step
};

struct policy_config {
  int32_t max_step_tokens = 512;  // token budget per step (prefill chunks + decodes)
  bool chunked_prefill = true;
  int64_t max_queued = 1024;  // requests waiting, over all tenants; past it: overloaded
  int64_t max_context = 0;    // prompt + max_tokens bound; 0 = no bound
};

// The answer to submit(): accepted, or an error of a kind (failed / overloaded) with a
// message naming the field.
struct admission {
  bool accepted = true;
  error_kind kind = error_kind::failed;
  std::string message;
  std::string field;
};

// What happened to a request in one step result.
struct request_event {
  uint64_t id = 0;
  std::vector<token_logprob> tokens;            // new tokens, in order (logprob of each)
  std::vector<std::vector<token_logprob>> top;  // alternatives per new token, when asked
  finish_reason finished = finish_reason::none;
  std::string error;  // when finished == error
};

// A step planned for one replica. The plan's seq ids are request ids.
struct planned_step {
  uint32_t replica = 0;
  step_plan plan;
};

class policy {
 public:
  explicit policy(policy_config cfg);
  ~policy();
  policy(const policy&) = delete;
  policy& operator=(const policy&) = delete;

  void add_replica(const replica_info& r, double now);
  // A replica went away: its unfinished requests go back to the queue, resuming from the
  // tokens already generated (their KV is recomputed on another replica).
  void remove_replica(uint32_t id, double now);

  admission submit(request r, double now);
  // Ends the request (finish reason cancelled) and frees its blocks; reported by the next
  // schedule()/on_result() through finished_events(). Unknown ids are ignored.
  void cancel(uint64_t id, double now);

  // Plans the next step for a replica that has no step in flight; nullopt when there is
  // nothing to run there.
  std::optional<planned_step> schedule(uint32_t replica, double now);
  // Applies a replica's step result; returns the events of the requests it touched.
  std::vector<request_event> on_result(uint32_t replica, const step_result& result, double now);
  // Events produced outside a step (cancellation, requests failed by remove_replica).
  std::vector<request_event> take_events();

  size_t queued() const;
  size_t running() const;

 private:
  struct impl;
  impl* impl_;
};

}  // namespace troupe::sched
