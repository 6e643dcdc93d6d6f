// Type conversions on the device: activations to the GEMM input type, and weights of any
// stored type (f32, f16, bf16, q8_0, q4_0) to f16/bf16 for cuBLAS.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "troupe/kernel_abi.h"

namespace troupe::kern::cuda {

// out (n) in out_type (TROUPE_F16 or TROUPE_BF16) = in (n) f32, rounded to nearest even.
void invoke_f32_to_half(void* out, troupe_dtype out_type, const float* in, int64_t n, cudaStream_t stream);

// out (rows, k) in out_type (TROUPE_F16 or TROUPE_BF16) = w (rows, k) stored as w_type.
// k a multiple of 32 for the quantized types.
void invoke_dequantize(void* out, troupe_dtype out_type, const void* w, troupe_dtype w_type, int64_t rows, int64_t k,
                       cudaStream_t stream);

// out (n) f32 = in (n) stored as in_type (f32, f16 or bf16).
void invoke_to_f32(float* out, const void* in, troupe_dtype in_type, int64_t n, cudaStream_t stream);

}  // namespace troupe::kern::cuda
