// An example kernel plugin with one CUDA variant: silu_mul as "example_cuda.silu_mul".
// Built as a MODULE library when CUDA is on; load it with kernel_registry::load_plugin (or
// --kernel-plugin) and select it with --kernel silu_mul=example_cuda.silu_mul. It depends
// on nothing of Troupe but the C ABI header.
#include <cuda_runtime.h>

#include "troupe/kernel_abi.h"

namespace {

__global__ void silu_mul_kernel(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

// The ABI has no error channel: a failed launch shows at the caller's next CUDA check.
void silu_mul(const troupe_kctx* ctx, float* out, const float* gate, const float* up, int64_t n) {
  if (n <= 0) return;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  const unsigned grid = (unsigned)(blocks < 65535 ? blocks : 65535);
  silu_mul_kernel<<<grid, threads, 0, static_cast<cudaStream_t>(ctx ? ctx->stream : nullptr)>>>(out, gate, up, n);
}

const troupe_kernel_variant k_variants[] = {
    {TROUPE_OP_SILU_MUL, TROUPE_BACKEND_CUDA, "example_cuda.silu_mul", reinterpret_cast<void (*)(void)>(&silu_mul)},
};

const troupe_kernel_plugin k_plugin = {TROUPE_KERNEL_ABI_VERSION, "example_cuda", 1, k_variants};

}  // namespace

extern "C" __attribute__((visibility("default"))) const troupe_kernel_plugin* troupe_kernel_plugin_v1(void) {
  return &k_plugin;
}
