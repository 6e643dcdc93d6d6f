// The step trace: every decision of a policy, one JSON object per line (JSONL), so a run
// recorded with the real clock can be replayed through sim/ and checked decision by decision.
//
// Lines ("ev" field):
//   add_replica    {t, replica, kv_blocks, block_size, max_batch}
//   remove_replica {t, replica}
//   submit         {t, id, tenant, priority, prompt, max_tokens, eos_ids, stop_ids, ignore_eos,
//                   accepted, kind?, field?}        (enough to resubmit the same request)
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

namespace troupe::sched {

struct trace_seq {
  uint64_t id = 0;
  int32_t n = 0;  // tokens fed
  int32_t start_pos = 0;
  bool sample = true;
  std::vector<int32_t> alloc;  // blocks newly added to its table this step
};

struct trace_step {
  double t = 0;
  uint32_t replica = 0;
  uint64_t step = 0;
  std::vector<trace_seq> seqs;
  std::vector<uint64_t> admitted, preempted, swapped_out, swapped_in;
  std::vector<int32_t> freed;
};

const char* to_string(finish_reason r);

std::string trace_add_replica(double t, const replica_info& r);
std::string trace_remove_replica(double t, uint32_t replica);
std::string trace_submit(double t, const request& r, const admission& a);
std::string trace_cancel(double t, uint64_t id, const std::vector<int32_t>& freed);
std::string trace_step_line(const trace_step& s);
std::string trace_result(double t, uint32_t replica, const step_result& r,
                         const std::vector<std::pair<uint64_t, finish_reason>>& finished,
                         const std::vector<int32_t>& freed);

// Compares two traces line by line as JSON values (formatting aside); returns an empty
// string when they match, else the first difference with its line number.
std::string compare_traces(std::istream& a, std::istream& b);

// Feeds a recorded trace's inputs (replicas, arrivals, cancels, the step calls with their
// times and the recorded step results) to a fresh policy built from cfg, with tracing on,
// and compares its decisions with the recorded ones.
struct replay_report {
  bool same = true;
  size_t lines = 0;        // lines replayed
  std::string difference;  // the first difference, when !same
};
replay_report replay(std::istream& trace, policy_config cfg);

}  // namespace troupe::sched
