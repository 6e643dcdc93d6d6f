// Sampling parameters of one job: a plain value type.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
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
  // OpenAI's logit_bias: (token id, bias in [-100, 100]) added to the logits before
  // penalties are reported and tokens drawn; ids outside the vocabulary are ignored.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // No id of end_ids (the gateway puts the model's EOS ids and stop_ids there) is drawn before
  // min_tokens tokens are generated.
  int32_t min_tokens = 0;
  std::vector<int32_t> end_ids;
};

// Checks ranges; returns an empty string when valid, else "field: what was expected".
inline std::string validate(const sampling_params& p) {
  auto bad = [](const char* field, const std::string& expected, double got) {
    return std::string(field) + ": expected " + expected + ", got " + std::to_string(got);
  };
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) return bad("temperature", ">= 0", p.temperature);
  if (p.top_k < 0) return bad("top_k", ">= 0 (0 = off)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p", "a value in (0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p < 1.0f)) return bad("min_p", "a value in [0, 1)", p.min_p);
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    return bad("repetition_penalty", "> 0 (1 = off)", p.repetition_penalty);
  if (p.repeat_window < 0) return bad("repeat_window", ">= 0", p.repeat_window);
  if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 2.0f)
    return bad("frequency_penalty", "a value in [-2, 2]", p.frequency_penalty);
  if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 2.0f)
    return bad("presence_penalty", "a value in [-2, 2]", p.presence_penalty);
  if (p.max_tokens <= 0) return bad("max_tokens", "> 0", p.max_tokens);
  if (p.top_logprobs < 0 || p.top_logprobs > 20) return bad("top_logprobs", "a value in [0, 20]", p.top_logprobs);
  for (const auto& [id, bias] : p.logit_bias)
    if (!(bias >= -100.0f && bias <= 100.0f)) return bad("logit_bias", "biases in [-100, 100]", bias);
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens)
    return bad("min_tokens", "a value in [0, max_tokens = " + std::to_string(p.max_tokens) + "]", p.min_tokens);
  for (size_t i = 0; i < p.stop_strings.size(); ++i)
    if (p.stop_strings[i].empty()) return "stop_strings[" + std::to_string(i) + "]: expected a non-empty string";
  return {};
}

}  // namespace troupe
