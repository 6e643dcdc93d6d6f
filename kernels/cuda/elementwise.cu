// Element-wise kernels: grid-stride loops (no __restrict__: the outputs may alias inputs).
// expf, not __expf: silu of large negative gates must go to 0, not NaN.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace troupe::kern::cuda {

namespace {

__global__ void silu_mul_kernel(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void add_bias_kernel(float* x, const float* bias, int64_t rows, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] += bias[i % n];
}

constexpr int k_threads = 256;

}  // namespace

void invoke_silu_mul(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(out, gate, up, n);
  TROUPE_CUDA_CHECK_LAUNCH("silu_mul");
}

void invoke_add_bias(float* x, const float* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return;
  add_bias_kernel<<<grid_for(rows * n, k_threads), k_threads, 0, stream>>>(x, bias, rows, n);
  TROUPE_CUDA_CHECK_LAUNCH("add_bias");
}

cudaError_t kernel_image_status() {
  cudaFuncAttributes attr{};
  return cudaFuncGetAttributes(&attr, add_kernel);
}

void invoke_add(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n, k_threads), k_threads, 0, stream>>>(out, a, b, n);
  TROUPE_CUDA_CHECK_LAUNCH("add");
}

}  // namespace troupe::kern::cuda
