// Shared helpers of the kernels/dev programs (standalone executables, llm.c dev/cuda style):
// error checks that stop the program, a tolerance check, and event timing.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#define DEV_CHECK(expr)                                                                           \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace dev {

// Exits with a message when no device can run the kernels (a dev tool, not a library).
inline void require_device() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::fprintf(stderr, "no CUDA device: %s\n", e == cudaSuccess ? "count is 0" : cudaGetErrorString(e));
    std::exit(2);
  }
  cudaDeviceProp p{};
  DEV_CHECK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s (sm_%d%d, %.0f GiB)\n", p.name, p.major, p.minor, p.totalGlobalMem / 1073741824.0);
}

inline std::vector<float> random_floats(size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// |got - ref| <= atol + rtol * |ref| everywhere; prints the first misses.
inline bool check(const char* name, const std::vector<float>& got, const std::vector<float>& ref, float atol,
                  float rtol) {
  int misses = 0;
  float worst = 0.0f;
  for (size_t i = 0; i < ref.size(); ++i) {
    const float err = std::fabs(got[i] - ref[i]);
    worst = std::fmax(worst, err);
    if (!(err <= atol + rtol * std::fabs(ref[i])) && ++misses <= 5)
      std::printf("  %s: [%zu] got %f ref %f\n", name, i, got[i], ref[i]);
  }
  std::printf("%-10s %s (worst |err| %.3g, %d of %zu off)\n", name, misses ? "MISMATCH" : "ok", worst, misses,
              ref.size());
  return misses == 0;
}

// Mean milliseconds per call of fn() over `repeats` calls after a warm-up.
template <typename F>
float time_ms(F fn, int repeats = 20) {
  fn();
  DEV_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  DEV_CHECK(cudaEventCreate(&a));
  DEV_CHECK(cudaEventCreate(&b));
  DEV_CHECK(cudaEventRecord(a));
  for (int i = 0; i < repeats; ++i) fn();
  DEV_CHECK(cudaEventRecord(b));
  DEV_CHECK(cudaEventSynchronize(b));
  float ms = 0.0f;
  DEV_CHECK(cudaEventElapsedTime(&ms, a, b));
  DEV_CHECK(cudaEventDestroy(a));
  DEV_CHECK(cudaEventDestroy(b));
  return ms / repeats;
}

template <typename T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  DEV_CHECK(cudaMalloc(&d, h.size() * sizeof(T)));
  DEV_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  DEV_CHECK(cudaDeviceSynchronize());
  DEV_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// Runs versions 1..n_versions (or only `only` when not 0) through run(k): each is checked
// against ref (output read from `out`, cleared first), then timed; prints one table row per
// version with milliseconds and GB/s for `bytes` moved per call. True when all match.
template <typename Run>
bool check_and_time(int only, int n_versions, Run run, float* out, const std::vector<float>& ref, float atol,
                    float rtol, double bytes) {
  std::printf("tolerance atol %g rtol %g\n%-8s %-10s %10s %10s\n", atol, rtol, "kernel", "check", "ms", "GB/s");
  bool all_ok = true;
  for (int k = 1; k <= n_versions; ++k) {
    if (only && k != only) continue;
    DEV_CHECK(cudaMemset(out, 0, ref.size() * sizeof(float)));
    run(k);
    char name[16];
    std::snprintf(name, sizeof name, "kernel %d", k);
    const bool ok = check(name, to_host(out, ref.size()), ref, atol, rtol);
    all_ok &= ok;
    const float ms = time_ms([&] { run(k); });
    std::printf("%-8d %-10s %10.4f %10.1f\n", k, ok ? "ok" : "MISMATCH", ms, bytes / (ms * 1e-3) / 1e9);
  }
  return all_ok;
}

}  // namespace dev
