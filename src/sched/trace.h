// The step trace: every decision of a policy, one JSON object per line (JSONL), so a run
// recorded with the real clock can be replayed through sim/ and checked decision by decision.
//
// Lines ("ev" field):
//   config         {policy_config's fields}          (the first line: the policy that decided)
//   add_replica    {t, replica, kv_blocks, block_size, max_batch, host_kv_blocks, model?}
//   remove_replica {t, replica}
//   drain_replica  {t, replica}
//   submit         {t, id, tenant, priority, prompt, max_tokens, eos_ids, stop_ids, ignore_eos,
//                   accepted, kind?, field?, model?} (enough to resubmit the same request)
// model? is written only when not empty, so traces without models (the simulator's, older
// ones) replay unchanged.
//   cancel         {t, id, freed}
//   step           {t, replica, step, seqs: [{id, n, pos, sample, alloc}], admitted, preempted,
//                   swapped_out, swapped_in, freed}  (one per schedule() that changed anything)
//   result         {t, replica, step, out: [[id, token]], finished: [[id, reason]], freed}
// Block ids in alloc/freed are the replica's physical ids; freed lists blocks whose last
// reference went away (they became free or cached).
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "src/sched/policy.h"
#include "src/sched/policy_observer.h"

namespace troupe::sched {

// Writes the trace: the config line when made, then one line per decision it is told.
class trace_writer : public policy_observer {
 public:
  explicit trace_writer(const policy_config& cfg);
  std::string take() { return std::exchange(text_, {}); }  // the lines written since the last call

  void on_add_replica(double t, const replica_info& r) override;
  void on_remove_replica(double t, uint32_t replica) override;
  void on_drain_replica(double t, uint32_t replica) override;
  void on_submit(double t, const request& r, const admission& a) override;
  void on_cancel(double t, uint64_t id, const std::vector<int32_t>& freed) override;
  void on_step(const step_decision& s) override;
  void on_result(double t, uint32_t replica, const step_result& r,
                 const std::vector<std::pair<uint64_t, finish_reason>>& finished,
                 const std::vector<int32_t>& freed) override;

 private:
  std::string text_;
};

// Compares two traces line by line as JSON values (formatting aside); returns an empty
// string when they match, else the first difference with its line number. With
// decisions_only, only the step lines are compared, without their times: two runs driven
// by different clocks (a recorded run and sim/) that made the same decisions match.
std::string compare_traces(std::istream& a, std::istream& b, bool decisions_only = false);

// A recorded run's inputs and outcomes, for sim/ to rebuild its workload: arrivals (every
// submit line, accepted or not, with the request as submitted), cancels and finishes.
struct trace_arrival {
  double t = 0;
  request req;
  bool accepted = true;
};
struct trace_finish {
  double t = 0;
  uint64_t id = 0;
  finish_reason reason = finish_reason::none;  // cancelled for cancel lines
};
struct trace_events {
  std::vector<trace_arrival> arrivals;
  std::vector<trace_finish> finishes;
};
// Throws troupe::error naming the line when a line is not a trace event.
trace_events read_trace_events(std::istream& trace);

// Feeds a recorded trace's inputs (replicas, arrivals, cancels, the step calls with their
// times and the recorded step results) to a fresh policy, with tracing on, and compares its
// decisions with the recorded ones. The policy is built from the trace's config line when it
// has one and use_recorded_config is set (then cfg is ignored), else from cfg.
struct replay_report {
  bool same = true;
  size_t lines = 0;              // lines replayed
  std::string difference;        // the first difference, when !same
  bool recorded_config = false;  // the policy came from the trace's config line
};
replay_report replay(std::istream& trace, policy_config cfg, bool use_recorded_config = true);

}  // namespace troupe::sched
