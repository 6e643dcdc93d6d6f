// Paged attention for decode (one query token per sequence), flash-decoding style: the key
// range is split into partitions of k_decode_partition keys that run in parallel, and a
// second kernel merges their partial softmax results.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace troupe::kern::cuda {

constexpr int k_decode_partition = 256;  // keys per partition
constexpr int k_decode_max_head_dim = 256;

// Partitions needed for a longest sequence of n_keys keys.
inline int decode_partitions(int64_t n_keys) { return (int)((n_keys + k_decode_partition - 1) / k_decode_partition); }

// Scratch for invoke_attention_decode, in bytes (0 when n_partitions == 1).
size_t attention_decode_workspace_bytes(int64_t n_seqs, int64_t n_heads, int64_t head_dim, int n_partitions);

// out (n_seqs, n_heads, head_dim) f32: attention of query q (n_seqs, n_heads, head_dim) f32
// of sequence s, at position positions[s], over its keys 0..positions[s] (the last `window`
// of them when window > 0).
// k_pool, v_pool: one layer, (n_blocks, n_kv_heads, block_size, head_dim) in f16 (kv_f16)
// or f32 (the layout of kernel_abi.h). block_tables (n_seqs, bt_stride): physical block of each logical block.
// n_partitions must cover the longest sequence (decode_partitions(max position + 1));
// more is allowed (empty partitions exit early), which keeps a captured graph valid as
// sequences grow. All pointers are device pointers; workspace as sized above.
void invoke_attention_decode(float* out, const float* q, const void* k_pool, const void* v_pool, bool kv_f16,
                             const int32_t* block_tables, int64_t bt_stride, const int32_t* positions, int64_t n_seqs,
                             int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale,
                             int64_t window, int n_partitions, void* workspace, cudaStream_t stream);

}  // namespace troupe::kern::cuda
