// Decode attention. Grid (n_heads, n_seqs, n_partitions), 128 threads per block.
//   1. scores: each warp takes keys of the partition in turn; lanes split head_dim and
//      reduce with shuffles. Scores and the pool slot of each key go to shared memory.
//   2. softmax over the partition: block max and sum.
//   3. values: thread groups split the keys, threads in a group split head_dim (coalesced
//      reads of V rows), and groups are summed in shared memory.
// With one partition the block writes the final output; otherwise it writes the
// unnormalized partial output with its max m and sum l, and decode_reduce_kernel merges:
//   out = sum_i exp(m_i - M) * o_i / sum_i exp(m_i - M) * l_i.
#include "kernels/cuda/attention_decode.cuh"

#include <algorithm>
#include <climits>

#include "kernels/cuda/common.cuh"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

constexpr int k_threads = 128;

struct decode_args {
  float* out;       // (n_seqs, n_heads, head_dim)
  float* part_out;  // (n_seqs, n_heads, n_part, head_dim)
  float* part_ml;   // (n_seqs, n_heads, n_part, 2)
  const float* q;
  const int32_t* block_tables;
  int64_t bt_stride;
  const int32_t* positions;
  int n_heads, n_kv_heads, head_dim, block_size, n_part;
  float scale;
  int window;  // > 0: only the last `window` keys (sliding-window attention)
};

template <typename KV>
__global__ void __launch_bounds__(k_threads)
    decode_partition_kernel(decode_args a, const KV* __restrict__ k_pool, const KV* __restrict__ v_pool) {
  extern __shared__ float smem[];
  float* s_q = smem;                                                     // (head_dim)
  float* s_p = s_q + a.head_dim;                                         // (k_decode_partition) scores, then weights
  int* s_slot = reinterpret_cast<int*>(s_p + k_decode_partition);        // (k_decode_partition)
  float* s_red = reinterpret_cast<float*>(s_slot + k_decode_partition);  // (k_threads)
  __shared__ float scratch[k_warp];

  const int h = blockIdx.x, s = blockIdx.y, part = blockIdx.z;
  const int D = a.head_dim;
  const int kvh = h / (a.n_heads / a.n_kv_heads);
  const int n_keys = a.positions[s] + 1;
  const int first = a.window > 0 && n_keys > a.window ? n_keys - a.window : 0;  // the window's first key
  const int kbeg = max(part * k_decode_partition, first);
  const int kend = min((part + 1) * k_decode_partition, n_keys);
  const int64_t row = (int64_t)s * a.n_heads + h;
  const int64_t prow = row * a.n_part + part;
  if (kbeg >= kend) {  // the whole block leaves together: no barrier is skipped
    if (a.n_part > 1 && threadIdx.x == 0) {
      a.part_ml[prow * 2] = -INFINITY;
      a.part_ml[prow * 2 + 1] = 0.0f;
    }
    return;
  }
  const int n = kend - kbeg;
  const int32_t* bt = a.block_tables + (int64_t)s * a.bt_stride;

  for (int d = threadIdx.x; d < D; d += blockDim.x) s_q[d] = a.q[row * D + d] * a.scale;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const int p = kbeg + j;
    // the key's row in the pool: (block, KV head, offset) with the heads' rows of a block
    // contiguous (n_blocks, n_kv_heads, block_size, head_dim)
    s_slot[j] = ((int)bt[p / a.block_size] * a.n_kv_heads + kvh) * a.block_size + p % a.block_size;
  }
  __syncthreads();

  // 1. scores
  const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp, n_warps = blockDim.x / k_warp;
  for (int j = warp; j < n; j += n_warps) {
    const KV* kp = k_pool + (int64_t)s_slot[j] * D;
    float dot = 0.0f;
    for (int d = lane; d < D; d += k_warp) dot += s_q[d] * to_f32(kp[d]);
    dot = warp_sum(dot);
    if (lane == 0) s_p[j] = dot;
  }
  __syncthreads();

  // 2. softmax over the partition
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, s_p[j]);
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = expf(s_p[j] - mx);
    s_p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);  // its barriers also publish s_p

  // 3. values: groups of D threads (or one group looping over D when D > blockDim)
  const int n_groups = D >= (int)blockDim.x ? 1 : (int)blockDim.x / D;
  const int g = threadIdx.x / (D >= (int)blockDim.x ? (int)blockDim.x : D);
  const int d0 = D >= (int)blockDim.x ? threadIdx.x : threadIdx.x % D;
  for (int d = d0; d < D; d += (n_groups == 1 ? blockDim.x : D)) {
    float acc = 0.0f;
    if (g < n_groups)
      for (int j = g; j < n; j += n_groups) acc += s_p[j] * to_f32(v_pool[(int64_t)s_slot[j] * D + d]);
    if (n_groups > 1) {
      if (g < n_groups) s_red[g * D + d] = acc;
      __syncthreads();
      if (g == 0)
        for (int gg = 1; gg < n_groups; ++gg) acc += s_red[gg * D + d];
    }
    if (g == 0) {
      if (a.n_part == 1)
        a.out[row * D + d] = acc / sum;
      else
        a.part_out[prow * D + d] = acc;
    }
  }
  if (a.n_part > 1 && threadIdx.x == 0) {
    a.part_ml[prow * 2] = mx;
    a.part_ml[prow * 2 + 1] = sum;
  }
}

// Grid (n_heads, n_seqs); threads over head_dim.
__global__ void decode_reduce_kernel(float* __restrict__ out, const float* __restrict__ part_out,
                                     const float* __restrict__ part_ml, int n_heads, int head_dim, int n_part) {
  const int64_t row = (int64_t)blockIdx.y * n_heads + blockIdx.x;
  const float* ml = part_ml + row * n_part * 2;
  float M = -INFINITY;
  for (int i = 0; i < n_part; ++i) M = fmaxf(M, ml[2 * i]);
  float L = 0.0f;
  for (int i = 0; i < n_part; ++i)
    if (ml[2 * i + 1] > 0.0f) L += ml[2 * i + 1] * expf(ml[2 * i] - M);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < n_part; ++i)
      if (ml[2 * i + 1] > 0.0f) acc += part_out[(row * n_part + i) * head_dim + d] * expf(ml[2 * i] - M);
    out[row * head_dim + d] = L > 0.0f ? acc / L : 0.0f;
  }
}

}  // namespace

size_t attention_decode_workspace_bytes(int64_t n_seqs, int64_t n_heads, int64_t head_dim, int n_partitions) {
  if (n_partitions <= 1) return 0;
  return (size_t)n_seqs * n_heads * n_partitions * (head_dim + 2) * sizeof(float);
}

void invoke_attention_decode(float* out, const float* q, const void* k_pool, const void* v_pool, bool kv_f16,
                             const int32_t* block_tables, int64_t bt_stride, const int32_t* positions, int64_t n_seqs,
                             int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale,
                             int64_t window, int n_partitions, void* workspace, cudaStream_t stream) {
  if (n_seqs <= 0) return;
  if (head_dim <= 0 || head_dim > k_decode_max_head_dim || n_kv_heads <= 0 || n_heads % n_kv_heads)
    throw error(error_kind::failed,
                "cuda attention_decode: head_dim must be in 1..256 and n_heads a multiple of "
                "n_kv_heads (got head_dim " +
                    std::to_string(head_dim) + ", heads " + std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) +
                    ")");
  if (n_partitions < 1) n_partitions = 1;
  if (n_partitions > 1 && !workspace)
    throw error(error_kind::failed, "cuda attention_decode: a workspace is needed for more than one partition");
  decode_args a{};
  a.out = out;
  a.part_out = static_cast<float*>(workspace);
  a.part_ml = a.part_out ? a.part_out + n_seqs * n_heads * n_partitions * head_dim : nullptr;
  a.q = q;
  a.block_tables = block_tables;
  a.bt_stride = bt_stride;
  a.positions = positions;
  a.n_heads = (int)n_heads;
  a.n_kv_heads = (int)n_kv_heads;
  a.head_dim = (int)head_dim;
  a.block_size = (int)block_size;
  a.n_part = n_partitions;
  a.scale = scale;
  a.window = (int)std::min<int64_t>(window, INT32_MAX);
  const dim3 grid((unsigned)n_heads, (unsigned)n_seqs, (unsigned)n_partitions);
  const size_t smem = (head_dim + 2 * k_decode_partition + k_threads) * sizeof(float);
  if (kv_f16)
    decode_partition_kernel<__half>
        <<<grid, k_threads, smem, stream>>>(a, static_cast<const __half*>(k_pool), static_cast<const __half*>(v_pool));
  else
    decode_partition_kernel<float>
        <<<grid, k_threads, smem, stream>>>(a, static_cast<const float*>(k_pool), static_cast<const float*>(v_pool));
  TROUPE_CUDA_CHECK_LAUNCH("attention_decode");
  if (n_partitions > 1) {
    const dim3 rgrid((unsigned)n_heads, (unsigned)n_seqs);
    decode_reduce_kernel<<<rgrid, head_dim >= 128 ? 128 : 64, 0, stream>>>(out, a.part_out, a.part_ml, (int)n_heads,
                                                                           (int)head_dim, n_partitions);
    TROUPE_CUDA_CHECK_LAUNCH("attention_decode_reduce");
  }
}

}  // namespace troupe::kern::cuda
