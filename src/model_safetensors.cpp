// Hugging Face directories: config.json, safetensors weights, tokenizer.json.
#include "src/model_loaders.h"
#include "troupe/error.h"

namespace troupe {

std::unique_ptr<model_file> open_hf_directory(const std::string& path) {
  throw error(error_kind::unimplemented, path + ": Hugging Face directories are not built yet");
}

}  // namespace troupe
