// Reading the shared models' reference runs (reference/*.ids.txt and *.logits.f32).
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace troupe::test {

struct reference_run {
  std::vector<int32_t> prompt_ids, generated_ids;
  std::string text;  // prompt and generated text; the rest of the file after "text: "
};

inline reference_run read_reference(const std::filesystem::path& p) {
  std::ifstream in(p);
  reference_run r;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (key == "text:") {
      r.text = line.substr(6);
      for (std::string more; std::getline(in, more);) r.text += "\n" + more;
      break;
    }
    std::vector<int32_t>* dst = key == "prompt_ids:"      ? &r.prompt_ids
                                : key == "generated_ids:" ? &r.generated_ids
                                                          : nullptr;
    if (!dst) continue;
    for (int32_t id; ls >> id;) dst->push_back(id);
  }
  return r;
}

// (rows, cols) float32 little-endian, flattened
inline std::vector<float> read_floats(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> f(bytes.size() / 4);
  std::memcpy(f.data(), bytes.data(), f.size() * 4);
  return f;
}

}  // namespace troupe::test
