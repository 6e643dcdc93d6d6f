// Token selection on the device: argmax (greedy) and temperature / top-k / top-p / min-p
// sampling, without sorting the vocabulary.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace troupe::kern::cuda {

// Per-row parameters of invoke_sample (a plain struct copied to the device).
struct sample_row_params {
  float temperature;  // > 0; rows with temperature <= 0 are left untouched (use argmax)
  int32_t top_k;      // 0 = off
  float top_p;        // (0, 1]; 1 = off
  float min_p;        // [0, 1); 0 = off
  float uniform;      // the row's random draw in [0, 1)
};

// ids (n_rows), logprobs (n_rows) = the largest logit of each row of logits (n_rows, vocab)
// (first index on ties) and its log-probability under softmax(logits / temperature).
void invoke_argmax(int32_t* ids, float* logprobs, const float* logits, int64_t n_rows, int64_t vocab,
                   cudaStream_t stream, float temperature = 1.0f);

// For each row with temperature > 0: keeps the tokens that pass top_k, top_p and min_p
// (ties at a threshold are kept), and draws one with probability proportional to
// exp(logit / temperature) using `uniform`, walking tokens from the highest logit down as
// src/engine/sampler.cpp does (same draw up to float rounding at boundaries). logprobs gets
// the chosen token's log-probability under softmax(logits) (temperature 1, unfiltered).
// params (n_rows) on the device.
void invoke_sample(int32_t* ids, float* logprobs, const float* logits, const sample_row_params* params, int64_t n_rows,
                   int64_t vocab, cudaStream_t stream);

}  // namespace troupe::kern::cuda
