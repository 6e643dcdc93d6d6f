// Checks a step plan against what a backend holds, before any work: shared by the CPU and
// CUDA backends so that both reject the same plans with the same messages.
#pragma once
#include <cstdint>

#include "troupe/step.h"

namespace troupe {

struct step_limits {
  int64_t vocab_size = 0;
  int64_t n_blocks = 0;  // KV blocks in the pool
  int32_t block_size = 0;
  int64_t max_batch_tokens = 0;  // new tokens per step
  int64_t max_positions = 0;     // 0 = unbounded; else start_pos + tokens may not exceed it
  int64_t max_seqs = 0;          // 0 = unbounded
  int64_t n_host_blocks = 0;     // slots in the host pool that swap copies may name
};

// Throws plan_rejected (troupe/step.h) naming the step, the sequence and the field: empty work,
// negative start, a block table too short or naming blocks outside the pool, token ids
// outside the vocabulary, invalid sampling parameters, a step over the limits, or a swap copy
// naming a device block or host slot outside its pool (field swap_out or swap_in).
// plan_rejected::seqs() holds the sequence at fault, or for a step over a limit those from
// the one that crosses it to the end; a bad swap copy names none.
void check_step_plan(const step_plan& plan, const step_limits& limits);

}  // namespace troupe
