// Embedding lookup: one block per token id, threads over the row.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/embedding.cuh"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

template <typename T>
__global__ void embedding_dense_kernel(float* __restrict__ out, const T* __restrict__ table,
                                       const int32_t* __restrict__ ids, int64_t dim) {
  const int64_t t = blockIdx.x;
  const T* row = table + (int64_t)ids[t] * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[t * dim + i] = to_f32(row[i]);
}

// One thread per element; the block index of element i is i / 32.
__global__ void embedding_q8_0_kernel(float* __restrict__ out, const block_q8_0_dev* __restrict__ table,
                                      const int32_t* __restrict__ ids, int64_t dim) {
  const int64_t t = blockIdx.x;
  const block_q8_0_dev* row = table + (int64_t)ids[t] * (dim / k_qk);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const block_q8_0_dev& b = row[i / k_qk];
    out[t * dim + i] = __half2float(b.d) * (float)b.qs[i % k_qk];
  }
}

__global__ void embedding_q4_0_kernel(float* __restrict__ out, const block_q4_0_dev* __restrict__ table,
                                      const int32_t* __restrict__ ids, int64_t dim) {
  const int64_t t = blockIdx.x;
  const block_q4_0_dev* row = table + (int64_t)ids[t] * (dim / k_qk);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const block_q4_0_dev& b = row[i / k_qk];
    const int j = (int)(i % k_qk);
    const int q = j < k_qk / 2 ? (b.qs[j] & 0x0f) : (b.qs[j - k_qk / 2] >> 4);
    out[t * dim + i] = __half2float(b.d) * (float)(q - 8);
  }
}

}  // namespace

void invoke_embedding(float* out, const void* table, troupe_dtype dtype, const int32_t* ids, int64_t n_ids, int64_t dim,
                      cudaStream_t stream) {
  if (n_ids <= 0) return;
  const int threads = dim >= 256 ? 256 : 128;
  const dim3 grid((unsigned)n_ids);
  switch (dtype) {
    case TROUPE_F32:
      embedding_dense_kernel<<<grid, threads, 0, stream>>>(out, static_cast<const float*>(table), ids, dim);
      break;
    case TROUPE_F16:
      embedding_dense_kernel<<<grid, threads, 0, stream>>>(out, static_cast<const __half*>(table), ids, dim);
      break;
    case TROUPE_BF16:
      embedding_dense_kernel<<<grid, threads, 0, stream>>>(out, static_cast<const __nv_bfloat16*>(table), ids, dim);
      break;
    case TROUPE_Q8_0:
      if (dim % k_qk) throw error(error_kind::failed, "cuda embedding: q8_0 row length must be a multiple of 32");
      embedding_q8_0_kernel<<<grid, threads, 0, stream>>>(out, static_cast<const block_q8_0_dev*>(table), ids, dim);
      break;
    case TROUPE_Q4_0:
      if (dim % k_qk) throw error(error_kind::failed, "cuda embedding: q4_0 row length must be a multiple of 32");
      embedding_q4_0_kernel<<<grid, threads, 0, stream>>>(out, static_cast<const block_q4_0_dev*>(table), ids, dim);
      break;
    default:
      throw error(error_kind::unimplemented, "cuda embedding: unsupported table dtype " + std::to_string((int)dtype));
  }
  TROUPE_CUDA_CHECK_LAUNCH("embedding");
}

}  // namespace troupe::kern::cuda
