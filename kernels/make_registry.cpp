#include "kernels/make_registry.h"

#include "kernels/cpu/cpu.h"
#include "kernels/ref/ref.h"
#include "troupe/error.h"
#ifdef TROUPE_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace troupe::kern {

std::unique_ptr<kernel_registry> make_kernel_registry(const kernel_registry_options& o) {
  auto reg = std::make_unique<kernel_registry>();
  for (const auto& v : ref::variants()) reg->add(v);
  if (o.cpu) cpu::register_all(*reg);
#ifdef TROUPE_WITH_CUDA
  if (o.cuda) cuda::register_all(*reg);
#endif
  for (const auto& p : o.plugins) reg->load_plugin(p);  // its error names the path and the reason
  for (const auto& k : o.kernels) select_kernel(*reg, k);
  return reg;
}

void select_kernel(kernel_registry& registry, const std::string& spec) {
  const auto eq = spec.find('=');
  if (eq == std::string::npos)
    throw error(error_kind::failed, "--kernel " + spec + ": expected OP=VARIANT (e.g. matmul_f32=ref)", "kernel");
  troupe_op op;
  if (!op_from_name(spec.substr(0, eq), &op)) {
    std::string known;
    for (int i = 0; i < TROUPE_OP_COUNT; ++i)
      known += (i ? ", " : "") + std::string(op_name(static_cast<troupe_op>(i)));
    throw error(error_kind::failed,
                "--kernel " + spec + ": unknown op '" + spec.substr(0, eq) + "' (known: " + known + ")", "kernel");
  }
  const std::string variant = spec.substr(eq + 1);
  if (!registry.find(op, variant)) {
    std::string known;
    for (const auto& v : registry.variants(op)) known += (known.empty() ? "" : ", ") + std::string(v.name);
    throw error(error_kind::failed,
                "--kernel " + spec + ": op " + std::string(op_name(op)) + " has no variant '" + variant +
                    "' (known: " + known + ")",
                "kernel");
  }
  registry.select(op, variant);
}

}  // namespace troupe::kern
