// The worker's side of plans as diffs (seq_work::diff). The scheduler sends a sequence in
// full (block table, sampling parameters, history) the first time it runs on a worker and
// afterwards only what is new: the tokens to feed and the block ids appended to its table.
// This cache keeps the rest per sequence, extends each history with the tokens the backend
// samples (the worker knows them first), and drops a sequence when a plan lists it in
// step_plan::released, before that plan's work. Plans must come in the order they were sent.
//
// It sits below any tensor-parallel relay: worker_core uses one in front of a plain backend,
// a tp_group_leader uses one in front of its local backend after relaying the plan, and every
// follower rank keeps its own, so the relay broadcasts diffs and each rank expands them.
// Expansion moves the cached vectors into the plan the backend runs and back after, so a
// long history is never copied per step.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "troupe/model.h"
#include "troupe/step.h"

namespace troupe {

class seq_cache {
 public:
  // Drops the released sequences, expands `plan` into full work, runs it on `backend` and
  // records what it sampled. Throws troupe::error(failed, field seqs) for a diff of a
  // sequence the cache does not hold; on any throw the cache is emptied (the scheduler takes
  // a worker whose step failed out of service and resumes its sequences elsewhere, in full).
  step_result step(worker_backend& backend, const step_plan& plan);
  void clear() { seqs_.clear(); }
  size_t size() const { return seqs_.size(); }
  // The cached history of a sequence (tests), or nullptr.
  const std::vector<int32_t>* history(uint64_t seq_id) const;

 private:
  struct entry {
    std::vector<int32_t> history;  // prompt + every token sampled so far
    std::vector<int32_t> table;    // the whole block table
    sampling_params sampling;
    int32_t n_prompt = 0;
    uint64_t run = 0;  // the last run() that expanded it: one work per sequence and plan
  };
  step_result run(worker_backend& backend, const step_plan& plan);

  std::unordered_map<uint64_t, entry> seqs_;
  uint64_t run_ = 0;
  step_plan expanded_;           // reused: what the backend runs
  std::vector<entry*> of_work_;  // (plan.seqs) the entry of each work
};

}  // namespace troupe
