// What the policy tells an observer at each decision: the JSONL trace writer (trace.h) is
// one; metrics or a debugger could be others. Observers see decisions after they are made
// and cannot change them. Every call carries the time of the public call that decided.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "src/sched/policy.h"

namespace troupe::sched {

// One sequence's work in a planned step.
struct seq_decision {
  uint64_t id = 0;
  int32_t n = 0;  // tokens fed
  int32_t start_pos = 0;
  bool sample = true;
  std::vector<int32_t> alloc;  // blocks newly added to its table this step
};

// What one schedule() decided; reported only when it changed anything (planned work or
// preempted a sequence).
struct step_decision {
  double t = 0;
  uint32_t replica = 0;
  uint64_t step = 0;
  std::vector<seq_decision> seqs;
  std::vector<uint64_t> admitted, preempted, swapped_out, swapped_in;
  std::vector<int32_t> freed;  // blocks whose last reference went away (now free or cached)
};

class policy_observer {
 public:
  virtual ~policy_observer() = default;
  virtual void on_add_replica(double /*t*/, const replica_info&) {}
  virtual void on_remove_replica(double /*t*/, uint32_t /*replica*/) {}
  virtual void on_drain_replica(double /*t*/, uint32_t /*replica*/) {}
  // Every submit, accepted or not; `r` as submitted.
  virtual void on_submit(double /*t*/, const request& /*r*/, const admission&) {}
  virtual void on_cancel(double /*t*/, uint64_t /*id*/, const std::vector<int32_t>& /*freed*/) {}
  virtual void on_step(const step_decision&) {}
  virtual void on_result(double /*t*/, uint32_t /*replica*/, const step_result&,
                         const std::vector<std::pair<uint64_t, finish_reason>>& /*finished*/,
                         const std::vector<int32_t>& /*freed*/) {}
};

}  // namespace troupe::sched
