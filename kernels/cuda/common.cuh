// Device-side helpers shared by the kernels: warp and block reductions, scalar loads from
// f32/f16/bf16, and the GGML quantized block layouts as seen from the device.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/check.h"

namespace troupe::kern::cuda {

constexpr int k_warp = 32;
constexpr int k_qk = 32;  // elements per quantized block

// GGML's Q8_0: value = d * qs[i]. 34 bytes, 2-byte aligned.
struct block_q8_0_dev {
  __half d;
  int8_t qs[k_qk];
};
static_assert(sizeof(block_q8_0_dev) == 34);

// GGML's Q4_0: value = d * (nibble - 8); element i < 16 in the low nibble of qs[i],
// element i >= 16 in the high nibble of qs[i - 16]. 18 bytes.
struct block_q4_0_dev {
  __half d;
  uint8_t qs[k_qk / 2];
};
static_assert(sizeof(block_q4_0_dev) == 18);

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = k_warp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = k_warp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds >= 32 floats.
// Must be reached by all threads of the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp;
  const int n_warps = (blockDim.x + k_warp - 1) / k_warp;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp;
  const int n_warps = (blockDim.x + k_warp - 1) / k_warp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

__host__ __device__ inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Grid size for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t b = ceil_div(n, threads);
  return (unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

}  // namespace troupe::kern::cuda
