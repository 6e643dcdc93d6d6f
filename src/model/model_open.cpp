// open_model(): picks the loader from what the path is.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "src/model/gguf.h"
#include "src/model/model_loaders.h"
#include "troupe/error.h"

namespace troupe {

std::unique_ptr<model_file> open_model(const std::string& path, const std::string& tokenizer_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return open_hf_directory(path);
  if (!fs::exists(path, ec)) throw error(error_kind::failed, path + ": no such file or directory", path);
  char head[4] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(head, 4);
  if (in.gcount() == 4 && std::memcmp(head, "GGUF", 4) == 0) return open_gguf(path);
  if (path.ends_with(".gguf")) return open_gguf(path);  // reports the bad magic
  if (path.ends_with(".bin")) return open_llama2c(path, tokenizer_path);
  throw error(error_kind::failed,
              path +
                  ": unknown model format (expected a .gguf file, a llama2.c .bin checkpoint or a Hugging Face "
                  "directory with config.json)",
              path);
}

}  // namespace troupe
