// Paged decode attention kernel versions, in the style of llm.c's dev/cuda. One query token
// per sequence, K/V in f16 in a paged pool (n_blocks, n_kv_heads, block_size, head_dim),
// grouped-query heads. Versions:
//   1. one thread block per (head, sequence), naive: a thread per key computes a whole dot
//      product (strided K reads), scores in shared memory, then threads over head_dim
//   2. split-KV (flash-decoding): partitions of 256 keys in parallel, a warp per key with
//      lanes over head_dim, a second kernel merging the partial softmaxes
//      (what kernels/cuda/attention_decode.cu uses)
//   3. split-KV, a warp per chunk of keys with 8-byte (4 x f16) loads and an online softmax
//      in registers: no shared score array, one barrier per block
// Each version is checked against the CPU reference, then timed; a GB/s table is printed
// (bytes = the K and V rows each sequence reads once).
// usage: attention_decode [kernel_num]   (no argument: all versions)
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "dev_common.cuh"

constexpr int B = 8, H = 32, KVH = 8, D = 128, BS = 16, MAX_LEN = 4096;

// ---- CPU reference -------------------------------------------------------------------------
// out (B, H, D): softmax(q k^T * scale) v over keys 0..lens[s]-1 of sequence s
void attention_cpu(float* out, const float* q, const std::vector<float>& k, const std::vector<float>& v,
                   const std::vector<int>& tables, int bt_stride, const std::vector<int>& lens, float scale) {
  std::vector<double> sc(MAX_LEN);
  for (int s = 0; s < B; ++s)
    for (int h = 0; h < H; ++h) {
      const int kvh = h / (H / KVH);
      const float* qh = q + ((size_t)s * H + h) * D;
      auto row = [&](const std::vector<float>& pool, int p) {
        const int r = (tables[s * bt_stride + p / BS] * KVH + kvh) * BS + p % BS;  // see row_of
        return &pool[(size_t)r * D];
      };
      double mx = -1e300;
      for (int p = 0; p < lens[s]; ++p) {
        double dot = 0.0;
        for (int d = 0; d < D; ++d) dot += (double)qh[d] * row(k, p)[d];
        sc[p] = dot * scale;
        mx = std::max(mx, sc[p]);
      }
      double sum = 0.0;
      for (int p = 0; p < lens[s]; ++p) sum += sc[p] = std::exp(sc[p] - mx);
      for (int d = 0; d < D; ++d) {
        double acc = 0.0;
        for (int p = 0; p < lens[s]; ++p) acc += sc[p] * row(v, p)[d];
        out[((size_t)s * H + h) * D + d] = (float)(acc / sum);
      }
    }
}

// ---- shared pieces -----------------------------------------------------------------------------

struct args {
  const float* q;  // (B, H, D)
  const half* k;
  const half* v;
  const int* tables;  // (B, bt_stride)
  int bt_stride;
  const int* lens;  // (B)
  float scale;
  float* out;       // (B, H, D)
  float* part_out;  // (B, H, n_part, D) unnormalized
  float* part_ml;   // (B, H, n_part, 2) max and sum
  int n_part;
};

// The pool row of position p of sequence s for KV head kvh: a head's keys of one block are
// contiguous, (n_blocks, n_kv_heads, block_size, head_dim), as in kernel_abi.h.
__device__ __forceinline__ int row_of(const args& a, int s, int p, int kvh) {
  return (a.tables[s * a.bt_stride + p / BS] * KVH + kvh) * BS + p % BS;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions through shared memory (all threads get the result).
__device__ float block_reduce(float v, bool is_max) {
  __shared__ float w[32];
  v = is_max ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) w[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? w[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
  v = threadIdx.x < 32 ? v : (is_max ? -INFINITY : 0.0f);
  v = is_max ? warp_max(v) : warp_sum(v);
  __shared__ float r;
  if (threadIdx.x == 0) r = v;
  __syncthreads();
  return r;
}

// Merges the partitions: out = sum_i e^(m_i - M) o_i / sum_i e^(m_i - M) l_i. Grid (H, B).
__global__ void reduce_kernel(args a) {
  const size_t row = (size_t)blockIdx.y * H + blockIdx.x;
  const float* ml = a.part_ml + row * a.n_part * 2;
  float M = -INFINITY, L = 0.0f;
  for (int i = 0; i < a.n_part; ++i) M = fmaxf(M, ml[2 * i]);
  for (int i = 0; i < a.n_part; ++i)
    if (ml[2 * i + 1] > 0.0f) L += ml[2 * i + 1] * expf(ml[2 * i] - M);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < a.n_part; ++i)
      if (ml[2 * i + 1] > 0.0f) acc += a.part_out[(row * a.n_part + i) * D + d] * expf(ml[2 * i] - M);
    a.out[row * D + d] = acc / L;
  }
}

// ---- kernel 1: one block per (head, sequence), naive -----------------------------------------

__global__ void attention_decode_kernel1(args a) {
  extern __shared__ float scores[];  // (MAX_LEN)
  const int h = blockIdx.x, s = blockIdx.y, kvh = h / (H / KVH), n = a.lens[s];
  const float* q = a.q + ((size_t)s * H + h) * D;
  float mx = -INFINITY;
  for (int p = threadIdx.x; p < n; p += blockDim.x) {
    const half* kr = a.k + (size_t)row_of(a, s, p, kvh) * D;
    float dot = 0.0f;
    for (int d = 0; d < D; ++d) dot += q[d] * __half2float(kr[d]);
    scores[p] = dot * a.scale;
    mx = fmaxf(mx, scores[p]);
  }
  mx = block_reduce(mx, true);
  float sum = 0.0f;
  for (int p = threadIdx.x; p < n; p += blockDim.x) sum += scores[p] = expf(scores[p] - mx);
  sum = block_reduce(sum, false);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int p = 0; p < n; ++p) acc += scores[p] * __half2float(a.v[(size_t)row_of(a, s, p, kvh) * D + d]);
    a.out[((size_t)s * H + h) * D + d] = acc / sum;
  }
}

// ---- kernel 2: split-KV, a warp per key ----------------------------------------------------------

constexpr int P2 = 256;

__global__ void attention_decode_kernel2(args a) {
  __shared__ float s_q[D], s_p[P2];
  __shared__ int s_slot[P2];
  const int h = blockIdx.x, s = blockIdx.y, part = blockIdx.z, kvh = h / (H / KVH);
  const size_t prow = ((size_t)s * H + h) * a.n_part + part;
  const int kbeg = part * P2, n = min(P2, a.lens[s] - kbeg);
  if (n <= 0) {
    if (threadIdx.x == 0) a.part_ml[prow * 2] = -INFINITY, a.part_ml[prow * 2 + 1] = 0.0f;
    return;
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) s_q[d] = a.q[((size_t)s * H + h) * D + d] * a.scale;
  for (int j = threadIdx.x; j < n; j += blockDim.x) s_slot[j] = row_of(a, s, kbeg + j, kvh);
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int j = warp; j < n; j += blockDim.x / 32) {
    const half* kr = a.k + (size_t)s_slot[j] * D;
    float dot = 0.0f;
    for (int d = lane; d < D; d += 32) dot += s_q[d] * __half2float(kr[d]);
    dot = warp_sum(dot);
    if (lane == 0) s_p[j] = dot;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, s_p[j]);
  mx = block_reduce(mx, true);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) sum += s_p[j] = expf(s_p[j] - mx);
  sum = block_reduce(sum, false);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {  // blockDim.x == D here
    float acc = 0.0f;
    for (int j = 0; j < n; ++j) acc += s_p[j] * __half2float(a.v[(size_t)s_slot[j] * D + d]);
    a.part_out[prow * D + d] = acc;
  }
  if (threadIdx.x == 0) a.part_ml[prow * 2] = mx, a.part_ml[prow * 2 + 1] = sum;
}

// ---- kernel 3: split-KV, a warp per key chunk, 8-byte loads, online softmax --------------------

constexpr int WARPS3 = 4, P3 = 512, C3 = D / 128;  // C3 chunks of 4 dims per lane

__device__ __forceinline__ void load4(const half* p, float (&f)[4]) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __half22float2(*reinterpret_cast<const half2*>(&raw.x));
  const float2 hi = __half22float2(*reinterpret_cast<const half2*>(&raw.y));
  f[0] = lo.x, f[1] = lo.y, f[2] = hi.x, f[3] = hi.y;
}

__global__ void __launch_bounds__(WARPS3 * 32) attention_decode_kernel3(args a) {
  __shared__ float s_m[WARPS3], s_l[WARPS3], s_acc[WARPS3][D];
  const int h = blockIdx.x, s = blockIdx.y, part = blockIdx.z, kvh = h / (H / KVH);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const size_t prow = ((size_t)s * H + h) * a.n_part + part;
  const int n_keys = a.lens[s], kbeg = part * P3;
  if (kbeg >= n_keys) {
    if (threadIdx.x == 0) a.part_ml[prow * 2] = -INFINITY, a.part_ml[prow * 2 + 1] = 0.0f;
    return;
  }
  float qv[C3][4], acc[C3][4] = {};
  for (int c = 0; c < C3; ++c)
    for (int e = 0; e < 4; ++e) qv[c][e] = a.q[((size_t)s * H + h) * D + 4 * (lane + 32 * c) + e] * a.scale;
  float m = -INFINITY, l = 0.0f;
  const int wbeg = kbeg + warp * (P3 / WARPS3), wend = min(wbeg + P3 / WARPS3, n_keys);
  for (int p = wbeg; p < wend; ++p) {
    const size_t off = (size_t)row_of(a, s, p, kvh) * D;
    float dot = 0.0f;
    for (int c = 0; c < C3; ++c) {
      float kf[4];
      load4(a.k + off + 4 * (lane + 32 * c), kf);
      dot += qv[c][0] * kf[0] + qv[c][1] * kf[1] + qv[c][2] * kf[2] + qv[c][3] * kf[3];
    }
    dot = warp_sum(dot);
    const float m_new = fmaxf(m, dot);
    const float corr = expf(m - m_new);  // m = -inf on the first key: 0
    const float e = expf(dot - m_new);
    l = l * corr + e;
    for (int c = 0; c < C3; ++c) {
      float vf[4];
      load4(a.v + off + 4 * (lane + 32 * c), vf);
      for (int i = 0; i < 4; ++i) acc[c][i] = acc[c][i] * corr + e * vf[i];
    }
    m = m_new;
  }
  for (int c = 0; c < C3; ++c)
    for (int i = 0; i < 4; ++i) s_acc[warp][4 * (lane + 32 * c) + i] = acc[c][i];
  if (lane == 0) s_m[warp] = m, s_l[warp] = l;
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < WARPS3; ++w) M = fmaxf(M, s_m[w]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < WARPS3; ++w)
      if (s_l[w] > 0.0f) o += s_acc[w][d] * expf(s_m[w] - M);
    a.part_out[prow * D + d] = o;
  }
  if (threadIdx.x == 0) {
    float L = 0.0f;
    for (int w = 0; w < WARPS3; ++w)
      if (s_l[w] > 0.0f) L += s_l[w] * expf(s_m[w] - M);
    a.part_ml[prow * 2] = M, a.part_ml[prow * 2 + 1] = L;
  }
}

// ---- launchers -----------------------------------------------------------------------------------

void run(int kernel_num, args a) {
  switch (kernel_num) {
    case 1:
      attention_decode_kernel1<<<dim3(H, B), 256, MAX_LEN * sizeof(float)>>>(a);
      break;
    case 2:
      a.n_part = (MAX_LEN + P2 - 1) / P2;
      attention_decode_kernel2<<<dim3(H, B, a.n_part), D>>>(a);
      reduce_kernel<<<dim3(H, B), D>>>(a);
      break;
    case 3:
      a.n_part = (MAX_LEN + P3 - 1) / P3;
      attention_decode_kernel3<<<dim3(H, B, a.n_part), WARPS3 * 32>>>(a);
      reduce_kernel<<<dim3(H, B), D>>>(a);
      break;
    default:
      std::fprintf(stderr, "unknown kernel %d\n", kernel_num);
      std::exit(1);
  }
  DEV_CHECK(cudaGetLastError());
}

int main(int argc, char** argv) {
  dev::require_device();
  const int only = argc > 1 ? std::atoi(argv[1]) : 0;
  const int bt_stride = MAX_LEN / BS, n_blocks = B * bt_stride;
  std::vector<int> lens(B);
  for (int s = 0; s < B; ++s) lens[s] = MAX_LEN - 397 * s;  // ragged lengths
  std::vector<int> tables(n_blocks);
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), std::mt19937(7));
  const size_t pool = (size_t)n_blocks * BS * KVH * D;
  auto k = dev::random_floats(pool, 1), v = dev::random_floats(pool, 2);
  std::vector<half> kh(pool), vh(pool);
  for (size_t i = 0; i < pool; ++i) {  // the reference sees the same f16-rounded values
    kh[i] = __float2half(k[i]), k[i] = __half2float(kh[i]);
    vh[i] = __float2half(v[i]), v[i] = __half2float(vh[i]);
  }
  const auto q = dev::random_floats((size_t)B * H * D, 3);
  const float scale = 1.0f / std::sqrt((float)D);
  std::vector<float> ref((size_t)B * H * D);
  std::printf("computing the CPU reference...\n");
  attention_cpu(ref.data(), q.data(), k, v, tables, bt_stride, lens, scale);

  args a{};
  a.q = dev::to_device(q);
  a.k = dev::to_device(kh);
  a.v = dev::to_device(vh);
  a.tables = dev::to_device(tables);
  a.bt_stride = bt_stride;
  a.lens = dev::to_device(lens);
  a.scale = scale;
  DEV_CHECK(cudaMalloc(&a.out, ref.size() * sizeof(float)));
  const int max_part = (MAX_LEN + P2 - 1) / P2;
  DEV_CHECK(cudaMalloc(&a.part_out, (size_t)B * H * max_part * D * sizeof(float)));
  DEV_CHECK(cudaMalloc(&a.part_ml, (size_t)B * H * max_part * 2 * sizeof(float)));

  double keys = 0;
  for (int s = 0; s < B; ++s) keys += lens[s];
  const double bytes = keys * KVH * D * 2 /*K and V*/ * sizeof(half);
  std::printf("decode attention: %d seqs (%d..%d keys), heads %d/%d, head_dim %d, block %d, f16 KV\n", B, lens[B - 1],
              lens[0], H, KVH, D, BS);
  const bool all_ok = dev::check_and_time(
      only, 3, [&](int k) { run(k, a); }, a.out, ref, 2e-3f, 1e-2f, bytes);
  return all_ok ? 0 : 1;
}
