// Writes GGUF v3 files: metadata, then the tensor directory, then tensor data streamed in
// the order the tensors were declared (so a large model never sits in memory at once).
// Data is aligned to 32 bytes, GGUF's default alignment.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "src/model/gguf.h"

namespace troupe {

class gguf_writer {
 public:
  explicit gguf_writer(std::string path);
  ~gguf_writer();
  gguf_writer(const gguf_writer&) = delete;
  gguf_writer& operator=(const gguf_writer&) = delete;

  // Before begin_data(): metadata (file order, a repeated key replaces the earlier value)
  // and tensors, `ne` in GGML order (ne[0] = columns).
  void set(const std::string& key, gguf::value v);
  void add_tensor(const std::string& name, troupe_dtype dtype, std::vector<int64_t> ne);

  // Writes the header. Then each tensor's bytes, in declaration order, through any
  // number of write_data() calls; finish() checks that all of them came and closes.
  void begin_data();
  void write_data(const void* data, size_t n);
  void finish();

  const std::string& path() const { return path_; }

 private:
  void write_bytes(const void* p, size_t n);
  void pad_to_alignment();

  struct pending_tensor {
    std::string name;
    troupe_dtype dtype;
    std::vector<int64_t> ne;
    uint64_t offset = 0;
    uint64_t nbytes = 0;
  };
  std::string path_;
  std::FILE* out_ = nullptr;
  uint64_t written_ = 0;  // bytes so far
  std::vector<std::pair<std::string, gguf::value>> kv_;
  std::vector<pending_tensor> tensors_;
  size_t current_ = 0;         // tensor receiving data
  uint64_t current_done_ = 0;  // its bytes so far
  bool header_written_ = false;
};

}  // namespace troupe
