// Per-variant kernel throughput on the CPU: bytes of weights streamed per second for the
// matrix-vector products that dominate decoding (m = 1), and for batched matmuls (m = 64,
// prefill-like), per weight type and variant, on 1 and 2 threads; and one decode token's
// attention over a 4096-token paged KV cache.
//
//   bench_kernels --benchmark_filter=q4_0
//
// Other processes on a shared machine move these numbers: treat them as indicative.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ref/dtype.h"
#include "kernels/make_registry.h"
#include "troupe/kernel_registry.h"

namespace {

constexpr troupe_op k_matmul_ops[] = {TROUPE_OP_MATMUL_F32, TROUPE_OP_MATMUL_F16, TROUPE_OP_MATMUL_BF16,
                                      TROUPE_OP_MATMUL_Q8_0, TROUPE_OP_MATMUL_Q4_0};

// y(m, n) = x(m, k) . W(n, k)^T with one variant on a pool of `threads`.
void bm_matmul(benchmark::State& st, troupe_op op, troupe_kernel_variant v, int64_t m, int64_t n, int64_t k,
               int threads) {
  const int dt = troupe::kern::op_dtype(op);
  const auto w = troupe::kern::random_weights(dt, n, k, 1);
  std::vector<float> x(m * k), y(m * n);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& e : x) e = u(rng);
  troupe::kern::cpu::thread_pool pool(threads);
  const troupe_kctx ctx = troupe::kern::cpu::make_kctx(pool);
  auto mm = reinterpret_cast<troupe_matmul_fn>(v.fn);
  for (auto _ : st) {
    mm(&ctx, y.data(), x.data(), w.data(), m, n, k);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * (int64_t)w.size());
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// A decode step's matrix-vector products stream their weights from memory, not from the
// last-level cache (32 MiB here): the same product over enough copies of the weights (256
// MiB in all) that each call finds its copy evicted, as a 1B model's 2.4 GB per token do.
void bm_matvec_dram(benchmark::State& st, troupe_op op, troupe_kernel_variant v, int64_t n, int64_t k, int threads) {
  const int dt = troupe::kern::op_dtype(op);
  const auto w = troupe::kern::random_weights(dt, n, k, 1);
  const size_t copies = std::max<size_t>(2, ((size_t)256 << 20) / w.size() + 1);
  std::vector<uint8_t> all(copies * w.size());
  for (size_t c = 0; c < copies; ++c) std::copy(w.begin(), w.end(), all.begin() + (std::ptrdiff_t)(c * w.size()));
  std::vector<float> x(k), y(n);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& e : x) e = u(rng);
  troupe::kern::cpu::thread_pool pool(threads);
  const troupe_kctx ctx = troupe::kern::cpu::make_kctx(pool);
  auto mm = reinterpret_cast<troupe_matmul_fn>(v.fn);
  size_t c = 0;
  for (auto _ : st) {
    mm(&ctx, y.data(), x.data(), all.data() + c * w.size(), 1, n, k);
    c = (c + 1) % copies;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * (int64_t)w.size());
}

// One decode token's paged attention: 32 query heads over 8 KV heads (head_dim 128,
// blocks of 16) at a context of n_ctx; bytes are the K and V rows read.
void bm_attention_decode(benchmark::State& st, troupe_kernel_variant v, int64_t n_ctx, int threads) {
  const int64_t n_heads = 32, n_kv = 8, hd = 128, bs = 16, n_blocks = (n_ctx + bs - 1) / bs;
  std::vector<float> q(n_heads * hd), out(n_heads * hd), kp(n_blocks * bs * n_kv * hd), vp(kp.size());
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto* buf : {&q, &kp, &vp})
    for (auto& e : *buf) e = u(rng);
  std::vector<int32_t> table(n_blocks);
  for (int64_t b = 0; b < n_blocks; ++b) table[b] = (int32_t)(n_blocks - 1 - b);
  const int32_t pos = (int32_t)n_ctx - 1;
  troupe::kern::cpu::thread_pool pool(threads);
  const troupe_kctx ctx = troupe::kern::cpu::make_kctx(pool);
  auto attn = reinterpret_cast<troupe_attention_fn>(v.fn);
  for (auto _ : st) {
    attn(&ctx, out.data(), q.data(), kp.data(), vp.data(), table.data(), &pos, 1, n_heads, n_kv, hd, bs,
         1.0f / std::sqrt((float)hd), 0);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(st.iterations() * 2 * n_ctx * n_kv * hd * (int64_t)sizeof(float));
}

void register_all_benchmarks(const troupe::kernel_registry& reg) {
  for (const auto& v : reg.variants(TROUPE_OP_ATTENTION))
    for (int threads : {1, 2}) {
      if (std::string_view(v.name) == "ref" && threads > 1) continue;
      const std::string name =
          std::string("attention_decode/") + v.name + "/ctx:4096/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), bm_attention_decode, v, 4096, threads)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  struct shape {
    int64_t m, n, k;
  };
  // The matrix-vector products of one layer of a 1B model (Llama-3.2-1B: dim 2048, hidden
  // 8192), from memory.
  for (troupe_op op : k_matmul_ops)
    for (const auto& v : reg.variants(op))
      for (const shape& s : {shape{1, 2048, 2048}, shape{1, 8192, 2048}, shape{1, 2048, 8192}})
        for (int threads : {1, 2}) {
          if (std::string_view(v.name) == "ref") continue;
          const std::string name = std::string("matvec_dram/") + std::string(troupe::op_name(op)) + "/" + v.name + "/" +
                                   std::to_string(s.n) + "x" + std::to_string(s.k) +
                                   "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), bm_matvec_dram, op, v, s.n, s.k, threads)
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
        }
  // (8, 32, 512) x 2048 x 768: batched decode and a prefill on a 110M-parameter model
  const shape shapes[] = {{1, 2048, 2048}, {1, 8192, 2048}, {64, 2048, 2048}, {64, 8192, 2048},
                          {8, 2048, 768},  {32, 2048, 768}, {512, 2048, 768}};
  for (troupe_op op : k_matmul_ops)
    for (const auto& v : reg.variants(op))
      for (const shape& s : shapes)
        for (int threads : {1, 2}) {
          const bool ref = std::string_view(v.name) == "ref";
          if (ref && (s.m > 1 || s.n > 2048 || threads > 1)) continue;  // the oracle is slow and single-threaded
          const std::string name = std::string(s.m == 1 ? "matvec/" : "matmul/") + std::string(troupe::op_name(op)) +
                                   "/" + v.name + "/" + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                                   std::to_string(s.k) + "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), bm_matmul, op, v, s.m, s.n, s.k, threads)
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
        }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const auto reg = troupe::kern::make_kernel_registry({});
  benchmark::AddCustomContext("cpu kernels", troupe::kern::cpu::describe());
  register_all_benchmarks(*reg);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
