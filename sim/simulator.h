// The discrete-event simulator: the real scheduling policy (src/sched/policy.h) driven
// by a virtual clock (sim/event_queue.h), with a cost model standing in for the workers.
// Each replica runs one step at a time: when it is idle and the policy plans a step, the
// step ends at now + cost(step), and its result (fake token ids, never EOS) goes back to
// the policy. Requests end by max_tokens = their output length. A step's result reaches
// the policy one step period after it was planned: its compute plus the control loop's
// latency (synchronous), or the larger of the two (pipelined); see cluster_spec.
// The loop around the policy is the shared policy driver (src/sched/driver.h). With the
// policy's max_inflight_steps >= 2 (`troupe sim --max-inflight-steps`) it plans a replica's
// next step when one starts, and that one starts when the running one ends (async
// scheduling); the same setting makes the step period pipelined (cluster_spec::step_period).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sim/cluster.h"
#include "sim/cost_model.h"
#include "sim/workload.h"
#include "src/sched/policy.h"

namespace troupe::sim {

// One step as it started, for --steps-jsonl.
struct step_record {
  double start = 0;     // seconds
  double duration = 0;  // compute: the cost model's step time
  double period = 0;    // until the replica's next step can start (cluster_spec::step_period)
  uint32_t replica = 0;
  int32_t seqs = 0;
  int64_t tokens = 0;  // fed, prefill chunks and decodes
  int64_t prefill_tokens = 0;
  int64_t context = 0;  // tokens already cached, summed over the step's sequences
  double kv_util = 0;
  int64_t queued = 0;  // the policy's queue length
};

struct sim_options {
  sched::policy_config policy;   // its tenants list is filled from the workload's when empty
  int32_t series_buckets = 200;  // time series resolution over the arrival window
  // Called now and then with the share of requests done, in [0, 1].
  std::function<void(double)> progress;
  // Called for every step, when set (a million-request run has millions of steps).
  std::function<void(const step_record&)> on_step;
};

enum class request_status : unsigned char { finished, rejected, unfinished };

struct request_record {
  uint64_t id = 0;
  uint32_t tenant = 0;
  uint32_t replica = 0;  // where its last token came from
  request_status status = request_status::unfinished;
  double arrival = 0;
  double first_token = -1;  // seconds, -1 when none came
  double finish = -1;
  int32_t prompt_tokens = 0;
  int32_t output_tokens = 0;  // asked (max_tokens)
  int32_t generated = 0;
  int32_t preemptions = 0;  // times its KV was dropped and its position went back

  double ttft() const { return first_token - arrival; }
  double e2e() const { return finish - arrival; }
  // Time per output token after the first; 0 with fewer than two tokens.
  double tpot() const { return generated > 1 ? (finish - first_token) / (generated - 1) : 0.0; }
};

// Per-interval aggregates for the report's time series.
struct time_bucket {
  double tokens_out = 0;  // generated tokens
  double tokens_in = 0;   // prompt tokens computed (prefill chunks, recomputation included)
  double finished = 0;
  double queue_sum = 0;  // policy queue length, summed over the steps started here
  double kv_sum = 0;     // KV utilization, summed likewise
  double steps = 0;
};

struct sim_result {
  std::vector<tenant_spec> tenants;
  std::vector<request_record> requests;  // by id
  std::vector<int64_t> batch_hist;       // [n] = steps with n sequences
  int64_t steps = 0;
  int64_t preemptions = 0;
  double kv_util_sum = 0;  // over steps; mean = kv_util_sum / steps
  double kv_util_max = 0;
  double busy_time = 0;  // replica-seconds spent in steps
  double end_time = 0;   // virtual time of the last event
  int32_t replicas = 0;
  int64_t kv_blocks_per_replica = 0;
  double bucket_width = 1;
  std::vector<time_bucket> series;
  std::string cost_model;
  std::string policy_trace;  // the policy's JSONL trace, when opts.policy.trace is set
};

// The policy configuration with the workload's tenants as its fair-share tenants (weight:
// their share); tenants cfg already lists (troupe sim --tenant) keep their own weight and limits.
sched::policy_config with_tenants(sched::policy_config cfg, const std::vector<tenant_spec>& tenants);

sim_result simulate(const cluster_spec& cluster, const cost_model& cost, const workload& load,
                    const sim_options& opts = {});

}  // namespace troupe::sim
