// Per-variant kernel throughput on the CPU: bytes of weights streamed per second for the
// matrix-vector products that dominate decoding.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/ref/dtype.h"
#include "kernels/ref/ref.h"
#include "troupe/kernel_registry.h"

namespace {

void bm_matvec_ref_f32(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1);
  std::vector<float> w(n * k), x(k), y(n);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& v : w) v = u(rng);
  for (auto& v : x) v = u(rng);
  troupe::kernel_registry reg;
  for (const auto& v : troupe::kern::ref::variants()) reg.add(v);
  auto mm = reg.get<troupe_matmul_fn>(TROUPE_OP_MATMUL_F32);
  for (auto _ : st) {
    mm(nullptr, y.data(), x.data(), w.data(), 1, n, k);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(st.iterations() * n * k * 4);
}
BENCHMARK(bm_matvec_ref_f32)->Args({768, 768});

}  // namespace

BENCHMARK_MAIN();
