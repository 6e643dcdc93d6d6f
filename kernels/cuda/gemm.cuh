// Matrix products through cuBLAS (FP16/BF16 inputs, FP32 accumulation and output), and the
// dispatcher that picks a path per weight type and batch size.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "troupe/kernel_abi.h"

namespace troupe::kern::cuda {

// y (m, n) f32, row i at y + i * ldy, = x (m, k) · W (n, k)^T; x and W both of ab_type
// (TROUPE_F16, TROUPE_BF16 or TROUPE_F32), row-major, FP32 accumulation. Runs on the
// handle's stream.
void gemm_xwT(cublasHandle_t handle, float* y, int64_t ldy, const void* x, const void* w, troupe_dtype ab_type,
              int64_t m, int64_t n, int64_t k);

// Rows of W dequantized per cuBLAS call on the quantized prefill path.
constexpr int64_t k_dequant_chunk_rows = 4096;

// Scratch matmul() needs, in bytes (256-byte aligned pieces).
size_t matmul_workspace_bytes(troupe_dtype w_type, int64_t m, int64_t n, int64_t k);

// y (m, n) f32 = x (m, k) f32 · W (n, k)^T for W stored as w_type:
//   f32        GemmEx in FP32 (no TF32);
//   f16, bf16  x converted to w_type in the workspace, then GemmEx;
//   q8_0, q4_0 m <= 8: the quantized matvec kernel; larger m: W dequantized to half_type
//              (f16 or bf16) k_dequant_chunk_rows rows at a time, then GemmEx.
// Sets the handle's stream to `stream`. Throws troupe::error when the workspace is short.
void matmul(cublasHandle_t handle, float* y, const float* x, const void* w, troupe_dtype w_type, int64_t m, int64_t n,
            int64_t k, troupe_dtype half_type, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace troupe::kern::cuda
