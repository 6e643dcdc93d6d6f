// Writing Llama models as GGUF: the llama.* and tokenizer.ggml.* metadata, and tensors
// produced row by row (converted to their stored type as they stream out), so that
// `model synth` and `model quantize` never hold a whole model in memory.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "src/model/gguf.h"
#include "troupe/model.h"

namespace troupe {

// One tensor to write: `rows` rows of `cols` values, each row produced in f32 by `row`
// and stored as `dtype`. rows == 1 with `one_dim` writes a 1-D tensor (norms).
struct tensor_source {
  std::string name;  // GGUF name, e.g. "blk.0.attn_q.weight"
  int64_t rows = 1;
  int64_t cols = 0;
  troupe_dtype dtype = TROUPE_F32;
  bool one_dim = false;
  std::function<void(int64_t row, float* out)> row;  // fills out(cols)
};

// Called after each tensor and every 16 MiB: the tensor being written, and bytes written so far
// out of the total.
using write_progress = std::function<void(const std::string& tensor, uint64_t done, uint64_t total)>;

// GGUF's general.architecture for a config: "llama" (Mistral too, with its sliding window
// key), "qwen2" or "qwen3".
std::string gguf_arch(const model_config& config);

// Writes a GGUF v3 of architecture gguf_arch(config) holding `config`, `tokenizer` and `tensors`;
// `extra` metadata is written last, replacing any key of the same name.
void write_llama_gguf(const std::string& path, const model_config& config, const tokenizer_data& tokenizer,
                      const std::vector<tensor_source>& tensors, const write_progress& progress = {},
                      const std::vector<std::pair<std::string, gguf::value>>& extra = {});

// The type a weight matrix of `cols` columns gets when `target` is asked for: q8_0/q4_0
// need cols % 32 == 0, else f16.
troupe_dtype storable_type(troupe_dtype target, int64_t cols);

// The tensors of `m` as GGUF expects them (names, RoPE layout), matrices stored as
// `target` (or f16 where storable_type says so; `note` hears about each such fallback),
// norms as f32. Views into `m`: it must outlive the write.
std::vector<tensor_source> gguf_tensors_of(const model_file& m, troupe_dtype target,
                                           const std::function<void(const std::string&)>& note = {});

// Llama 3 rope scaling's divisors as llama.cpp stores them: rope_freqs.weight, (head_dim/2) f32.
tensor_source rope_freqs_tensor(const model_config& config);

// Parses "f32", "f16", "bf16", "q8_0", "q4_0"; throws troupe::error otherwise.
troupe_dtype parse_dtype(const std::string& s);
const char* dtype_name(troupe_dtype t);

}  // namespace troupe
