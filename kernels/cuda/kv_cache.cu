#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_cache.cuh"

namespace troupe::kern::cuda {

namespace {

template <typename T>
__global__ void kv_store_kernel(T* __restrict__ k_pool, T* __restrict__ v_pool, const float* __restrict__ k,
                                const float* __restrict__ v, int64_t src_stride, const int32_t* __restrict__ slots,
                                int64_t kv_dim, int64_t head_dim, int64_t block_size) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0) return;
  const int64_t block = slot / block_size, offset = slot % block_size, n_kv_heads = kv_dim / head_dim;
  for (int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    const int64_t h = i / head_dim, d = i % head_dim;
    const int64_t at = ((block * n_kv_heads + h) * block_size + offset) * head_dim + d;
    k_pool[at] = from_f32<T>(k[t * src_stride + i]);
    v_pool[at] = from_f32<T>(v[t * src_stride + i]);
  }
}

}  // namespace

void invoke_kv_store(void* k_pool, void* v_pool, bool kv_f16, const float* k, const float* v, int64_t src_stride,
                     const int32_t* slots, int64_t n_tokens, int64_t kv_dim, int64_t head_dim, int64_t block_size,
                     cudaStream_t stream) {
  if (n_tokens <= 0) return;
  const int threads = kv_dim >= 256 ? 256 : 128;
  if (kv_f16)
    kv_store_kernel<<<(unsigned)n_tokens, threads, 0, stream>>>(static_cast<__half*>(k_pool),
                                                                static_cast<__half*>(v_pool), k, v, src_stride, slots,
                                                                kv_dim, head_dim, block_size);
  else
    kv_store_kernel<<<(unsigned)n_tokens, threads, 0, stream>>>(static_cast<float*>(k_pool),
                                                                static_cast<float*>(v_pool), k, v, src_stride, slots,
                                                                kv_dim, head_dim, block_size);
  TROUPE_CUDA_CHECK_LAUNCH("kv_store");
}

void invoke_kv_copy_block(void* k_pool, void* v_pool, bool kv_f16, int32_t src, int32_t dst, int64_t block_size,
                          int64_t kv_dim, cudaStream_t stream) {
  const size_t elem = kv_f16 ? 2 : 4;
  const size_t bytes = (size_t)block_size * kv_dim * elem;
  for (void* pool : {k_pool, v_pool}) {
    char* base = static_cast<char*>(pool);
    TROUPE_CUDA_CHECK(cudaMemcpyAsync(base + (size_t)dst * bytes, base + (size_t)src * bytes, bytes,
                                      cudaMemcpyDeviceToDevice, stream));
  }
}

}  // namespace troupe::kern::cuda
