// Synthetic Llama models: a preset's shape, seeded random weights and a SentencePiece-style
// vocabulary, for tests and benchmarks where a real model's numbers do not matter.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "src/model/model_export.h"
#include "troupe/model.h"

namespace troupe {

// "tiny" (dim 64, 2 layers), "110m" (llama2.c's stories110M shape) or "1b" (Llama 3.2 1B shape).
model_config synth_preset(const std::string& name);

// The preset's shape with the vocabulary size of `tokenizer` (a real one, e.g. Llama 3's
// 128,256 tokens: with the tiny preset the embedding tables are most of the file).
model_config synth_preset(const std::string& name, const tokenizer_data& tokenizer);

// Makes `config` an `arch` model (llama, mistral, qwen2, qwen3): its options (Qwen2's q/k/v
// biases, Qwen3's q/k norms, Mistral's sliding window of min(4096, context / 2)), RoPE
// layout, theta and norm epsilon as those families ship them. Throws for another name.
void apply_arch(model_config& config, const std::string& arch);

// <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then generated pieces up to `vocab`.
tokenizer_data synth_vocab(int64_t vocab);

// The model's tensors in GGUF order: matrices ~ normal(0, 0.02) stored as `dtype`
// (f16 where q types cannot store them), norms 1 in f32. Row r of a tensor depends only
// on (seed, name, r), so a test can regenerate any value.
std::vector<tensor_source> synth_tensors(const model_config& config, troupe_dtype dtype, uint64_t seed);

}  // namespace troupe
