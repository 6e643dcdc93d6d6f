// RoPE: one thread per rotated pair. sincosf (not __sincosf): positions reach 1e5 and more,
// where the fast intrinsic loses all accuracy.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rope.cuh"

namespace troupe::kern::cuda {

namespace {

__global__ void rope_kernel(float* __restrict__ x, int64_t row_stride, const int32_t* __restrict__ positions,
                            int64_t n_tokens, int64_t n_heads, int64_t head_dim, const float* __restrict__ inv_freq,
                            bool neox) {
  const int64_t half = head_dim / 2;
  const int64_t n_pairs = n_tokens * n_heads * half;
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < n_pairs; p += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = p % half;
    const int64_t h = (p / half) % n_heads;
    const int64_t t = p / (half * n_heads);
    float* v = x + t * row_stride + h * head_dim;
    float s, c;
    sincosf((float)positions[t] * inv_freq[i], &s, &c);
    const int64_t a = neox ? i : 2 * i;
    const int64_t b = neox ? i + half : 2 * i + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
  }
}

}  // namespace

void invoke_rope(float* x, int64_t row_stride, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                 int64_t head_dim, const float* inv_freq, bool neox, cudaStream_t stream) {
  const int64_t n_pairs = n_tokens * n_heads * (head_dim / 2);
  if (n_pairs <= 0) return;
  const int threads = 256;
  rope_kernel<<<grid_for(n_pairs, threads), threads, 0, stream>>>(x, row_stride, positions, n_tokens, n_heads, head_dim,
                                                                  inv_freq, neox);
  TROUPE_CUDA_CHECK_LAUNCH("rope");
}

}  // namespace troupe::kern::cuda
