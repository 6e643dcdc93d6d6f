// Single-process generation over a worker backend: the loop behind `troupe generate` and
// the end-to-end tests. The scheduling policy decides every step (prefill in chunks,
// batched decode of every prompt together, KV blocks) through the policy driver, as in the
// cluster, with the backend as its one replica and one step in flight.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "src/model/tokenizer.h"
#include "troupe/model.h"
#include "troupe/sampling.h"

namespace troupe {

struct generation_request {
  std::string prompt;
  std::vector<int32_t> prompt_ids;  // used instead of tokenizing `prompt` when not empty
  sampling_params sampling;
};

struct generation_output {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;   // generated, including a final EOS or stop id
  std::string text;           // generated text, without EOS and without a matched stop string
  std::string finish_reason;  // "stop" (EOS, stop id, stop string) or "length" (max_tokens, context)
};

struct generation_timings {
  double load_ms = 0.0;     // filled by the caller, who loaded the model
  double prefill_ms = 0.0;  // steps that consumed prompts (they also sample each first token)
  double decode_ms = 0.0;   // steps of one new token per sequence
  // Tokens by kind of work: prompt chunks (and recomputation after a preemption) versus one
  // token after the prompt, even in a prefill step that carries some decodes along.
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  double prefill_tok_s() const { return prefill_ms > 0 ? prefill_tokens * 1000.0 / prefill_ms : 0.0; }
  double decode_tok_s() const { return decode_ms > 0 ? decode_tokens * 1000.0 / decode_ms : 0.0; }
};

struct generate_options {
  int64_t max_batch_tokens = 512;  // tokens per step: prefill chunks are cut to fit
  int64_t max_seq_len = 0;         // context limit (prompt + generated); 0 = none
};

// Called with each piece of text as soon as it is final (whole UTF-8 characters, never part
// of a stop string), with the index of the request it belongs to.
using text_callback = std::function<void(size_t request, std::string_view text)>;

// Generates for every request at once, in one batch. Throws troupe::error(failed) for an
// invalid request (sampling parameters, empty prompt, a prompt that fills the context) and
// troupe::error(overloaded) when the backend's KV pool can never hold a request (prompt +
// max_tokens, within the context) or the next step of those left.
std::vector<generation_output> generate(worker_backend& backend, const tokenizer& tok,
                                        const std::vector<generation_request>& requests, const generate_options& opt,
                                        const text_callback& on_text = {}, generation_timings* timings = nullptr);

}  // namespace troupe
