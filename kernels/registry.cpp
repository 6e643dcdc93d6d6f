// The kernel registry: named variants per op and backend, plus plugin loading.
#include "troupe/kernel_registry.h"

#include <dlfcn.h>

#include <string>

#include "troupe/error.h"

namespace troupe {

namespace {
constexpr std::string_view k_op_names[TROUPE_OP_COUNT] = {
    "matmul_f32",     "matmul_f16",     "matmul_bf16",    "matmul_q8_0", "matmul_q4_0",     "rmsnorm",
    "rope",           "attention",      "silu_mul",       "add",         "embedding_f32",   "embedding_f16",
    "embedding_bf16", "embedding_q8_0", "embedding_q4_0", "argmax",      "attention_f16kv", "to_f16",
};
static_assert(!k_op_names[TROUPE_OP_COUNT - 1].empty(), "every op of kernel_abi.h needs its name here");
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
  throw error(error_kind::unimplemented, "kernel: no variant of op " + std::string(op_name(op)) + " for backend " +
                                             (b == TROUPE_BACKEND_CPU ? "cpu" : "cuda"));
}

kernel_registry::~kernel_registry() {
  for (void* h : plugin_handles_) dlclose(h);
}

}  // namespace troupe
