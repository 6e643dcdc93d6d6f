// Writing new keys and values into the paged KV pool.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace troupe::kern::cuda {

// k, v: (n_tokens, kv_dim) f32, row t at k + t * src_stride. slots (n_tokens) on the
// device: token t goes to slot slots[t] = block * block_size + offset; a negative slot skips
// the token. k_pool, v_pool: (n_blocks, n_kv_heads, block_size, head_dim) in f16 (kv_f16)
// or f32, kv_dim = n_kv_heads * head_dim: KV head h of the token lands in row
// (block * n_kv_heads + h) * block_size + offset.
void invoke_kv_store(void* k_pool, void* v_pool, bool kv_f16, const float* k, const float* v, int64_t src_stride,
                     const int32_t* slots, int64_t n_tokens, int64_t kv_dim, int64_t head_dim, int64_t block_size,
                     cudaStream_t stream);

// Copies block src onto block dst (block_size * kv_dim elements), for one layer's K and V.
void invoke_kv_copy_block(void* k_pool, void* v_pool, bool kv_f16, int32_t src, int32_t dst, int64_t block_size,
                          int64_t kv_dim, cudaStream_t stream);

}  // namespace troupe::kern::cuda
