// Element types, one table: GGML's type ids and names (what GGUF files carry), the block
// geometry of each type where Troupe or the simulator needs it, which types the engine
// runs (the troupe_dtype values of kernel_abi.h) and which the simulator prices. Every
// name-to-type, type-to-name and bytes-per-element question is answered here.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe::kern {

struct dtype_info {
  int id;                    // GGML type id (a troupe_dtype where `runs`); -1: priced by the simulator only
  std::string_view name;     // "q4_0"
  std::string_view aliases;  // other names the simulator accepts, space-separated ("fp16")
  int64_t block_elems;       // elements per block: 1 for plain types, 32 or 256 for quantized; 0 = not tabled
  int64_t block_bytes;       // bytes per block
  bool runs;                 // the engine loads, computes and writes it
  bool priced;               // the simulator's --weight-dtype / --kv-dtype accept it
};

// The engine's types first, in the order the CLI lists them; then the rest of GGML's ids.
inline constexpr dtype_info k_dtypes[] = {
    {TROUPE_F32, "f32", "fp32", 1, 4, true, true},
    {TROUPE_F16, "f16", "fp16", 1, 2, true, true},
    {TROUPE_BF16, "bf16", "", 1, 2, true, true},
    {TROUPE_Q8_0, "q8_0", "", 32, 34, true, true},  // f16 scale + 32 int8
    {TROUPE_Q4_0, "q4_0", "", 32, 18, true, true},  // f16 scale + 32 nibbles
    {3, "q4_1", "", 32, 20, false, false},
    {4, "q4_2 (removed)", "", 0, 0, false, false},
    {5, "q4_3 (removed)", "", 0, 0, false, false},
    {6, "q5_0", "", 32, 22, false, false},
    {7, "q5_1", "", 32, 24, false, false},
    {9, "q8_1", "", 32, 36, false, false},
    {10, "q2_k", "", 256, 84, false, false},
    {11, "q3_k", "", 256, 110, false, false},
    {12, "q4_k", "", 256, 144, false, true},
    {13, "q5_k", "", 256, 176, false, false},
    {14, "q6_k", "", 256, 210, false, false},
    {15, "q8_k", "", 256, 292, false, false},
    {16, "iq2_xxs", "", 0, 0, false, false},
    {17, "iq2_xs", "", 0, 0, false, false},
    {18, "iq3_xxs", "", 0, 0, false, false},
    {19, "iq1_s", "", 0, 0, false, false},
    {20, "iq4_nl", "", 0, 0, false, false},
    {21, "iq3_s", "", 0, 0, false, false},
    {22, "iq2_s", "", 0, 0, false, false},
    {23, "iq4_xs", "", 0, 0, false, false},
    {24, "i8", "", 1, 1, false, false},
    {25, "i16", "", 1, 2, false, false},
    {26, "i32", "", 1, 4, false, false},
    {27, "i64", "", 1, 8, false, false},
    {28, "f64", "", 1, 8, false, false},
    {29, "iq1_m", "", 0, 0, false, false},
    {-1, "fp8", "f8", 1, 1, false, true},  // FP8 weights or KV (E4M3/E5M2)
    {-1, "int8", "", 1, 1, false, true},   // per-channel int8 weights
};

// The row of a GGML type id, or null.
constexpr const dtype_info* find_dtype(int id) {
  if (id < 0) return nullptr;
  for (const dtype_info& d : k_dtypes)
    if (d.id == id) return &d;
  return nullptr;
}

// The row named `name` (exactly; with `aliases`, also one of its aliases), or null.
constexpr const dtype_info* find_dtype(std::string_view name, bool aliases = false) {
  for (const dtype_info& d : k_dtypes) {
    if (d.name == name) return &d;
    for (std::string_view a = d.aliases; aliases && !a.empty();) {
      const size_t sp = a.find(' ');
      if (a.substr(0, sp) == name) return &d;
      a = sp == std::string_view::npos ? std::string_view() : a.substr(sp + 1);
    }
  }
  return nullptr;
}

// "q4_0" for TROUPE_Q4_0; "unknown" for an id without a row.
constexpr std::string_view dtype_name(int id) {
  const dtype_info* d = find_dtype(id);
  return d ? d->name : std::string_view("unknown");
}

// Bytes per element on average (18/32 for q4_0); 0 when the geometry is not tabled.
constexpr double bytes_per_element(const dtype_info& d) {
  return d.block_elems > 0 ? double(d.block_bytes) / double(d.block_elems) : 0.0;
}

// Bytes of one row of k elements of a type the engine runs (k a multiple of the block for
// the quantized ones); -1 for any other type.
constexpr int64_t row_bytes(int dtype, int64_t k) {
  const dtype_info* d = find_dtype(dtype);
  return d && d->runs ? k / d->block_elems * d->block_bytes : -1;
}

// The names of the types the engine runs ("f32", "f16", "bf16", "q8_0", "q4_0"), or of
// those the simulator prices, in the table's order: for flag checks and error messages.
inline std::vector<std::string> dtype_names(bool (*keep)(const dtype_info&)) {
  std::vector<std::string> out;
  for (const dtype_info& d : k_dtypes)
    if (keep(d)) out.emplace_back(d.name);
  return out;
}
inline std::vector<std::string> engine_dtype_names() {
  return dtype_names([](const dtype_info& d) { return d.runs; });
}
inline std::vector<std::string> priced_dtype_names() {
  return dtype_names([](const dtype_info& d) { return d.priced; });
}

}  // namespace troupe::kern
