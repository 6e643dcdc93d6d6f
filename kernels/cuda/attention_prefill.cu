// Prefill attention. Grid (n_tiles, n_heads), 128 threads: 8 threads per query row of a
// 16-row tile; thread `sub` of a row owns output dims sub, sub+8, ... in registers.
// For each tile of 32 keys (up to the tile's last position):
//   load K, V rows through the block table into shared memory (K rows padded by one
//   float so that the score loop, 32 keys across a warp, hits 32 banks);
//   S = Q K^T (scaled, causal mask -> -inf);
//   online softmax per row: m' = max(m, max_j S), acc = acc * e^(m - m') + sum_j e^(S_j - m') V_j.
// CUDA cores only (no tensor cores): simple and exact in f32; the GEMMs dominate prefill
// at the model sizes this targets. kernels/dev/ is where a faster version would be tried.
#include "kernels/cuda/attention_prefill.cuh"

#include <algorithm>
#include <climits>
#include "kernels/cuda/common.cuh"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

constexpr int BQ = k_prefill_tile_q;
constexpr int BK = 32;
constexpr int k_threads = 128;
constexpr int k_row_threads = k_threads / BQ;                       // 8
constexpr int k_max_cols = k_prefill_max_head_dim / k_row_threads;  // 32 accumulators per thread

struct prefill_args {
  float* out;
  const float* q;
  const int32_t* block_tables;
  int64_t bt_stride;
  const int32_t* positions;
  const prefill_tile* tiles;
  int n_heads, n_kv_heads, head_dim, block_size;
  float scale;
  int window;  // > 0: each query sees only the last `window` keys (sliding-window attention)
};

size_t smem_bytes(int D) {
  return ((size_t)BQ * D + (size_t)BK * (D + 1) + (size_t)BK * D + (size_t)BQ * BK) * sizeof(float) +
         (BK + BQ) * sizeof(int);
}

template <typename KV>
__global__ void __launch_bounds__(k_threads)
    prefill_kernel(prefill_args a, const KV* __restrict__ k_pool, const KV* __restrict__ v_pool) {
  extern __shared__ float smem[];
  const int D = a.head_dim;
  float* s_q = smem;                                    // (BQ, D), pre-scaled
  float* s_k = s_q + BQ * D;                            // (BK, D + 1)
  float* s_v = s_k + BK * (D + 1);                      // (BK, D)
  float* s_s = s_v + BK * D;                            // (BQ, BK)
  int* s_slot = reinterpret_cast<int*>(s_s + BQ * BK);  // (BK)
  int* s_pos = s_slot + BK;                             // (BQ)

  const prefill_tile tile = a.tiles[blockIdx.x];
  const int h = blockIdx.y;
  const int kvh = h / (a.n_heads / a.n_kv_heads);
  const int32_t* bt = a.block_tables + (int64_t)tile.seq * a.bt_stride;

  for (int e = threadIdx.x; e < BQ * D; e += blockDim.x) {
    const int i = e / D, d = e % D;
    s_q[e] = i < tile.count ? a.q[((int64_t)(tile.first + i) * a.n_heads + h) * D + d] * a.scale : 0.0f;
  }
  if (threadIdx.x < BQ) s_pos[threadIdx.x] = threadIdx.x < tile.count ? a.positions[tile.first + threadIdx.x] : -1;
  __syncthreads();
  int max_pos = -1, min_pos = INT_MAX;
  for (int i = 0; i < BQ; ++i) {
    max_pos = max(max_pos, s_pos[i]);
    if (s_pos[i] >= 0) min_pos = min(min_pos, s_pos[i]);
  }
  // Under a window no row of the tile sees a key before its lowest row's first key.
  const int k_first = a.window > 0 && min_pos != INT_MAX ? max(0, min_pos - a.window + 1) / BK * BK : 0;

  const int row = threadIdx.x / k_row_threads, sub = threadIdx.x % k_row_threads;
  const int my_pos = s_pos[row];
  float acc[k_max_cols];
#pragma unroll
  for (int c = 0; c < k_max_cols; ++c) acc[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (int kt = k_first; kt <= max_pos; kt += BK) {
    if (threadIdx.x < BK) {
      const int p = kt + threadIdx.x;
      // the key's row: (block, KV head, offset), (n_blocks, n_kv_heads, block_size, head_dim)
      s_slot[threadIdx.x] =
          p <= max_pos ? ((int)bt[p / a.block_size] * a.n_kv_heads + kvh) * a.block_size + p % a.block_size : -1;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < BK * D; e += blockDim.x) {
      const int j = e / D, d = e % D;
      const int slot = s_slot[j];
      float kv = 0.0f, vv = 0.0f;
      if (slot >= 0) {
        const int64_t off = (int64_t)slot * D + d;
        kv = to_f32(k_pool[off]);
        vv = to_f32(v_pool[off]);
      }
      s_k[j * (D + 1) + d] = kv;
      s_v[j * D + d] = vv;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < BQ * BK; e += blockDim.x) {
      const int i = e / BK, j = e % BK;
      float sc = -INFINITY;
      if (kt + j <= s_pos[i] && (a.window <= 0 || kt + j > s_pos[i] - a.window)) {
        sc = 0.0f;
        const float* qi = s_q + i * D;
        const float* kj = s_k + j * (D + 1);
        for (int d = 0; d < D; ++d) sc += qi[d] * kj[d];
      }
      s_s[e] = sc;
    }
    __syncthreads();
    if (kt <= my_pos) {  // this row sees at least key kt
      const float* srow = s_s + row * BK;
      float tmax = -INFINITY;
      for (int j = 0; j < BK; ++j) tmax = fmaxf(tmax, srow[j]);
      const float m_new = fmaxf(m, tmax);
      const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
      l *= corr;
#pragma unroll
      for (int c = 0; c < k_max_cols; ++c) acc[c] *= corr;
      for (int j = 0; j < BK; ++j) {
        if (srow[j] == -INFINITY) continue;
        const float pj = expf(srow[j] - m_new);
        l += pj;
        const float* vj = s_v + j * D;
#pragma unroll
        for (int c = 0; c < k_max_cols; ++c) {
          const int d = sub + c * k_row_threads;
          if (d < D) acc[c] += pj * vj[d];
        }
      }
      m = m_new;
    }
    __syncthreads();  // s_k, s_v, s_s are rewritten by the next key tile
  }

  if (row < tile.count) {
    float* o = a.out + ((int64_t)(tile.first + row) * a.n_heads + h) * D;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int c = 0; c < k_max_cols; ++c) {
      const int d = sub + c * k_row_threads;
      if (d < D) o[d] = acc[c] * inv;
    }
  }
}

template <typename KV>
void launch(const prefill_args& a, const void* k_pool, const void* v_pool, int64_t n_tiles, cudaStream_t stream) {
  const size_t smem = smem_bytes(a.head_dim);
  if (smem > 48 * 1024)  // above the default limit a kernel must opt in
    TROUPE_CUDA_CHECK(cudaFuncSetAttribute(prefill_kernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid((unsigned)n_tiles, (unsigned)a.n_heads);
  prefill_kernel<KV>
      <<<grid, k_threads, smem, stream>>>(a, static_cast<const KV*>(k_pool), static_cast<const KV*>(v_pool));
  TROUPE_CUDA_CHECK_LAUNCH("attention_prefill");
}

}  // namespace

void append_prefill_tiles(std::vector<prefill_tile>& tiles, int32_t seq, int32_t first, int32_t n_tokens) {
  for (int32_t t = 0; t < n_tokens; t += BQ) tiles.push_back({seq, first + t, std::min(BQ, n_tokens - t)});
}

void invoke_attention_prefill(float* out, const float* q, const void* k_pool, const void* v_pool, bool kv_f16,
                              const int32_t* block_tables, int64_t bt_stride, const int32_t* positions,
                              const prefill_tile* tiles, int64_t n_tiles, int64_t n_heads, int64_t n_kv_heads,
                              int64_t head_dim, int64_t block_size, float scale, int64_t window, cudaStream_t stream) {
  if (n_tiles <= 0) return;
  if (head_dim <= 0 || head_dim > k_prefill_max_head_dim || n_kv_heads <= 0 || n_heads % n_kv_heads)
    throw error(error_kind::failed,
                "cuda attention_prefill: head_dim must be in 1..256 and n_heads a multiple of "
                "n_kv_heads (got head_dim " +
                    std::to_string(head_dim) + ", heads " + std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) +
                    ")");
  prefill_args a{};
  a.out = out;
  a.q = q;
  a.block_tables = block_tables;
  a.bt_stride = bt_stride;
  a.positions = positions;
  a.tiles = tiles;
  a.n_heads = (int)n_heads;
  a.n_kv_heads = (int)n_kv_heads;
  a.head_dim = (int)head_dim;
  a.block_size = (int)block_size;
  a.scale = scale;
  a.window = (int)std::min<int64_t>(window, INT32_MAX);
  if (kv_f16)
    launch<__half>(a, k_pool, v_pool, n_tiles, stream);
  else
    launch<float>(a, k_pool, v_pool, n_tiles, stream);
}

}  // namespace troupe::kern::cuda
