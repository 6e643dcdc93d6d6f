// What the model loaders share: the one model_file implementation they all fill, the
// checks every format goes through, and the per-format entry points open_model() picks from.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "troupe/model.h"

namespace troupe {

// A model_file whose views point into `resources` (memory maps, parsed files) or into
// `buffers` (tensors the loader had to convert, such as f16 norms to f32).
class loaded_model final : public model_file {
 public:
  const std::string& path() const override { return path_; }
  const model_config& config() const override { return config_; }
  const model_weights& weights() const override { return weights_; }
  const tokenizer_data& tokenizer() const override { return tokenizer_; }
  std::string format() const override { return format_; }

  std::string path_;
  std::string format_;
  model_config config_;
  model_weights weights_;
  tokenizer_data tokenizer_;
  std::vector<std::shared_ptr<const void>> resources;
  std::vector<std::unique_ptr<float[]>> buffers;

  // Points `t` at an owned f32 copy of its data (any supported dtype), keeping its name and shape.
  void convert_to_f32(tensor_view& t);
};

// Checks every tensor's shape and dtype against `config` (norms must already be f32) and
// the config's own consistency; throws naming `path`, the tensor and the expected shape.
void validate_model(const std::string& path, const model_config& config, const model_weights& weights);

// Every token id the tokenizer can produce must index the embedding table (vocab_size rows).
void validate_tokenizer(const std::string& path, const model_config& config, const tokenizer_data& tokenizer);

// Llama 3 rope scaling's per-frequency divisors (head_dim/2 of them), as stored in a
// GGUF rope_freqs tensor; all ones when scaling is off.
std::vector<float> llama3_rope_factors(const model_config& config);

std::unique_ptr<model_file> open_gguf(const std::string& path);
std::unique_ptr<model_file> open_llama2c(const std::string& path, const std::string& tokenizer_path);
std::unique_ptr<model_file> open_hf_directory(const std::string& path);

}  // namespace troupe
