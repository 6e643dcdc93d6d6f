// Run-time choice of the CPU kernels' instruction set.
#include "kernels/cpu/cpu.h"

#include <thread>

#include "troupe/kernel_registry.h"

namespace troupe::kern::cpu {

// Each defined in its own translation unit (ops_<isa>.cpp), writing at most TROUPE_OP_COUNT.
namespace generic {
int get_variants(troupe_kernel_variant* out);
}
#if defined(__x86_64__)
namespace avx2 {
int get_variants(troupe_kernel_variant* out);
}
namespace avx512 {
int get_variants(troupe_kernel_variant* out);
}
#endif

const char* isa_name(isa i) {
  switch (i) {
    case isa::generic:
      return "generic";
    case isa::avx2:
      return "avx2";
    case isa::avx512:
      return "avx512";
  }
  return "unknown";
}

bool isa_supported(isa i) {
  switch (i) {
    case isa::generic:
      return true;
#if defined(__x86_64__)
    case isa::avx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case isa::avx512:
      __builtin_cpu_init();
      return isa_supported(isa::avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
#else
    default:
      return false;
#endif
  }
  return false;
}

isa best_isa() {
  if (isa_supported(isa::avx512)) return isa::avx512;
  if (isa_supported(isa::avx2)) return isa::avx2;
  return isa::generic;
}

std::vector<troupe_kernel_variant> variants(isa i) {
  if (!isa_supported(i)) return {};
  troupe_kernel_variant buf[TROUPE_OP_COUNT];
  int n = 0;
  switch (i) {
    case isa::generic:
      n = generic::get_variants(buf);
      break;
#if defined(__x86_64__)
    case isa::avx2:
      n = avx2::get_variants(buf);
      break;
    case isa::avx512:
      n = avx512::get_variants(buf);
      break;
#else
    default:
      break;
#endif
  }
  return std::vector<troupe_kernel_variant>(buf, buf + n);
}

void register_all(kernel_registry& reg) {
  for (isa i : {isa::generic, isa::avx2, isa::avx512})
    for (const auto& v : variants(i)) reg.add(v);
}

std::string describe(int n_threads) {
  return std::string(isa_name(best_isa())) + ", " + std::to_string(n_threads) +
         (n_threads == 1 ? " thread" : " threads");
}

std::string describe() { return describe((int)std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace troupe::kern::cpu
