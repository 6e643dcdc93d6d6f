// The kernel registry: named variants per op and backend, plus plugin loading.
#include "troupe/kernel_registry.h"

#include <dlfcn.h>

#include <string>

#include "kernels/dtypes.h"
#include "troupe/error.h"

namespace troupe {

namespace {
constexpr std::string_view k_op_names[TROUPE_OP_COUNT] = {
    "matmul_f32",     "matmul_f16",     "matmul_bf16",    "matmul_q8_0", "matmul_q4_0",     "rmsnorm",
    "rope",           "attention",      "silu_mul",       "add",         "embedding_f32",   "embedding_f16",
    "embedding_bf16", "embedding_q8_0", "embedding_q4_0", "argmax",      "attention_f16kv", "to_f16",
    "kv_store",       "kv_store_f16",   "add_rmsnorm",    "add_bias",
};
static_assert(!k_op_names[TROUPE_OP_COUNT - 1].empty(), "every op of kernel_abi.h needs its name here");

const char* backend_name(troupe_backend b) { return b == TROUPE_BACKEND_CPU ? "cpu" : "cuda"; }

std::string dtype_label(troupe_dtype t) { return std::string(kern::dtype_name(t)); }

// The family's name for messages: "matmul" for matmul_q8_0, "attention" for attention_f16kv.
std::string family_name(troupe_op op) {
  if (op >= TROUPE_OP_MATMUL_F32 && op <= TROUPE_OP_MATMUL_Q4_0) return "matmul";
  if (op >= TROUPE_OP_EMBEDDING_F32 && op <= TROUPE_OP_EMBEDDING_Q4_0) return "embedding";
  if (op == TROUPE_OP_ATTENTION_F16KV) return "attention";
  if (op == TROUPE_OP_KV_STORE_F16) return "kv_store";
  return std::string(op_name(op));
}
}  // namespace

std::string_view op_name(troupe_op op) {
  return op >= 0 && op < TROUPE_OP_COUNT ? k_op_names[op] : std::string_view("unknown");
}

bool op_from_name(std::string_view name, troupe_op* out) {
  for (int i = 0; i < TROUPE_OP_COUNT; ++i)
    if (k_op_names[i] == name) {
      *out = static_cast<troupe_op>(i);
      return true;
    }
  return false;
}

int weight_family_index(troupe_dtype t) {
  switch (t) {
    case TROUPE_F32:
      return 0;
    case TROUPE_F16:
      return 1;
    case TROUPE_BF16:
      return 2;
    case TROUPE_Q8_0:
      return 3;
    case TROUPE_Q4_0:
      return 4;
  }
  return -1;
}

bool op_for_dtype(troupe_op op, troupe_dtype t, troupe_op* out) {
  const int wi = weight_family_index(t);
  if (op >= TROUPE_OP_MATMUL_F32 && op <= TROUPE_OP_MATMUL_Q4_0) {
    if (wi < 0) return false;
    *out = static_cast<troupe_op>(TROUPE_OP_MATMUL_F32 + wi);
    return true;
  }
  if (op >= TROUPE_OP_EMBEDDING_F32 && op <= TROUPE_OP_EMBEDDING_Q4_0) {
    if (wi < 0) return false;
    *out = static_cast<troupe_op>(TROUPE_OP_EMBEDDING_F32 + wi);
    return true;
  }
  if (op == TROUPE_OP_ATTENTION || op == TROUPE_OP_ATTENTION_F16KV || op == TROUPE_OP_KV_STORE ||
      op == TROUPE_OP_KV_STORE_F16) {
    const bool attention = op == TROUPE_OP_ATTENTION || op == TROUPE_OP_ATTENTION_F16KV;
    if (t == TROUPE_F32)
      *out = attention ? TROUPE_OP_ATTENTION : TROUPE_OP_KV_STORE;
    else if (t == TROUPE_F16)
      *out = attention ? TROUPE_OP_ATTENTION_F16KV : TROUPE_OP_KV_STORE_F16;
    else
      return false;
    return true;
  }
  if (op < 0 || op >= TROUPE_OP_COUNT || t != TROUPE_F32) return false;
  *out = op;
  return true;
}

void kernel_registry::add(const troupe_kernel_variant& v) {
  if (v.op < 0 || v.op >= TROUPE_OP_COUNT)
    throw error(error_kind::failed, "kernel variant '" + std::string(v.name ? v.name : "?") + "': unknown op id " +
                                        std::to_string((int)v.op));
  if (!v.name || !v.fn)
    throw error(error_kind::failed,
                "kernel variant for op " + std::string(op_name(v.op)) + ": name and fn are required");
  if (find(v.op, v.name))
    throw error(error_kind::failed,
                "kernel variant '" + std::string(v.name) + "' already registered for op " + std::string(op_name(v.op)));
  troupe_kernel_variant copy = v;
  copy.name = owned_names_.emplace_back(v.name).c_str();
  all_.push_back(copy);
}

void kernel_registry::load_plugin(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) throw error(error_kind::failed, "kernel plugin " + path + ": cannot load: " + dlerror(), "plugin");
  auto entry = reinterpret_cast<troupe_kernel_plugin_v1_fn>(dlsym(handle, "troupe_kernel_plugin_v1"));
  if (!entry) {
    dlclose(handle);
    throw error(error_kind::failed, "kernel plugin " + path + ": no symbol troupe_kernel_plugin_v1", "plugin");
  }
  const troupe_kernel_plugin* p = entry();
  if (!p || p->abi_version != TROUPE_KERNEL_ABI_VERSION) {
    const unsigned got = p ? p->abi_version : 0;
    dlclose(handle);
    throw error(error_kind::failed,
                "kernel plugin " + path + ": ABI version " + std::to_string(got) + ", this troupe expects " +
                    std::to_string(TROUPE_KERNEL_ABI_VERSION),
                "plugin");
  }
  try {
    for (size_t i = 0; i < p->n_variants; ++i) add(p->variants[i]);
  } catch (...) {
    dlclose(handle);
    throw;
  }
  plugin_handles_.push_back(handle);  // kept loaded for the registry's lifetime
}

std::vector<troupe_kernel_variant> kernel_registry::variants(troupe_op op) const {
  std::vector<troupe_kernel_variant> out;
  for (const auto& v : all_)
    if (v.op == op) out.push_back(v);
  return out;
}

const troupe_kernel_variant* kernel_registry::find(troupe_op op, std::string_view name) const {
  for (const auto& v : all_)
    if (v.op == op && name == v.name) return &v;
  return nullptr;
}

void kernel_registry::select(troupe_op op, std::string_view name) {
  for (size_t i = 0; i < all_.size(); ++i)
    if (all_[i].op == op && name == all_[i].name) {
      chosen_[op][all_[i].backend] = (int)i + 1;
      return;
    }
  std::string known;
  for (const auto& v : variants(op)) known += (known.empty() ? "" : ", ") + std::string(v.name);
  throw error(
      error_kind::failed,
      "kernel: op " + std::string(op_name(op)) + " has no variant '" + std::string(name) + "' (known: " + known + ")",
      "kernel");
}

const troupe_kernel_variant& kernel_registry::selected(troupe_op op, troupe_backend b) const {
  if (int c = chosen_[op][b]) return all_[c - 1];
  for (auto it = all_.rbegin(); it != all_.rend(); ++it)
    if (it->op == op && it->backend == b) return *it;
  throw error(error_kind::unimplemented,
              "kernel: no variant of op " + std::string(op_name(op)) + " for backend " + backend_name(b));
}

bool kernel_registry::supports(troupe_op op, troupe_backend b, troupe_dtype t) const {
  troupe_op typed;
  if (!op_for_dtype(op, t, &typed)) return false;
  if (chosen_[typed][b]) return true;
  for (const auto& v : all_)
    if (v.op == typed && v.backend == b) return true;
  return false;
}

const troupe_kernel_variant& kernel_registry::require(troupe_op op, troupe_backend b, troupe_dtype t) const {
  troupe_op typed;
  if (!op_for_dtype(op, t, &typed))
    throw error(error_kind::unimplemented,
                "kernel: op " + family_name(op) + " has no form for dtype " + dtype_label(t) + " (backend " +
                    backend_name(b) + ")",
                "kernel");
  if (!supports(typed, b, t))
    throw error(error_kind::unimplemented,
                "kernel: no " + std::string(backend_name(b)) + " variant of op " + family_name(op) + " for dtype " +
                    dtype_label(t) + " (op " + std::string(op_name(typed)) + ")",
                "kernel");
  return selected(typed, b);
}

kernel_registry::~kernel_registry() {
  for (void* h : plugin_handles_) dlclose(h);
}

}  // namespace troupe
