// The worker's side of async scheduling. The scheduler may plan step N+1 for a replica
// while step N is still running there; a sequence that samples a token in step N then
// gets, in step N+1, a decode whose token is a placeholder (seq_work::feed_last_sampled):
// "the token you sampled for this sequence in your previous step". A worker executes its
// plans strictly in order, so that token is known by the time N+1 starts.
//
// The worker remembers the tokens its last step sampled and nothing older: the scheduler
// only plans a placeholder for a sequence whose sampling work is in the step planned just
// before (sched::policy), so what a sequence that stops appearing (finished, cancelled,
// preempted, moved) left behind is forgotten one step later without being told.
#pragma once
#include <cstdint>
#include <unordered_map>

#include "troupe/step.h"

namespace troupe {

class step_resolver {
 public:
  // Writes the remembered token into each placeholder's tokens[0] and, for full work,
  // appends it to its history (penalties, the sampling draw); a diff's cached history has
  // it already. Throws troupe::error(failed, field tokens) when
  // the previous step sampled nothing for such a sequence.
  void resolve(step_plan& plan) const;
  // Remembers what `result` (of `plan`) sampled, forgetting the step before.
  void remember(const step_result& result);
  // Forgets everything (a failed step: the scheduler re-plans these sequences elsewhere).
  void clear() { last_.clear(); }

 private:
  std::unordered_map<uint64_t, int32_t> last_;  // seq id -> token sampled in the last step
};

}  // namespace troupe
