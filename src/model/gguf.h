// GGUF (versions 2 and 3): the metadata key/value store and tensor directory of a
// memory-mapped file. Tensor data are views into the map, never copied. Every offset and
// size read from the file is checked against the file's size before it is used.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "src/model/mmap_file.h"
#include "troupe/kernel_abi.h"

namespace troupe::gguf {

constexpr uint32_t magic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint64_t default_alignment = 32;

enum class value_type : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
std::string_view to_string(value_type t);
bool is_integer(value_type t);
bool is_float(value_type t);

// One metadata value. Scalars: integers (and booleans) in `i` (a u64 keeps its bits),
// floats in `f`, a string in `str`. Arrays of `elem` hold their items in `ints`, `floats`,
// `strs` or, for arrays of arrays, `items`.
struct value {
  value_type type = value_type::u32;
  value_type elem = value_type::u32;  // arrays only
  int64_t i = 0;
  double f = 0.0;
  std::string str;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strs;
  std::vector<value> items;

  size_t array_size() const;
  std::string describe() const;  // type and a short rendering, for `model inspect`

  static value of_u32(uint32_t v);
  static value of_i32(int32_t v);
  static value of_u64(uint64_t v);
  static value of_f32(float v);
  static value of_bool(bool v);
  static value of_string(std::string v);
  static value of_strings(std::vector<std::string> v);
  static value of_f32s(std::vector<float> v);
  static value of_i32s(std::vector<int32_t> v);
};

// Whether a GGUF tensor type id is one troupe computes with (F32, F16, BF16, Q8_0, Q4_0),
// and GGML's name of any type id ("q4_k"), for errors.
bool is_supported_type(uint32_t ggml_type);
std::string type_name(uint32_t ggml_type);
// Bytes of a tensor of `ne` elements per row (ne[0]) times the other dims, in a supported type.
uint64_t tensor_bytes(troupe_dtype t, const std::vector<int64_t>& ne);

struct tensor_info {
  std::string name;
  std::vector<int64_t> ne;  // GGML order: ne[0] is the innermost (columns)
  troupe_dtype dtype = TROUPE_F32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the map

  int64_t cols() const { return ne.empty() ? 1 : ne[0]; }
  int64_t rows() const;  // product of ne[1..]
};

class file {
 public:
  // Maps and parses `path`; throws troupe::error naming the file and what was wrong.
  explicit file(const std::string& path);

  const std::string& path() const { return map_->path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return map_->size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, value>>& metadata() const { return kv_; }
  const value* find(std::string_view key) const;
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  const tensor_info* find_tensor(std::string_view name) const;

  // Typed reads; `get_*` throw when the key is missing or of another type, `opt_*` return
  // nothing when the key is missing but still throw on a wrong type.
  uint64_t get_uint(std::string_view key) const;
  std::optional<uint64_t> opt_uint(std::string_view key) const;
  std::optional<double> opt_float(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::optional<std::string> opt_string(std::string_view key) const;
  std::optional<bool> opt_bool(std::string_view key) const;
  // An array of `elem` kind: "string", "integer" or "float"; throws if absent or of another kind.
  const value& get_array(std::string_view key, std::string_view elem) const;

  [[noreturn]] void fail(const std::string& what, const std::string& field = {}) const;

 private:
  void parse();

  std::unique_ptr<mapped_file> map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = default_alignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, value>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<tensor_info> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace troupe::gguf
