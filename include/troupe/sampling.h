// Sampling parameters of one job: a plain value type.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

struct sampling_params {
  float temperature = 0.0f;         // 0 = greedy
  int32_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // (0, 1]; 1 = off
  float min_p = 0.0f;               // [0, 1); 0 = off
  float repetition_penalty = 1.0f;  // llama.cpp style, over the last repeat_window tokens; 1 = off
  int32_t repeat_window = 64;
  float frequency_penalty = 0.0f;  // OpenAI style, over generated tokens
  float presence_penalty = 0.0f;
  uint64_t seed = 0;  // same seed, same output
  int32_t max_tokens = 256;
  std::vector<int32_t> stop_ids;  // in addition to the model's EOS
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;
  int32_t top_logprobs = 0;  // number of alternatives to report per token (0..20)
};

// Checks ranges; returns an empty string when valid, else "field: what was expected".
std::string validate(const sampling_params& p);

}  // namespace troupe
