// The scheduling policy: a plain library with no threads, no I/O and no clock. Every
// call takes `now` (seconds, from any fixed origin); randomness comes from a seeded
// generator. The scheduler actor drives it with real time; sim/ drives the very same
// code with a virtual clock. It owns every decision (admission, batching, preemption,
// routing) and the KV block tables; it never touches memory.
//
// One step for a replica (schedule()): running decodes first (1 token each, best effective
// priority first), then the running prefills' next chunks, then swapped sequences back,
// then new admissions from the global queue, all under max_step_tokens and max_batch.
// Blocks are allocated as sequences grow; when none is left (after evicting unreferenced
// prefix blocks) the lowest effective priority, latest arrival running sequence is
// preempted. Routing: a request is not bound to a replica until a replica's schedule()
// admits it from the global queue (see policy_config::affinity_load_factor); the queue is
// ordered by effective priority, then resumed (preempted) sequences, then the tenant with
// the lowest virtual token counter (tokens served / weight), then arrival.
// Tokens reported in request_event include the EOS or stop token that ended a sequence;
// stop_strings are the gateway's business (it detokenizes).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "troupe/error.h"
#include "troupe/request.h"
#include "troupe/sampling.h"
#include "troupe/step.h"

namespace troupe::sched {

class policy_observer;  // policy_observer.h

// The request-level types are public (troupe/request.h); these names stay for the policy's
// users.
using troupe::finish_reason;
using troupe::request;
using troupe::request_event;
using troupe::to_string;

struct replica_info {
  uint32_t id = 0;
  int64_t kv_blocks = 0;
  int32_t block_size = 16;
  int32_t max_batch = 64;  // sequences per step
  // The worker's host pool for preemption_mode::swap, in blocks (reported at registration);
  // -1 = policy_config::host_kv_blocks.
  int64_t host_kv_blocks = -1;
  std::string model;  // the model it serves: it runs only requests for it (or for any model)
  // The worker caches sequences between plans (seq_cache): a sequence's work after its first
  // on this replica is a diff (seq_work::diff), and step_plan::released says what to drop.
  // false: every work is full (workers from before plans as diffs register so).
  bool plan_diffs = true;
  // The most tokens its worker takes in one step (reported at registration); its steps are
  // planned within the lesser of this and policy_config::max_step_tokens. 0 = the policy's.
  int64_t max_step_tokens = 0;
};

// How a preempted sequence gives back its KV blocks. recompute frees them and re-prefills
// prompt + generated later. swap copies them to slots of the replica's host pool
// (step_plan::swap_out) and back into fresh device blocks (step_plan::swap_in) before the
// step that resumes it, with the same n_computed; without host room it falls back to
// recompute. Copies decided in a schedule() that plans no step go with the next plan.
enum class preemption_mode : unsigned char { recompute, swap };

// Per-tenant weight and limits; tenants not listed get policy_config::default_tenant.
struct tenant_config {
  std::string name;
  double weight = 1.0;            // share of tokens served, relative to other tenants; > 0
  int64_t max_running = 0;        // jobs accepted and not finished (queued or running); 0 = no limit
  int64_t max_queued_tokens = 0;  // tokens waiting for admission; 0 = no limit
};

struct policy_config {
  int32_t max_step_tokens = 512;  // token budget per step (prefill chunks + decodes)
  bool chunked_prefill = true;
  int64_t max_queued = 1024;  // requests waiting, over all tenants; past it: overloaded
  int64_t max_context = 0;    // prompt + max_tokens bound; 0 = no bound

  // ---- KV blocks -------------------------------------------------------------------------
  double kv_watermark = 0.01;  // fraction of a replica's blocks kept free for running decodes
                               // when admitting a new prefill (rounded up to whole blocks)
  bool prefix_caching = true;  // share full prompt blocks between sequences by hash chain
  preemption_mode preemption = preemption_mode::recompute;
  int64_t host_kv_blocks = 0;  // per replica, the host pool for preemption_mode::swap, unless
                               // the replica_info gives its own

  // ---- ordering --------------------------------------------------------------------------
  // A job's effective priority rises one level per aging_s seconds since its arrival, capped
  // at the highest priority among unfinished jobs: a low-priority job under a stream of
  // high-priority ones eventually ties with them and then wins by arrival. 0 = no aging.
  double aging_s = 10.0;
  std::vector<tenant_config> tenants;
  tenant_config default_tenant;  // name ignored

  // ---- routing ---------------------------------------------------------------------------
  // A queued job goes to the replica whose prefix cache holds the longest prefix of its
  // prompt unless that replica's load exceeds affinity_load_factor x (the least-loaded
  // replica's load + max_step_tokens); otherwise to the least-loaded replica. Load = running
  // sequences + their prefill tokens still to compute. A replica passes over a request meant
  // for another only while that one has a free slot and KV room for it, and for at most
  // affinity_wait_s since the request entered the queue (the driver is expected to call
  // schedule() on every replica below its in-flight limit after each submit/result).
  double affinity_load_factor = 2.0;
  double affinity_wait_s = 1.0;

  // ---- admission by SLO (off unless both are > 0) ----------------------------------------
  // Predicted TTFT = (queued prefill tokens + this prompt) / (prefill_tokens_per_s x replicas).
  double ttft_slo_s = 0.0;
  double prefill_tokens_per_s = 0.0;

  bool trace = false;  // record every decision as JSONL (take_trace())

  // ---- async scheduling ----------------------------------------------------------------
  // Steps a replica may have planned and not answered. 1: plan, wait for the result, plan
  // again. 2: the next step is planned while one runs, so the worker finds it queued when
  // it finishes and the control loop's round trip leaves the critical path (vLLM V1's
  // async scheduling, SGLang's overlap scheduler). A sequence whose in-flight work samples
  // then gets a decode of seq_work::feed_last_sampled in the next step; the tokens of work
  // planned after a sequence finished (EOS, stop id) are dropped when their result comes.
  int32_t max_inflight_steps = 1;
};

// The answer to submit(): accepted, or an error of a kind (failed / overloaded) with a
// message naming the field.
struct admission {
  bool accepted = true;
  error_info error;
};

// A step planned for one replica. The plan's seq ids are request ids.
struct planned_step {
  uint32_t replica = 0;
  step_plan plan;
};

// One replica's KV accounting, for tests, metrics and the simulator.
struct replica_stats {
  int64_t total_blocks = 0;
  int64_t free_blocks = 0;    // never used or evicted
  int64_t used_blocks = 0;    // referenced by at least one sequence
  int64_t cached_blocks = 0;  // unreferenced prefix blocks kept for reuse (evicted LRU first)
  int64_t host_blocks_used = 0;
  size_t running = 0;  // sequences holding device blocks
  size_t swapped = 0;
  uint64_t prefix_hit_tokens = 0;  // prompt tokens skipped thanks to the prefix cache
  uint64_t preemptions = 0;
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
  // The replica is being drained (its worker is stopping): no new request is admitted or
  // routed there; its running sequences keep running there until they finish. Unknown ids
  // are ignored. Drivers remove it once stats(id) shows nothing running or swapped.
  void drain_replica(uint32_t id, double now);

  admission submit(request r, double now);
  // Ends the request (finish reason cancelled) and frees its blocks at once; reported
  // through take_events(). Unknown ids are ignored. A result still in flight for it is
  // ignored when it arrives.
  void cancel(uint64_t id, double now);

  // Plans the next step for a replica with fewer than max_inflight_steps steps in flight;
  // nullopt when there is nothing to run there (or the replica is unknown, or at its limit).
  // Drivers call it for every replica below its limit after anything changed (submit, a
  // result, cancel, a replica added or removed) and after sending a plan. The replica must
  // execute its plans in the order they were planned.
  std::optional<planned_step> schedule(uint32_t replica, double now);
  // Applies a replica's step result; returns the events of the requests it touched (one
  // per sampled token; a prefill chunk that does not sample produces none). Results come in
  // plan order. A result from a removed replica is ignored; one that does not match the
  // oldest step in flight throws troupe::error (failed, field step_id or outputs) and
  // changes nothing. Outputs for requests finished, cancelled or preempted since the step
  // was planned are dropped.
  std::vector<request_event> on_result(uint32_t replica, const step_result& result, double now);
  // Events produced outside a step (cancellation, requests failed by remove_replica).
  std::vector<request_event> take_events();

  size_t queued() const;
  size_t running() const;  // sequences bound to a replica (swapped ones included)

  // ---- additions for tests, metrics and the simulator ----------------------------------
  std::optional<replica_stats> stats(uint32_t replica) const;
  // Checks every bookkeeping invariant (no block leaked or held twice, tables cover their
  // positions, counts agree); returns an empty string when all hold, else what broke.
  std::string check_invariants() const;
  // The JSONL trace recorded since the last call (policy_config::trace); see trace.h.
  std::string take_trace();
  // Tells `o` every decision from now on (policy_observer.h), after the trace writer and
  // earlier observers; `o` must outlive the policy.
  void add_observer(policy_observer& o);

 private:
  struct impl;
  impl* impl_;
};

}  // namespace troupe::sched
