// Sampling without a sort. Thresholds are found by bisection over the 32-bit order-preserving
// integer image of the logits (exact in 32 steps):
//   top_k: the largest t with count(logit >= t) >= k, i.e. the k-th largest logit;
//   top_p: the largest t with mass(logit >= t) >= top_p * mass(kept), i.e. the nucleus;
//   min_p: logit >= max + T * log(min_p), i.e. p >= min_p * p_max.
// Each bisection step is one coalesced pass over the row: 32 passes of a 128k vocabulary
// cost tens of microseconds, small beside a decode step. The draw is one more bisection
// (see sample_kernel), so no sort is needed anywhere.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.cuh"

namespace troupe::kern::cuda {

namespace {

constexpr int k_threads = 1024;

// Order-preserving map float -> uint32 (larger float, larger key) and back.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float from_order_key(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Block-wide (value, index) max, first index on ties. Every thread gets the result.
__device__ void block_argmax(float& v, int64_t& idx, float* s_v, int64_t* s_i) {
  const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp;
  for (int o = k_warp / 2; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > v || (ov == v && oi < idx)) v = ov, idx = oi;
  }
  __syncthreads();
  if (lane == 0) s_v[warp] = v, s_i[warp] = idx;
  __syncthreads();
  const int n_warps = blockDim.x / k_warp;
  v = lane < n_warps ? s_v[lane] : -INFINITY;
  idx = lane < n_warps ? s_i[lane] : INT64_MAX;
  for (int o = k_warp / 2; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > v || (ov == v && oi < idx)) v = ov, idx = oi;
  }
}

// Row max M and log(sum exp(l - M)) over the row.
__device__ void row_stats(const float* l, int64_t vocab, float* scratch, float& M, float& log_z) {
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, l[i]);
  M = block_max(mx, scratch);
  float z = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) z += expf(l[i] - M);
  log_z = logf(block_sum(z, scratch));
}

__global__ void __launch_bounds__(k_threads)
    argmax_kernel(int32_t* __restrict__ ids, float* __restrict__ logprobs, const float* __restrict__ logits,
                  int64_t vocab, float inv_temp) {
  __shared__ float s_v[k_warp];
  __shared__ int64_t s_i[k_warp];
  __shared__ float scratch[k_warp];
  const float* l = logits + (int64_t)blockIdx.x * vocab;
  float v = -INFINITY;
  int64_t idx = INT64_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (l[i] > v) v = l[i], idx = i;  // strided: the first hit per thread has the smallest index
  block_argmax(v, idx, s_v, s_i);
  if (idx == INT64_MAX) idx = 0;  // all NaN or -inf
  float z = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) z += expf((l[i] - v) * inv_temp);
  z = block_sum(z, scratch);
  if (threadIdx.x == 0) {
    ids[blockIdx.x] = (int32_t)idx;
    logprobs[blockIdx.x] = -logf(z);
  }
}

// Count (or exp-mass, when MASS) of logits >= t, block-wide.
template <bool MASS>
__device__ float above(const float* l, int64_t vocab, float t, float M, float inv_temp, float* scratch) {
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (l[i] >= t) acc += MASS ? expf((l[i] - M) * inv_temp) : 1.0f;
  return block_sum(acc, scratch);
}

// The largest threshold t in [lo, hi] with f(t) >= goal (STRICT: f(t) > goal), where
// f(t) = above<MASS>(t) is non-increasing; lo when no t qualifies.
template <bool MASS, bool STRICT>
__device__ float bisect(const float* l, int64_t vocab, float lo, float hi, float goal, float M, float inv_temp,
                        float* scratch) {
  uint32_t a = order_key(lo), b = order_key(hi);
  while (a < b) {
    const uint32_t mid = a + (uint32_t)(((uint64_t)b - a + 1) / 2);  // no wrap at the full range
    const float f = above<MASS>(l, vocab, from_order_key(mid), M, inv_temp, scratch);
    if (STRICT ? f > goal : f >= goal)
      a = mid;
    else
      b = mid - 1;
  }
  return from_order_key(a);
}

// Filters as src/engine/sampler.cpp does, in its order: top_k, then top_p over the top-k mass, then
// min_p (relative to the best token, so it commutes with the others). The draw walks the kept
// tokens from the highest logit down (lowest id first on ties), like the CPU sampler: the
// chosen logit v is the largest t with mass(logit >= t) > target; ties at v are resolved by a
// scan in id order.
__global__ void __launch_bounds__(k_threads)
    sample_kernel(int32_t* __restrict__ ids, float* __restrict__ logprobs, const float* __restrict__ logits,
                  const sample_row_params* __restrict__ params, int64_t vocab) {
  __shared__ float scratch[k_warp];
  __shared__ float s_warp[k_warp];
  __shared__ int64_t s_pick;
  const sample_row_params p = params[blockIdx.x];
  if (!(p.temperature > 0.0f)) return;  // uniform over the block: no barrier is skipped
  const float* l = logits + (int64_t)blockIdx.x * vocab;
  const float inv_temp = 1.0f / p.temperature;
  float M, log_z;
  row_stats(l, vocab, scratch, M, log_z);

  float thr = -3.0e38f;  // finite, so that order keys stay in range
  if (p.top_k > 0 && p.top_k < vocab) {
    float mn = INFINITY;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) mn = fminf(mn, l[i]);
    mn = -block_max(-mn, scratch);
    thr = bisect<false, false>(l, vocab, mn, M, (float)p.top_k, M, inv_temp, scratch);
  }
  if (p.top_p < 1.0f) {
    const float kept = above<true>(l, vocab, thr, M, inv_temp, scratch);
    thr = fmaxf(thr, bisect<true, false>(l, vocab, thr, M, p.top_p * kept, M, inv_temp, scratch));
  }
  if (p.min_p > 0.0f) thr = fmaxf(thr, M + p.temperature * logf(p.min_p));
  thr = fminf(thr, M);  // the best token always survives

  const float total = above<true>(l, vocab, thr, M, inv_temp, scratch);
  float target = p.uniform * total;
  if (target >= total) target = nextafterf(total, 0.0f);  // keeps f(thr) = total > target
  const float v = bisect<true, true>(l, vocab, thr, M, target, M, inv_temp, scratch);
  // mass strictly above v: everything the walk passes before reaching the tokens at v
  const float base = v < M ? above<true>(l, vocab, from_order_key(order_key(v) + 1), M, inv_temp, scratch) : 0.0f;

  // Ties at v in id order: a block-wide exclusive scan over contiguous chunks.
  const float e_v = expf((v - M) * inv_temp);
  const int64_t chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int64_t beg = min((int64_t)threadIdx.x * chunk, vocab), end = min(beg + chunk, vocab);
  float mine = 0.0f;
  int64_t last_tie = -1;
  for (int64_t i = beg; i < end; ++i)
    if (l[i] == v) mine += e_v, last_tie = i;
  const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp;
  float incl = mine;
  for (int o = 1; o < k_warp; o <<= 1) {
    const float up = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += up;
  }
  if (lane == k_warp - 1) s_warp[warp] = incl;
  if (threadIdx.x == 0) s_pick = -1;
  __syncthreads();
  float warp_base = 0.0f;
  for (int w = 0; w < warp; ++w) warp_base += s_warp[w];
  const float prefix = base + warp_base + incl - mine;
  if (mine > 0.0f && target >= prefix && target < prefix + mine) {
    float c = prefix;
    int64_t pick = last_tie;  // rounding: the walk may end just short of the target
    for (int64_t i = beg; i < end; ++i)
      if (l[i] == v) {
        c += e_v;
        if (c > target) {
          pick = i;
          break;
        }
      }
    s_pick = pick;  // at most one thread's range holds the target
  }
  __syncthreads();
  int64_t pick = s_pick;
  if (pick < 0) {  // the target fell outside every partial sum by rounding: the last tie
    const float last = block_max((float)last_tie, scratch);
    pick = last >= 0.0f ? (int64_t)last : 0;
  }
  if (threadIdx.x == 0) {
    ids[blockIdx.x] = (int32_t)pick;
    logprobs[blockIdx.x] = l[pick] - M - log_z;
  }
}

}  // namespace

void invoke_argmax(int32_t* ids, float* logprobs, const float* logits, int64_t n_rows, int64_t vocab,
                   cudaStream_t stream, float temperature) {
  if (n_rows <= 0) return;
  argmax_kernel<<<(unsigned)n_rows, k_threads, 0, stream>>>(ids, logprobs, logits, vocab, 1.0f / temperature);
  TROUPE_CUDA_CHECK_LAUNCH("argmax");
}

void invoke_sample(int32_t* ids, float* logprobs, const float* logits, const sample_row_params* params, int64_t n_rows,
                   int64_t vocab, cudaStream_t stream) {
  if (n_rows <= 0) return;
  sample_kernel<<<(unsigned)n_rows, k_threads, 0, stream>>>(ids, logprobs, logits, params, vocab);
  TROUPE_CUDA_CHECK_LAUNCH("sample");
}

}  // namespace troupe::kern::cuda
