// GEMMs through cublasGemmEx. Row-major y = x W^T is, for column-major cuBLAS,
// y^T (n, m) = op(W') x' where W' is W seen as (k, n) column-major (so op = T) and x' is x
// seen as (k, m) column-major (op = N): one call, no transposes in memory.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/quant_matvec.cuh"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

cudaDataType_t cuda_type(troupe_dtype t) {
  switch (t) {
    case TROUPE_F32:
      return CUDA_R_32F;
    case TROUPE_F16:
      return CUDA_R_16F;
    case TROUPE_BF16:
      return CUDA_R_16BF;
    default:
      throw error(error_kind::unimplemented, "cuda gemm: operand type " + std::to_string((int)t) + " is not dense");
  }
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

void gemm_xwT(cublasHandle_t handle, float* y, int64_t ldy, const void* x, const void* w, troupe_dtype ab_type,
              int64_t m, int64_t n, int64_t k) {
  if (m <= 0 || n <= 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t t = cuda_type(ab_type);
  TROUPE_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, w, t, (int)k, x, t,
                                   (int)k, &beta, y, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

size_t matmul_workspace_bytes(troupe_dtype w_type, int64_t m, int64_t n, int64_t k) {
  switch (w_type) {
    case TROUPE_F32:
      return 0;
    case TROUPE_F16:
    case TROUPE_BF16:
      return align256((size_t)m * k * 2);
    default:
      if (m <= k_matvec_max_m) return 0;
      return align256((size_t)m * k * 2) + align256((size_t)std::min(n, k_dequant_chunk_rows) * k * 2);
  }
}

void matmul(cublasHandle_t handle, float* y, const float* x, const void* w, troupe_dtype w_type, int64_t m, int64_t n,
            int64_t k, troupe_dtype half_type, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  const size_t need = matmul_workspace_bytes(w_type, m, n, k);
  if (workspace_bytes < need)
    throw error(error_kind::failed, "cuda matmul: workspace of " + std::to_string(workspace_bytes) +
                                        " bytes, this shape needs " + std::to_string(need));
  // Only when it changes: cublasSetStream also drops a workspace set by cublasSetWorkspace,
  // which a captured CUDA graph relies on.
  cudaStream_t current = nullptr;
  TROUPE_CUBLAS_CHECK(cublasGetStream(handle, &current));
  if (current != stream) TROUPE_CUBLAS_CHECK(cublasSetStream(handle, stream));
  switch (w_type) {
    case TROUPE_F32:
      gemm_xwT(handle, y, n, x, w, TROUPE_F32, m, n, k);
      return;
    case TROUPE_F16:
    case TROUPE_BF16:
      invoke_f32_to_half(workspace, w_type, x, m * k, stream);
      gemm_xwT(handle, y, n, workspace, w, w_type, m, n, k);
      return;
    case TROUPE_Q8_0:
    case TROUPE_Q4_0: {
      if (m <= k_matvec_max_m) {
        invoke_quant_matvec(y, n, x, w, w_type, m, n, k, stream);
        return;
      }
      char* xh = static_cast<char*>(workspace);
      char* wh = xh + align256((size_t)m * k * 2);
      invoke_f32_to_half(xh, half_type, x, m * k, stream);
      const size_t row_bytes =
          (size_t)(k / k_qk) * (w_type == TROUPE_Q8_0 ? sizeof(block_q8_0_dev) : sizeof(block_q4_0_dev));
      for (int64_t j0 = 0; j0 < n; j0 += k_dequant_chunk_rows) {
        const int64_t rows = std::min(k_dequant_chunk_rows, n - j0);
        invoke_dequantize(wh, half_type, static_cast<const char*>(w) + j0 * row_bytes, w_type, rows, k, stream);
        gemm_xwT(handle, y + j0, n, xh, wh, half_type, m, rows, k);  // columns j0.. of y, row stride n
      }
      return;
    }
    default:
      throw error(error_kind::unimplemented, "cuda matmul: unsupported weight type " + std::to_string((int)w_type));
  }
}

}  // namespace troupe::kern::cuda
