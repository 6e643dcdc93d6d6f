// The seam between the scheduler and a worker: a step plan in, a step result out.
// As in vLLM, the scheduler owns every decision and all KV block bookkeeping; the
// worker owns the physical KV pool and executes the plan.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "troupe/error.h"
#include "troupe/sampling.h"

namespace troupe {

// One sequence's work in one step: a prefill chunk or one decode token.
//
// Plans as diffs: a sequence's first work on a worker (and its first after a preemption, a
// swap-in or a move) carries its whole state: block table, sampling parameters, history.
// Later work is a diff (`diff`): block_table lists only the blocks appended since its
// previous work, and sampling, history and n_prompt are not sent; the worker keeps them from
// the full work, extends the history with the tokens it samples, and drops them when a
// plan lists the sequence in step_plan::released (src/cluster/seq_cache.h). Backends only ever see
// full work.
struct seq_work {
  uint64_t seq_id = 0;
  std::vector<int32_t> tokens;       // new tokens to feed, positions start_pos.. start_pos+n-1
  int32_t start_pos = 0;             // position of tokens[0]; KV for [0, start_pos) is cached
  std::vector<int32_t> block_table;  // physical KV block ids covering [0, start_pos + n)
  bool sample = true;                // sample a token after the last fed one
  // Sampling state travels with the work so that any worker can resume a sequence:
  sampling_params sampling;
  std::vector<int32_t> history;  // prompt + generated so far (for penalties), may be empty
  int32_t n_prompt = 0;          // how many of history are the prompt
  // Async scheduling: tokens[0] (one token, written -1) stands for the token this worker
  // sampled for this sequence in its previous step, still unknown to the scheduler when it
  // planned this one; history lacks it too. The worker fills both in (see step_resolver.h).
  bool feed_last_sampled = false;
  bool diff = false;  // only what is new since this sequence's previous work on this worker
};

// One KV block moved between the worker's device pool and its host pool (preemption by
// swap): every layer's K and V rows of the block, on every rank of a worker group.
struct block_copy {
  int32_t device_block = 0;  // in [0, the backend's kv_blocks())
  int32_t host_slot = 0;     // in [0, the backend's host_blocks())
};

struct step_plan {
  uint64_t step_id = 0;
  // Sequences whose state the worker drops before this step's work (finished, cancelled,
  // preempted or moved since the previous plan to this worker); a work of this plan may
  // then send one of them again in full.
  std::vector<uint64_t> released;
  std::vector<seq_work> seqs;
  // Done before the step's compute, in this order: every swap_out, then every swap_in.
  std::vector<block_copy> swap_out;  // device block -> host slot (a preempted sequence)
  std::vector<block_copy> swap_in;   // host slot -> device block (a sequence coming back)
};

struct token_logprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

struct seq_output {
  uint64_t seq_id = 0;
  int32_t token = -1;  // -1 when the work had sample == false
  float logprob = 0.0f;
  std::vector<token_logprob> top;  // top alternatives when sampling.top_logprobs > 0
};

struct step_result {
  uint64_t step_id = 0;
  std::vector<seq_output> outputs;  // one per seq_work, same order
};

// What a backend (or the worker around it) throws for a plan it will not run, before doing any
// of it: `seqs` are the sequences whose work is at fault (over the step's token budget, a
// block outside the pool, a token outside the vocabulary). The scheduler fails those and
// re-plans the others on the same worker; an error naming none is the worker's own failure.
class plan_rejected : public error {
 public:
  plan_rejected(std::string message, std::string field, std::vector<uint64_t> seqs)
      : error(error_kind::failed, std::move(message), std::move(field)), seqs_(std::move(seqs)) {}
  const std::vector<uint64_t>& seqs() const noexcept { return seqs_; }

 private:
  std::vector<uint64_t> seqs_;
};

// The sequences of `plan` from the one whose tokens cross `max_tokens` to the end: those a
// worker with that step budget rejects (none when the plan fits, or max_tokens <= 0).
inline std::vector<uint64_t> over_step_budget(const step_plan& plan, int64_t max_tokens) {
  std::vector<uint64_t> out;
  if (max_tokens <= 0) return out;
  int64_t n = 0;
  for (const seq_work& w : plan.seqs)
    if ((n += static_cast<int64_t>(w.tokens.size())) > max_tokens) out.push_back(w.seq_id);
  return out;
}

}  // namespace troupe
