// Quantized matvec: one warp per output row (4 rows per block). Lane l takes the 32-element
// blocks l, l+32, ... of its weight row, so a warp reads 32 consecutive blocks (1088 bytes
// for Q8_0) per step; the x values of a block are read as 8 float4 per batch row and stay in
// L1/L2, shared by all the warps. m accumulators per lane, reduced with shuffles at the end.
// The block layouts are only 2-byte aligned, hence the 16-bit loads of the quants.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/quant_matvec.cuh"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

constexpr int k_rows_per_block = 4;

// The 32 weights of block b of a row, as floats (scale applied).
__device__ __forceinline__ void load_block(const block_q8_0_dev* row, int64_t b, float (&wv)[k_qk]) {
  const block_q8_0_dev& blk = row[b];
  const float d = __half2float(blk.d);
  const uint16_t* qs = reinterpret_cast<const uint16_t*>(blk.qs);
#pragma unroll
  for (int i = 0; i < k_qk / 2; ++i) {
    const uint16_t two = qs[i];
    wv[2 * i] = d * (float)(int8_t)(two & 0xff);
    wv[2 * i + 1] = d * (float)(int8_t)(two >> 8);
  }
}

__device__ __forceinline__ void load_block(const block_q4_0_dev* row, int64_t b, float (&wv)[k_qk]) {
  const block_q4_0_dev& blk = row[b];
  const float d = __half2float(blk.d);
  const uint16_t* qs = reinterpret_cast<const uint16_t*>(blk.qs);
#pragma unroll
  for (int i = 0; i < k_qk / 4; ++i) {
    const uint16_t two = qs[i];
    const int b0 = two & 0xff, b1 = two >> 8;
    wv[2 * i] = d * (float)((b0 & 0x0f) - 8);
    wv[2 * i + 1] = d * (float)((b1 & 0x0f) - 8);
    wv[k_qk / 2 + 2 * i] = d * (float)((b0 >> 4) - 8);
    wv[k_qk / 2 + 2 * i + 1] = d * (float)((b1 >> 4) - 8);
  }
}

template <typename B>
__global__ void __launch_bounds__(k_rows_per_block* k_warp)
    quant_matvec_kernel(float* __restrict__ y, int64_t ldy, const float* __restrict__ x, const B* __restrict__ w, int m,
                        int64_t n, int64_t k) {
  const int lane = threadIdx.x % k_warp;
  const int64_t j = (int64_t)blockIdx.x * k_rows_per_block + threadIdx.x / k_warp;
  if (j >= n) return;  // whole warps leave; no block-level barrier follows
  const int64_t nb = k / k_qk;
  const B* row = w + j * nb;
  float acc[k_matvec_max_m];
#pragma unroll
  for (int i = 0; i < k_matvec_max_m; ++i) acc[i] = 0.0f;
  const bool vec4 = aligned16(x) && (k % 4 == 0);
  for (int64_t b = lane; b < nb; b += k_warp) {
    float wv[k_qk];
    load_block(row, b, wv);
#pragma unroll
    for (int i = 0; i < k_matvec_max_m; ++i) {
      if (i >= m) break;
      const float* xb = x + (int64_t)i * k + b * k_qk;
      float s = 0.0f;
      if (vec4) {
        const float4* x4 = reinterpret_cast<const float4*>(xb);
#pragma unroll
        for (int e = 0; e < k_qk / 4; ++e) {
          const float4 v = x4[e];
          s += v.x * wv[4 * e] + v.y * wv[4 * e + 1] + v.z * wv[4 * e + 2] + v.w * wv[4 * e + 3];
        }
      } else {
#pragma unroll
        for (int e = 0; e < k_qk; ++e) s += xb[e] * wv[e];
      }
      acc[i] += s;
    }
  }
#pragma unroll
  for (int i = 0; i < k_matvec_max_m; ++i) {
    if (i >= m) break;
    const float s = warp_sum(acc[i]);
    if (lane == 0) y[(int64_t)i * ldy + j] = s;
  }
}

}  // namespace

void invoke_quant_matvec(float* y, int64_t ldy, const float* x, const void* w, troupe_dtype w_type, int64_t m,
                         int64_t n, int64_t k, cudaStream_t stream) {
  if (m < 1 || m > k_matvec_max_m)
    throw error(error_kind::failed,
                "cuda quant_matvec: batch rows must be in 1..8 (got " + std::to_string(m) + "); use the GEMM path");
  if (k % k_qk) throw error(error_kind::failed, "cuda quant_matvec: k must be a multiple of 32");
  if (n <= 0) return;
  const unsigned grid = (unsigned)ceil_div(n, k_rows_per_block);
  const int threads = k_rows_per_block * k_warp;
  if (w_type == TROUPE_Q8_0)
    quant_matvec_kernel<<<grid, threads, 0, stream>>>(y, ldy, x, static_cast<const block_q8_0_dev*>(w), (int)m, n, k);
  else if (w_type == TROUPE_Q4_0)
    quant_matvec_kernel<<<grid, threads, 0, stream>>>(y, ldy, x, static_cast<const block_q4_0_dev*>(w), (int)m, n, k);
  else
    throw error(error_kind::unimplemented, "cuda quant_matvec: weight type must be q8_0 or q4_0");
  TROUPE_CUDA_CHECK_LAUNCH("quant_matvec");
}

}  // namespace troupe::kern::cuda
