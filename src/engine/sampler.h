// Turning one sequence's logits into its next token, from the sampling parameters and
// the history that travel with the sequence's work (so any worker samples the same way).
#pragma once
#include <cstdint>
#include <span>

#include "troupe/kernel_abi.h"
#include "troupe/step.h"

namespace troupe {

// The pipeline, in this order:
//   0. logit_bias (OpenAI) added; while fewer than min_tokens tokens are generated, end_ids
//      (EOS and stop ids) at -infinity;
//   1. repetition penalty (llama.cpp): each distinct id among the last repeat_window tokens
//      of history has its logit divided by the penalty when positive, multiplied when not;
//   2. frequency and presence penalties (OpenAI): over generated tokens only (history after
//      n_prompt), logit -= count * frequency_penalty + (count > 0) * presence_penalty;
//   3. temperature 0: the argmax (lowest id on ties), no randomness;
//   4. otherwise logits / temperature, then top-k, top-p (smallest set reaching p), min-p
//      (drop p < min_p * p_max), renormalize and draw.
// The draw uses a generator seeded by (seed, tokens generated so far = history.size() -
// n_prompt) only, so a sequence resumed on another worker continues the same way.
//
// logprob and top alternatives are the log-softmax of the penalized logits at temperature 1
// (after step 2, before temperature and filtering), for greedy and sampled tokens alike: the
// model's own view of the token, finite even for a token a filter would have removed.
//
// The greedy choice and the log-partition run on `kernels.argmax` (a TROUPE_OP_ARGMAX
// variant: the backends pass the registry's selected CPU one) in `kernels.ctx`; without it,
// on the reference variant (kern::ref::argmax, scalar sums in double), which costs about
// 100 us a token over a 32k vocabulary, a tenth of a small model's decode step.
struct sampler_kernels {
  troupe_argmax_fn argmax = nullptr;
  const troupe_kctx* ctx = nullptr;
};
seq_output sample_next(std::span<const float> logits, const seq_work& work, const sampler_kernels& kernels = {});

// Whether a logit bias, min_tokens or the repetition, frequency or presence penalty changes
// any logit.
bool has_penalties(const sampling_params& p);

// The uniform draw in [0, 1) used for token number `n_generated` of a sequence with `seed`.
double sampling_uniform(uint64_t seed, int64_t n_generated);

}  // namespace troupe
