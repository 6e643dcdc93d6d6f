// Paged causal attention for prefill: tiles of query tokens against tiles of keys, with
// an online softmax, so that no (n_tokens, n_keys) score matrix is ever stored.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace troupe::kern::cuda {

constexpr int k_prefill_tile_q = 16;  // query tokens per tile
constexpr int k_prefill_max_head_dim = 256;

// One tile of query tokens of one sequence: tokens [first, first + count) of the batch,
// count <= k_prefill_tile_q. Three int32 per tile on the device: seq, first, count.
struct prefill_tile {
  int32_t seq;
  int32_t first;
  int32_t count;
};

// Appends the tiles covering n_tokens tokens of sequence `seq` starting at batch row `first`.
void append_prefill_tiles(std::vector<prefill_tile>& tiles, int32_t seq, int32_t first, int32_t n_tokens);

// out (n_tokens, n_heads, head_dim) f32 for the tokens named by `tiles` (n_tiles, on the
// device): query token t of sequence seq sits at positions[t] and attends keys
// 0..positions[t] of that sequence. q as out. k_pool, v_pool: one layer,
// (n_blocks, n_kv_heads, block_size, head_dim) in f16 (kv_f16) or f32 (as kernel_abi.h).
// block_tables (n_seqs, bt_stride). The keys of the tile's own tokens must already be in
// the pool.
void invoke_attention_prefill(float* out, const float* q, const void* k_pool, const void* v_pool, bool kv_f16,
                              const int32_t* block_tables, int64_t bt_stride, const int32_t* positions,
                              const prefill_tile* tiles, int64_t n_tiles, int64_t n_heads, int64_t n_kv_heads,
                              int64_t head_dim, int64_t block_size, float scale, int64_t window, cudaStream_t stream);

}  // namespace troupe::kern::cuda
