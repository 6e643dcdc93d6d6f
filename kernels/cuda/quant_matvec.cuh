// Matrix-vector products straight from Q8_0 / Q4_0 weights, for small batches (decode):
// the weights are read once, dequantized in registers, never written out.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "troupe/kernel_abi.h"

namespace troupe::kern::cuda {

constexpr int k_matvec_max_m = 8;

// y (m, n) f32 = x (m, k) f32 · W^T, W (n, k) in GGML blocks of w_type (TROUPE_Q8_0 or
// TROUPE_Q4_0); k a multiple of 32, 1 <= m <= k_matvec_max_m. y row i at y + i * ldy.
void invoke_quant_matvec(float* y, int64_t ldy, const float* x, const void* w, troupe_dtype w_type, int64_t m,
                         int64_t n, int64_t k, cudaStream_t stream);

}  // namespace troupe::kern::cuda
