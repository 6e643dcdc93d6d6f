// The kernel registry: named variants per op and backend. main() builds it explicitly
// (no static self-registration); the plain CPU reference of every op is always present.
#pragma once
#include <array>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe {

std::string_view op_name(troupe_op op);  // "matmul_q8_0", "rmsnorm", ...
bool op_from_name(std::string_view name, troupe_op* out);

// The member of op's family that runs on data of type t: matmul_* and embedding_* by weight
// type, attention / attention_f16kv and kv_store / kv_store_f16 by KV pool type; every other
// op takes f32 only. False when the family has no member for t (attention on q8_0, say).
bool op_for_dtype(troupe_op op, troupe_dtype t, troupe_op* out);
// Position of weight type t in the matmul and embedding families (f32, f16, bf16, q8_0, q4_0:
// their ops are consecutive in this order); -1 for a type no matmul takes.
int weight_family_index(troupe_dtype t);

class kernel_registry {
 public:
  kernel_registry() = default;
  kernel_registry(const kernel_registry&) = delete;
  kernel_registry& operator=(const kernel_registry&) = delete;
  ~kernel_registry();  // unloads plugins

  // Adds a variant; throws troupe::error(failed) on a duplicate name for the same op.
  void add(const troupe_kernel_variant& v);
  // Loads a plugin shared library and adds its variants; throws troupe::error with the
  // path and the reason (not found, no troupe_kernel_plugin_v1, ABI version mismatch).
  void load_plugin(const std::string& path);

  std::vector<troupe_kernel_variant> variants(troupe_op op) const;
  const troupe_kernel_variant* find(troupe_op op, std::string_view name) const;

  // The selected variant of each op for a backend: by default the best built-in one
  // (the last added by the backend's registration), overridden by select().
  void select(troupe_op op, std::string_view name);  // throws if unknown
  const troupe_kernel_variant& selected(troupe_op op, troupe_backend b = TROUPE_BACKEND_CPU) const;

  // Whether a variant of op's family for type t (op_for_dtype) is registered for backend b:
  // what a backend asks at construction for each weight type and KV type of its model.
  bool supports(troupe_op op, troupe_backend b, troupe_dtype t) const;
  // The selected variant of op's family for type t on backend b; throws
  // troupe::error(unimplemented) naming the op, the backend and the dtype when !supports.
  const troupe_kernel_variant& require(troupe_op op, troupe_backend b, troupe_dtype t) const;

  template <typename Fn>
  Fn get(troupe_op op, troupe_backend b = TROUPE_BACKEND_CPU) const {
    return reinterpret_cast<Fn>(selected(op, b).fn);
  }

 private:
  std::vector<troupe_kernel_variant> all_;
  std::deque<std::string> owned_names_;                       // names copied from plugins (deque: stable c_str)
  std::array<std::array<int, 2>, TROUPE_OP_COUNT> chosen_{};  // index+1 into all_, 0 = default
  std::vector<void*> plugin_handles_;
};

}  // namespace troupe
