// What a compression costs, in numbers: perplexity of a model over a text, and the
// divergence of a quantized model's token distributions from its base model's. The text
// is scored as llama.cpp's llama-perplexity scores it, so the figures sit side by side:
// chunks of `ctx` tokens, each starting with BOS (when the tokenizer adds one), and only the
// second half of each chunk scored (every scored token has at least ctx/2 of context).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace troupe {

struct quality_options {
  int64_t ctx = 512;       // tokens per chunk (at most the model's context)
  int64_t max_chunks = 0;  // 0: every whole chunk of the text
  int threads = 2;
  std::function<void(int64_t chunk, int64_t chunks)> progress;  // after each chunk
};

struct perplexity_result {
  double ppl = 0;      // exp(mean negative log-likelihood)
  double ppl_err = 0;  // its standard error (propagated from the NLL's)
  double nll = 0;      // mean negative log-likelihood, nats per token
  int64_t tokens = 0;  // tokens scored
  int64_t chunks = 0;
  int64_t text_tokens = 0;  // tokens in the whole text
};

struct compare_result {
  perplexity_result base, model;
  double kld_mean = 0, kld_p99 = 0, kld_max = 0;  // KL(base || model) per scored token, nats
  double top1 = 0;                                // share of scored tokens whose argmax agrees
};

// The text's ids under `model`'s tokenizer (BOS first when it adds one).
std::vector<int32_t> tokenize_text(const model_file& model, const std::string& text);

// Throws troupe::error (field "ctx" or "text") when the text holds no whole chunk or ctx
// exceeds the model's context.
perplexity_result perplexity(const model_file& model, const kernel_registry& registry, const std::vector<int32_t>& ids,
                             const quality_options& opt);

// Both models over the same ids (they must share a vocabulary: same tokenizer size).
compare_result compare_models(const model_file& base, const model_file& model, const kernel_registry& registry,
                              const std::vector<int32_t>& ids, const quality_options& opt);

}  // namespace troupe
