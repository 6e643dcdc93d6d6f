// The CPU kernels, written once over the vector vocabulary of simd.h and compiled once per
// instruction set: ops_avx512.cpp, ops_avx2.cpp and ops_generic.cpp define TROUPE_ISA_NS
// and TROUPE_ISA_NAME and include this file. See simd.h for why nothing here uses a C++
// library template.
#if defined(__x86_64__) && (defined(__AVX2__) || defined(__AVX512F__))
#include <immintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <new>  // std::bad_alloc: a kernel cannot return an error

#include "kernels/ref/dtype.h"  // block layouts only; its inline functions are not called here
#include "troupe/kernel_abi.h"

namespace troupe::kern::cpu::TROUPE_ISA_NS {
namespace {

#include "kernels/cpu/simd.h"

// ============================ work splitting and scratch ============================

// Runs f(begin, end) over [0, n) on the context's pool (or inline).
template <typename F>
void trampoline(void* arg, int64_t begin, int64_t end) {
  (*static_cast<F*>(arg))(begin, end);
}
template <typename F>
void parallel(const troupe_kctx* ctx, int64_t n, F f) {
  if (n <= 0) return;
  if (ctx && ctx->parallel_for && n > 1)
    ctx->parallel_for(ctx->pool, n, &trampoline<F>, &f);
  else
    f(0, n);
}

// Below about this much work (multiply-adds or elements touched) an op runs on the calling
// thread: handing it to the pool costs microseconds, more than a tiny model's op itself.
constexpr int64_t k_min_parallel_work = 1 << 15;
static inline const troupe_kctx* threads_for(const troupe_kctx* ctx, int64_t work) {
  return work >= k_min_parallel_work ? ctx : nullptr;
}

// A 64-byte aligned scratch buffer owned for one call.
struct scratch {
  void* p = nullptr;
  explicit scratch(size_t bytes) {
    p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!p) throw std::bad_alloc();
  }
  ~scratch() { free(p); }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  template <typename T>
  T* as(size_t offset_bytes = 0) const {
    return (T*)((char*)p + offset_bytes);
  }
};

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ============================ matmul: tiling ============================
// y(m, n) = x(m, k) . W(n, k)^T. The output is cut into tasks of up to MC rows of x by NC
// rows of W; inside a task, tiles of MR x NR outputs keep MR * NR accumulators in
// registers, so each weight vector loaded serves MR rows of x and each x vector NR rows of
// W. Edge tiles repeat the last valid row (the extra results are not stored).

#if defined(__AVX512F__)
constexpr int k_mr = 4, k_nr = 4;  // 16 zmm accumulators of 32 (8 x 2 and 6 x 3 measured slower)
#elif defined(__AVX2__)
constexpr int k_mr = 4, k_nr = 2;  // 8 ymm accumulators of 16
#else
constexpr int k_mr = 4, k_nr = 2;
#endif
constexpr int k_decode_nr = 8;  // m == 1: eight weight rows per tile (fewer measured slower for Q8_0)
constexpr int64_t k_nc = 16;    // weight rows per task
constexpr int64_t k_mc = 64;    // x rows per task (a multiple of every MR used)

// tile<MR, NR>(i0, mr, j0, nr) computes the output rows i0..i0+mr-1, columns j0..j0+nr-1.
template <int MR, int NR, typename Tile>
void run_tiles(const troupe_kctx* ctx, int64_t m, int64_t n, Tile tile) {
  const int64_t n_mc = (m + k_mc - 1) / k_mc, n_nc = (n + k_nc - 1) / k_nc;
  parallel(ctx, n_mc * n_nc, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      // Consecutive tasks share a weight chunk, so one thread's range reuses it from cache.
      const int64_t nc = t / n_mc, mc = t % n_mc;
      const int64_t i_end = min64(m, (mc + 1) * k_mc), j_end = min64(n, (nc + 1) * k_nc);
      for (int64_t i0 = mc * k_mc; i0 < i_end; i0 += MR)
        for (int64_t j0 = nc * k_nc; j0 < j_end; j0 += NR)
          tile.template operator()<MR, NR>(i0, (int)min64(MR, i_end - i0), j0, (int)min64(NR, j_end - j0));
    }
  });
}

// A matrix-vector product (m == 1) streams the weights once with several rows in flight;
// otherwise register tiles of MR x NR (k_mr x k_nr unless the kernel picks its own, as the
// AVX-512 quantized one does for m >= 8). `tile` is a lambda templated on <MR, NR>.
template <int MR, int NR, typename Tile>
void matmul_tiles_as(const troupe_kctx* ctx, int64_t m, int64_t n, int64_t k, Tile tile) {
  ctx = threads_for(ctx, m * n * k);
  if (m == 1)
    run_tiles<1, k_decode_nr>(ctx, m, n, tile);
  else
    run_tiles<MR, NR>(ctx, m, n, tile);
}
template <typename Tile>
void matmul_tiles(const troupe_kctx* ctx, int64_t m, int64_t n, int64_t k, Tile tile) {
  matmul_tiles_as<k_mr, k_nr>(ctx, m, n, k, tile);
}

// ============================ matmul: f32, f16, bf16 weights ============================

template <int DT, int MR, int NR>
void float_tile(const float* x, const char* w, int64_t rb, float* y, int64_t n, int64_t k, int64_t i0, int mr,
                int64_t j0, int nr) {
  const float* xr[MR];
  const char* wr[NR];
  for (int i = 0; i < MR; ++i) xr[i] = x + (i0 + (i < mr ? i : mr - 1)) * k;
  for (int j = 0; j < NR; ++j) wr[j] = w + (j0 + (j < nr ? j : nr - 1)) * rb;
  vf acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = vzero();
  int64_t p = 0;
  for (; p + VL <= k; p += VL) {
    vf wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      // As in the quantized matvec: fetch the next tile of short rows while this one runs.
      // For m > 1 too: 110m f16 decode at batch 8 310 -> 450 tok/s, batch 32 +10%, prefill same.
      __builtin_prefetch(wr[j] + p * (int64_t)(DT == TROUPE_F32 ? 4 : 2) + NR * rb, 0, 3);
      wv[j] = wload<DT>(wr[j], p);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const vf xv = vload(xr[i] + p);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  if (p < k) {
    const int rest = (int)(k - p);
    vf wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = wload_n<DT>(wr[j], p, rest);
    for (int i = 0; i < MR; ++i) {
      const vf xv = vload_n(xr[i] + p, rest);
      for (int j = 0; j < NR; ++j) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) y[(i0 + i) * n + j0 + j] = vhsum(acc[i][j]);
}

// The matrix-vector product (m == 1) of float weights: one row at a time, so that each
// thread reads one sequential stream (a tile of 8 interleaved long rows is 16 streams with
// its prefetches, which the memory system served more slowly), with four accumulators for
// the FMA latency and a software prefetch k_stream_ahead bytes ahead, which runs into the
// next rows: the hardware prefetchers stop at every 4 KiB page.
constexpr int64_t k_stream_ahead = 4096;  // 1024 measured slower on rows of 16 KiB, 8192 the same

template <int DT>
void float_rows(const float* x, const char* w, int64_t rb, float* y, int64_t k, int64_t j0, int nr) {
  constexpr int64_t es = DT == TROUPE_F32 ? 4 : 2;  // bytes per weight
  for (int j = 0; j < nr; ++j) {
    const char* wr = w + (j0 + j) * rb;
    vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
    int64_t p = 0;
    for (; p + 4 * VL <= k; p += 4 * VL) {
      // one prefetch per 64-byte line of the 4 * VL weights of this step
      for (int64_t o = 0; o < 4 * VL * es; o += 64) __builtin_prefetch(wr + p * es + k_stream_ahead + o, 0, 3);
      a0 = vfma(vload(x + p), wload<DT>(wr, p), a0);
      a1 = vfma(vload(x + p + VL), wload<DT>(wr, p + VL), a1);
      a2 = vfma(vload(x + p + 2 * VL), wload<DT>(wr, p + 2 * VL), a2);
      a3 = vfma(vload(x + p + 3 * VL), wload<DT>(wr, p + 3 * VL), a3);
    }
    for (; p + VL <= k; p += VL) a0 = vfma(vload(x + p), wload<DT>(wr, p), a0);
    if (p < k) a1 = vfma(vload_n(x + p, (int)(k - p)), wload_n<DT>(wr, p, (int)(k - p)), a1);
    y[j0 + j] = vhsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  }
}

template <int DT>
void matmul_float(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n, int64_t k) {
  const char* wb = (const char*)w;
  const int64_t rb = k * (DT == TROUPE_F32 ? 4 : 2);
  if (m == 1)
    return run_tiles<1, k_decode_nr>(threads_for(ctx, n * k), m, n, [&]<int, int>(int64_t, int, int64_t j0, int nr) {
      float_rows<DT>(x, wb, rb, y, k, j0, nr);
    });
  matmul_tiles(ctx, m, n, k, [&]<int MR, int NR>(int64_t i0, int mr, int64_t j0, int nr) {
    float_tile<DT, MR, NR>(x, wb, rb, y, n, k, i0, mr, j0, nr);
  });
}

// ============================ matmul: Q8_0 and Q4_0 weights ============================
// The activations are quantized once per call (like GGML's q8_0 activations, but with a
// float scale); then every block product is an integer dot product.

struct quantized_x {
  const int8_t* qs;  // (m, k)
  const float* d;    // (m, k / 32) scale per block
  const int32_t* s;  // (m, k / 32) sum of qs per block
};

// One block of 32 activations: q = round(v / d) with d = amax / 127; returns sum(q).
static inline int32_t quantize_block(const float* v, int8_t* q, float* d) {
  float amax = 0.0f;
  for (int i = 0; i < QK; ++i) amax = fmaxf(amax, fabsf(v[i]));
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  int32_t sum = 0;
  for (int i = 0; i < QK; ++i) {
    q[i] = (int8_t)__builtin_lrintf(v[i] * inv);
    sum += q[i];
  }
  *d = amax / 127.0f;
  return sum;
}

void quantize_x_rows(const float* x, int64_t k, int64_t r0, int64_t r1, int8_t* qs, float* d, int32_t* s) {
  const int64_t nb = k / QK;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t b = 0; b < nb; ++b)
      s[r * nb + b] = quantize_block(x + r * k + b * QK, qs + r * k + b * QK, d + r * nb + b);
}

template <int DT>
struct qtraits;
template <>
struct qtraits<TROUPE_Q8_0> {
  using block = block_q8_0;
  static wq unpack(const block* b) { return unpack_q8(b); }
  static vi bias(int32_t xsum) { return bias_q8(xsum); }
  static vi idot(const wq& w, xq_t x, vi b) { return idot_q8(w, x, b); }
};
template <>
struct qtraits<TROUPE_Q4_0> {
  using block = block_q4_0;
  static wq unpack(const block* b) { return unpack_q4(b); }
  static vi bias(int32_t xsum) { return bias_q4(xsum); }
  static vi idot(const wq& w, xq_t x, vi b) { return idot_q4(w, x, b); }
};

template <int DT, int MR, int NR>
void quant_tile(const quantized_x& xa, const char* w, int64_t rb, float* y, int64_t n, int64_t k, int64_t i0, int mr,
                int64_t j0, int nr) {
  using T = qtraits<DT>;
  using block = typename T::block;
  const int64_t nb = k / QK;
  const block* wr[NR];
  int64_t xr[MR];
  for (int j = 0; j < NR; ++j) wr[j] = (const block*)(w + (j0 + (j < nr ? j : nr - 1)) * rb);
  for (int i = 0; i < MR; ++i) xr[i] = i0 + (i < mr ? i : mr - 1);
  acc_t acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = acc_zero();
  for (int64_t b = 0; b < nb; ++b) {
    wq wv[NR];
    float dw[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      wv[j] = T::unpack(wr[j] + b);
      dw[j] = h2f(wr[j][b].d);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const int64_t xb = xr[i] * nb + b;
      const xq_t xv = xq_load(xa.qs + xb * QK);
      const vi bias = T::bias(xa.s[xb]);
      const float dx = xa.d[xb];
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = acc_fma(acc[i][j], T::idot(wv[j], xv, bias), dw[j] * dx);
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) y[(i0 + i) * n + j0 + j] = acc_sum(acc[i][j]);
}

#if defined(__AVX512VNNI__)
#include "kernels/cpu/quant_wide.h"
#endif

template <int DT>
void matmul_quant(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n, int64_t k) {
#if defined(__AVX512VNNI__)
  return matmul_quant_wide<DT>(ctx, y, x, w, m, n, k);
#endif
  const int64_t nb = k / QK;
  const int64_t rb = nb * (int64_t)sizeof(typename qtraits<DT>::block);
  const size_t qs_bytes = (size_t)(m * k + 63) / 64 * 64, d_bytes = (size_t)(m * nb * 4 + 63) / 64 * 64;
  scratch buf(qs_bytes + 2 * d_bytes);
  int8_t* qs = buf.as<int8_t>();
  float* d = buf.as<float>(qs_bytes);
  int32_t* s = buf.as<int32_t>(qs_bytes + d_bytes);
  parallel(threads_for(ctx, m * k * 4), m, [&](int64_t r0, int64_t r1) { quantize_x_rows(x, k, r0, r1, qs, d, s); });
  const quantized_x xa{qs, d, s};
  const char* wb = (const char*)w;
  matmul_tiles(ctx, m, n, k, [&]<int MR, int NR>(int64_t i0, int mr, int64_t j0, int nr) {
    quant_tile<DT, MR, NR>(xa, wb, rb, y, n, k, i0, mr, j0, nr);
  });
}

// ============================ elementwise and normalization ============================

// Elementwise ops below this size run on the calling thread: waking the pool costs more.
constexpr int64_t k_parallel_elems = 1 << 16;
constexpr int64_t k_elem_chunk = 1 << 12;

template <typename F>
void elementwise(const troupe_kctx* ctx, int64_t n, F f) {
  if (n < k_parallel_elems) return f(0, n);
  const int64_t chunks = (n + k_elem_chunk - 1) / k_elem_chunk;
  parallel(ctx, chunks, [&](int64_t c0, int64_t c1) { f(c0 * k_elem_chunk, min64(n, c1 * k_elem_chunk)); });
}

void silu_mul(const troupe_kctx* ctx, float* out, const float* gate, const float* up, int64_t n) {
  elementwise(ctx, n, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    const vf one = vset1(1.0f), zero = vzero();
    for (; i < end; i += VL) {
      const int rest = (int)min64(VL, end - i);
      const vf g = rest == VL ? vload(gate + i) : vload_n(gate + i, rest);
      const vf u = rest == VL ? vload(up + i) : vload_n(up + i, rest);
      const vf r = vmul(vdiv(g, vadd(one, vexp(vsub(zero, g)))), u);
      if (rest == VL)
        vstore(out + i, r);
      else
        vstore_n(out + i, r, rest);
    }
  });
}

void add(const troupe_kctx* ctx, float* out, const float* a, const float* b, int64_t n) {
  elementwise(ctx, n, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + VL <= end; i += VL) vstore(out + i, vadd(vload(a + i), vload(b + i)));
    if (i < end)
      vstore_n(out + i, vadd(vload_n(a + i, (int)(end - i)), vload_n(b + i, (int)(end - i))), (int)(end - i));
  });
}

void add_bias(const troupe_kctx* ctx, float* x, const float* bias, int64_t rows, int64_t n) {
  parallel(threads_for(ctx, rows * n), rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * n;
      int64_t i = 0;
      for (; i + VL <= n; i += VL) vstore(xr + i, vadd(vload(xr + i), vload(bias + i)));
      if (i < n) vstore_n(xr + i, vadd(vload_n(xr + i, (int)(n - i)), vload_n(bias + i, (int)(n - i))), (int)(n - i));
    }
  });
}

// One row: o = x / rms(x) * w, given ss = sum(x^2).
void rmsnorm_scale(float* o, const float* xr, const float* w, int64_t dim, float ss, float eps) {
  const vf scale = vset1(1.0f / sqrtf(ss / (float)dim + eps));
  int64_t i = 0;
  for (; i + VL <= dim; i += VL) vstore(o + i, vmul(vmul(vload(xr + i), scale), vload(w + i)));
  if (i < dim) {
    const int rest = (int)(dim - i);
    vstore_n(o + i, vmul(vmul(vload_n(xr + i, rest), scale), vload_n(w + i, rest)), rest);
  }
}

void rmsnorm(const troupe_kctx* ctx, float* out, const float* x, const float* w, int64_t rows, int64_t dim, float eps) {
  parallel(threads_for(ctx, rows * dim), rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      vf ss0 = vzero(), ss1 = vzero();
      int64_t i = 0;
      for (; i + 2 * VL <= dim; i += 2 * VL) {
        const vf a = vload(xr + i), b = vload(xr + i + VL);
        ss0 = vfma(a, a, ss0);
        ss1 = vfma(b, b, ss1);
      }
      for (; i < dim; i += VL) {
        const vf a = vload_n(xr + i, (int)min64(VL, dim - i));
        ss0 = vfma(a, a, ss0);
      }
      rmsnorm_scale(out + r * dim, xr, w, dim, vhsum(vadd(ss0, ss1)), eps);
    }
  });
}

// The sums of squares run over the added rows in rmsnorm's order, so that the result is
// bit for bit that of add then rmsnorm.
void add_rmsnorm(const troupe_kctx* ctx, float* out, float* x, const float* residual, const float* w, int64_t rows,
                 int64_t dim, float eps) {
  parallel(threads_for(ctx, rows * dim), rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * dim;
      const float* rr = residual + r * dim;
      vf ss0 = vzero(), ss1 = vzero();
      int64_t i = 0;
      for (; i + 2 * VL <= dim; i += 2 * VL) {
        const vf a = vadd(vload(xr + i), vload(rr + i)), b = vadd(vload(xr + i + VL), vload(rr + i + VL));
        vstore(xr + i, a);
        vstore(xr + i + VL, b);
        ss0 = vfma(a, a, ss0);
        ss1 = vfma(b, b, ss1);
      }
      for (; i < dim; i += VL) {
        const int rest = (int)min64(VL, dim - i);
        const vf a = vadd(vload_n(xr + i, rest), vload_n(rr + i, rest));
        vstore_n(xr + i, a, rest);
        ss0 = vfma(a, a, ss0);
      }
      rmsnorm_scale(out + r * dim, xr, w, dim, vhsum(vadd(ss0, ss1)), eps);
    }
  });
}

// ============================ rope ============================
// cos/sin are computed once per token (not per head), laid out so that both pair layouts
// become one multiply-add per vector: x' = x * c + partner(x) * s.

void rope(const troupe_kctx* ctx, float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
          int64_t head_dim, const float* inv_freq, int neox) {
  const int64_t half = head_dim / 2;
  parallel(threads_for(ctx, n_tokens * n_heads * head_dim), n_tokens, [&](int64_t t0, int64_t t1) {
    scratch tab((size_t)head_dim * 2 * sizeof(float));
    float* c = tab.as<float>();
    float* s = c + head_dim;
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const float theta = (float)positions[t] * inv_freq[i];
        const float ci = cosf(theta), si = sinf(theta);
        if (neox) {  // pairs (i, i + half): c and s per i, used for both halves
          c[i] = ci;
          s[i] = si;
        } else {  // pairs (2i, 2i + 1): partner is the neighbour, with sign in s
          c[2 * i] = c[2 * i + 1] = ci;
          s[2 * i] = -si;
          s[2 * i + 1] = si;
        }
      }
      if (head_dim % 2) {  // an odd last element has no partner: left as it is
        c[head_dim - 1] = 1.0f;
        s[head_dim - 1] = 0.0f;
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * head_dim;
        if (neox) {
          for (int64_t i = 0; i < half; i += VL) {
            const int rest = (int)min64(VL, half - i);
            const vf x0 = vload_n(v + i, rest), x1 = vload_n(v + half + i, rest);
            const vf ci = vload_n(c + i, rest), si = vload_n(s + i, rest);
            vstore_n(v + i, vsub(vmul(x0, ci), vmul(x1, si)), rest);
            vstore_n(v + half + i, vfma(x0, si, vmul(x1, ci)), rest);
          }
        } else {
          for (int64_t i = 0; i < head_dim; i += VL) {  // VL is even: a pair never straddles
            const int rest = (int)min64(VL, head_dim - i);
            const vf xv = vload_n(v + i, rest);
            vstore_n(v + i, vfma(vswap_pairs(xv), vload_n(s + i, rest), vmul(xv, vload_n(c + i, rest))), rest);
          }
        }
      }
    }
  });
}

// ============================ embedding ============================

template <int DT>
void embed_row(const void* table, int64_t id, int64_t dim, float* out) {
  if constexpr (DT == TROUPE_F32 || DT == TROUPE_F16 || DT == TROUPE_BF16) {
    const char* row = (const char*)table + id * dim * (DT == TROUPE_F32 ? 4 : 2);
    int64_t p = 0;
    for (; p + VL <= dim; p += VL) vstore(out + p, wload<DT>(row, p));
    if (p < dim) vstore_n(out + p, wload_n<DT>(row, p, (int)(dim - p)), (int)(dim - p));
  } else if constexpr (DT == TROUPE_Q8_0) {
    const block_q8_0* b = (const block_q8_0*)table + id * (dim / QK);
    for (int64_t j = 0; j < dim / QK; ++j) {
      const float d = h2f(b[j].d);
      for (int i = 0; i < QK; ++i) out[j * QK + i] = d * b[j].qs[i];
    }
  } else {
    const block_q4_0* b = (const block_q4_0*)table + id * (dim / QK);
    for (int64_t j = 0; j < dim / QK; ++j) {
      const float d = h2f(b[j].d);
      for (int i = 0; i < QK / 2; ++i) {
        out[j * QK + i] = d * ((b[j].qs[i] & 0x0f) - 8);
        out[j * QK + QK / 2 + i] = d * ((b[j].qs[i] >> 4) - 8);
      }
    }
  }
}

template <int DT>
void embedding(const troupe_kctx* ctx, float* out, const void* table, const int32_t* ids, int64_t n_ids, int64_t dim) {
  auto rows = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) embed_row<DT>(table, ids[t], dim, out + t * dim);
  };
  if (n_ids >= 8)  // a prompt's rows; one decode token is a copy not worth a wake-up
    parallel(ctx, n_ids, rows);
  else
    rows(0, n_ids);
}

// ============================ attention ============================
// One task per query token and group of up to 4 query heads sharing a KV head (grouped-
// query attention): each key and value row is loaded once for all heads of the group. The
// keys are visited in chunks; each chunk's scores are computed, exponentiated against the
// running maximum (online softmax), and the value rows accumulated, so the score vector
// never grows with the context.

constexpr int64_t k_key_chunk = 64;
constexpr int64_t k_prefetch_keys = 4;  // 8 measured the same; 16 the same on 110m at 512 tokens
constexpr int k_max_heads_per_task = 4;

// DT: the pools' element type, TROUPE_F32 or TROUPE_F16.
template <int DT>
struct attention_args {
  using kv_t = std::conditional_t<DT == TROUPE_F32, float, uint16_t>;
  static constexpr int64_t per_line = 64 / (int64_t)sizeof(kv_t);  // elements per cache line
  const float* q;
  const kv_t *k_pool, *v_pool;
  const int32_t* block_table;
  int64_t n_heads, n_kv_heads, head_dim, block_size;
  float scale;
  float* out;
  int64_t window;  // 0: every key up to the query's position
};

// G query heads h0..h0+G-1 of token t (position pos), all reading KV head kvh.
// scratch: G * (head_dim + k_key_chunk) floats.
template <int DT, int G>  // G: 1, 2 or 4
void attend_heads(const attention_args<DT>& a, int64_t t, int64_t pos, int64_t h0, int64_t kvh, float* scratch) {
  const int64_t hd = a.head_dim;
  const float* qh[G];
  float* acc[G];  // (G, head_dim)
  float* sc[G];   // (G, k_key_chunk) scores of the current chunk
  float run_max[G], run_sum[G];
  for (int g = 0; g < G; ++g) {
    qh[g] = a.q + (t * a.n_heads + h0 + g) * hd;
    acc[g] = scratch + g * hd;
    sc[g] = scratch + G * hd + g * k_key_chunk;
    run_max[g] = -INFINITY;
    run_sum[g] = 0.0f;
    for (int64_t i = 0; i < hd; ++i) acc[g][i] = 0.0f;
  }
  const int64_t n_keys = pos + 1;
  const int64_t first = a.window > 0 && n_keys > a.window ? n_keys - a.window : 0;
  int64_t slot[k_key_chunk];  // element offset of each key of the chunk in the pools
  for (int64_t c0 = first; c0 < n_keys; c0 += k_key_chunk) {
    const int64_t cn = min64(k_key_chunk, n_keys - c0);
    // The block table is resolved once per key (a division), not once per vector.
    for (int64_t j = 0, p = c0; j < cn; ++j, ++p)
      slot[j] =
          (((int64_t)a.block_table[p / a.block_size] * a.n_kv_heads + kvh) * a.block_size + p % a.block_size) * hd;
    // d[g] = the partial sums (one vector) of q_g . k_j for the G heads.
    auto key_dots = [&](int64_t j, vf* d) {
      // A head's keys are contiguous within a block, but blocks lie anywhere in the pool,
      // where the hardware prefetchers stop: fetch the K row a few keys ahead and the V row
      // this chunk will need.
      if (j + k_prefetch_keys < cn)
        for (int64_t i = 0; i < hd; i += a.per_line) __builtin_prefetch(a.k_pool + slot[j + k_prefetch_keys] + i);
      for (int64_t i = 0; i < hd; i += a.per_line) __builtin_prefetch(a.v_pool + slot[j] + i);
      const auto* kp = a.k_pool + slot[j];
      for (int g = 0; g < G; ++g) d[g] = vzero();
      for (int64_t i = 0; i < hd; i += VL) {
        const int rest = (int)min64(VL, hd - i);
        const vf kv = rest == VL ? wload<DT>(kp, i) : wload_n<DT>(kp, i, rest);
        for (int g = 0; g < G; ++g) d[g] = vfma(rest == VL ? vload(qh[g] + i) : vload_n(qh[g] + i, rest), kv, d[g]);
      }
    };
    // 4 / G keys at a time, so that one vhsum4 reduces four vectors of partial sums: a
    // horizontal sum per key and head was as much work as the dot product at head_dim 64.
    constexpr int U = 4 / G;
    int64_t j = 0;
    for (; j + U <= cn; j += U) {
      vf d[4];
      for (int u = 0; u < U; ++u) key_dots(j + u, d + u * G);
      float s4[4];
      vhsum4(d[0], d[1], d[2], d[3], s4);
      for (int u = 0; u < U; ++u)
        for (int g = 0; g < G; ++g) sc[g][j + u] = s4[u * G + g] * a.scale;
    }
    for (; j < cn; ++j) {
      vf d[G];
      key_dots(j, d);
      for (int g = 0; g < G; ++g) sc[g][j] = vhsum(d[g]) * a.scale;
    }
    vf corr[G];
    for (int g = 0; g < G; ++g) {
      float cmax = -INFINITY;
      for (int64_t j = 0; j < cn; ++j) cmax = fmaxf(cmax, sc[g][j]);
      const float new_max = fmaxf(run_max[g], cmax);
      const float correction = expf(run_max[g] - new_max);  // 0 on the first chunk
      const vf mx = vset1(new_max);
      for (int64_t j = 0; j < cn; j += VL) {
        const int rest = (int)min64(VL, cn - j);
        vstore_n(sc[g] + j, vexp(vsub(vload_n(sc[g] + j, rest), mx)), rest);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < cn; ++j) sum += sc[g][j];
      run_sum[g] = run_sum[g] * correction + sum;
      run_max[g] = new_max;
      corr[g] = vset1(correction);
    }
    for (int64_t i = 0; i < hd; i += VL) {
      const int rest = (int)min64(VL, hd - i);
      vf o[G];
      for (int g = 0; g < G; ++g) o[g] = vmul(vload_n(acc[g] + i, rest), corr[g]);
      if (rest == VL) {
        for (int64_t j = 0; j < cn; ++j) {
          const vf vv = wload<DT>(a.v_pool + slot[j], i);
          for (int g = 0; g < G; ++g) o[g] = vfma(vset1(sc[g][j]), vv, o[g]);
        }
      } else {
        for (int64_t j = 0; j < cn; ++j) {
          const vf vv = wload_n<DT>(a.v_pool + slot[j], i, rest);
          for (int g = 0; g < G; ++g) o[g] = vfma(vset1(sc[g][j]), vv, o[g]);
        }
      }
      for (int g = 0; g < G; ++g) vstore_n(acc[g] + i, o[g], rest);
    }
  }
  for (int g = 0; g < G; ++g) {
    float* oh = a.out + (t * a.n_heads + h0 + g) * hd;
    const float inv = 1.0f / run_sum[g];
    for (int64_t i = 0; i < hd; ++i) oh[i] = acc[g][i] * inv;
  }
}

template <int DT>
void attention_typed(const troupe_kctx* ctx, float* out, const float* q,
                     const typename attention_args<DT>::kv_t* k_pool, const typename attention_args<DT>::kv_t* v_pool,
                     const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                     int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  if (n_tokens <= 0) return;
  const int64_t group = n_heads / n_kv_heads;
  const attention_args<DT> a{q,        k_pool,     v_pool, block_table, n_heads, n_kv_heads,
                             head_dim, block_size, scale,  out,         window};
  // Fewer heads per task when that is what it takes to give every thread work.
  const int64_t threads = ctx && ctx->parallel_for ? ctx->n_threads : 1;
  int64_t per_task = group < k_max_heads_per_task ? group : k_max_heads_per_task;
  while (per_task > 1 && n_tokens * n_kv_heads * ((group + per_task - 1) / per_task) < 2 * threads) per_task /= 2;
  const int64_t tasks_per_group = (group + per_task - 1) / per_task;
  const int64_t keys = window > 0 ? min64(window, (int64_t)positions[n_tokens - 1] + 1) : positions[n_tokens - 1] + 1;
  const int64_t work = n_tokens * n_heads * keys * head_dim;
  parallel(threads_for(ctx, work), n_tokens * n_kv_heads * tasks_per_group, [&](int64_t task0, int64_t task1) {
    scratch buf((size_t)k_max_heads_per_task * (head_dim + k_key_chunk + VL) * sizeof(float));
    for (int64_t task = task0; task < task1; ++task) {
      const int64_t t = task / (n_kv_heads * tasks_per_group), rest = task % (n_kv_heads * tasks_per_group);
      const int64_t kvh = rest / tasks_per_group, first = rest % tasks_per_group * per_task;
      const int64_t h_end = kvh * group + min64(group, first + per_task);
      // The task's heads in runs of 4, 2 and 1 (a group of 7 is 4 + 2 + 1).
      for (int64_t h = kvh * group + first; h < h_end;) {
        const int64_t left = h_end - h;
        if (left >= 4) {
          attend_heads<DT, 4>(a, t, positions[t], h, kvh, buf.as<float>());
          h += 4;
        } else if (left >= 2) {
          attend_heads<DT, 2>(a, t, positions[t], h, kvh, buf.as<float>());
          h += 2;
        } else {
          attend_heads<DT, 1>(a, t, positions[t], h, kvh, buf.as<float>());
          h += 1;
        }
      }
    }
  });
}

void attention(const troupe_kctx* ctx, float* out, const float* q, const float* k_pool, const float* v_pool,
               const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  attention_typed<TROUPE_F32>(ctx, out, q, k_pool, v_pool, block_table, positions, n_tokens, n_heads, n_kv_heads,
                              head_dim, block_size, scale, window);
}

void attention_f16kv(const troupe_kctx* ctx, float* out, const float* q, const uint16_t* k_pool, const uint16_t* v_pool,
                     const int32_t* block_table, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                     int64_t n_kv_heads, int64_t head_dim, int64_t block_size, float scale, int64_t window) {
  attention_typed<TROUPE_F16>(ctx, out, q, k_pool, v_pool, block_table, positions, n_tokens, n_heads, n_kv_heads,
                              head_dim, block_size, scale, window);
}

// ============================ f32 -> f16 ============================

void to_f16(const troupe_kctx* ctx, uint16_t* out, const float* x, int64_t n) {
  elementwise(ctx, n, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
    for (; i + VL <= i1; i += VL) vstore_f16(out + i, vload(x + i));
    for (; i < i1; ++i) out[i] = f2h(x[i]);
  });
}

// ============================ KV store ============================
// A decode step stores one row per sequence, too little to split; a prefill chunk is
// split by tokens.

template <bool F16>
void kv_store(const troupe_kctx* ctx, void* k_pool, void* v_pool, const float* k, const float* v, const int32_t* slots,
              int64_t n_tokens, int64_t n_kv_heads, int64_t head_dim, int64_t block_size) {
  const int64_t kv_dim = n_kv_heads * head_dim, elem = F16 ? 2 : 4;
  parallel(threads_for(ctx, n_tokens * kv_dim), n_tokens, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      if (slots[t] < 0) continue;
      const int64_t block = slots[t] / block_size, offset = slots[t] % block_size;
      for (int64_t g = 0; g < n_kv_heads; ++g) {
        const int64_t at = ((block * n_kv_heads + g) * block_size + offset) * head_dim * elem;  // bytes
        const float *ks = k + t * kv_dim + g * head_dim, *vs = v + t * kv_dim + g * head_dim;
        if (F16) {
          uint16_t* kd = reinterpret_cast<uint16_t*>(static_cast<char*>(k_pool) + at);
          uint16_t* vd = reinterpret_cast<uint16_t*>(static_cast<char*>(v_pool) + at);
          int64_t i = 0;
          for (; i + VL <= head_dim; i += VL) {
            vstore_f16(kd + i, vload(ks + i));
            vstore_f16(vd + i, vload(vs + i));
          }
          for (; i < head_dim; ++i) kd[i] = f2h(ks[i]), vd[i] = f2h(vs[i]);
        } else {
          memcpy(static_cast<char*>(k_pool) + at, ks, head_dim * sizeof(float));
          memcpy(static_cast<char*>(v_pool) + at, vs, head_dim * sizeof(float));
        }
      }
    }
  });
}

// ============================ argmax and log-partition ============================
// One pass for the maximum (blocks of k_argmax_block, whose maxima also locate the first
// block holding it), one for sum(exp(x - max)): float sums of k_argmax_block terms per
// lane, added up in double, so a 128k vocabulary loses no more than a short float sum.

constexpr int64_t k_argmax_block = 16 * VL;

void argmax_row(const float* x, int64_t n, float inv_t, int32_t* id, float* logprob) {
  const int64_t full = n / k_argmax_block * k_argmax_block;
  float mx = -INFINITY;
  int64_t first_block = -1;  // the first full block whose maximum is the row's so far
  for (int64_t b = 0; b < full; b += k_argmax_block) {
    vf m = vload(x + b);
    for (int64_t i = VL; i < k_argmax_block; i += VL) m = vmax(vload(x + b + i), m);
    const float bm = vhmax(m);
    if (bm > mx) mx = bm, first_block = b;
  }
  int64_t best = -1;
  for (int64_t i = full; i < n; ++i)
    if (x[i] > mx) mx = x[i], best = i;
  if (best < 0 && first_block >= 0)
    for (int64_t i = first_block; i < first_block + k_argmax_block; ++i)
      if (x[i] == mx) {
        best = i;
        break;
      }
  if (best < 0) best = 0;  // no value above -inf
  const vf vm = vset1(mx), vt = vset1(inv_t);
  double z = 0.0;
  for (int64_t b = 0; b < full; b += k_argmax_block) {
    vf s = vzero();
    for (int64_t i = 0; i < k_argmax_block; i += VL) s = vadd(s, vexp(vmul(vsub(vload(x + b + i), vm), vt)));
    z += vhsum(s);
  }
  for (int64_t i = full; i < n; ++i) z += expf((x[i] - mx) * inv_t);
  *id = (int32_t)best;
  *logprob = (float)-log(z);
}

void argmax(const troupe_kctx* ctx, int32_t* ids, float* logprobs, const float* logits, int64_t rows, int64_t n,
            float temperature) {
  const float inv_t = 1.0f / temperature;
  parallel(threads_for(ctx, rows * n), rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) argmax_row(logits + r * n, n, inv_t, ids + r, logprobs + r);
  });
}

template <typename F>
troupe_kernel_variant var(troupe_op op, F* fn) {
  return {op, TROUPE_BACKEND_CPU, "cpu." TROUPE_ISA_NAME, reinterpret_cast<void (*)(void)>(fn)};
}

}  // namespace

// The variants of this instruction set; called only after the CPU was found to support
// it. Returns how many were written (at most TROUPE_OP_COUNT).
int get_variants(troupe_kernel_variant* out) {
  const troupe_kernel_variant all[] = {
      var(TROUPE_OP_MATMUL_F32, static_cast<troupe_matmul_fn>(matmul_float<TROUPE_F32>)),
      var(TROUPE_OP_MATMUL_F16, static_cast<troupe_matmul_fn>(matmul_float<TROUPE_F16>)),
      var(TROUPE_OP_MATMUL_BF16, static_cast<troupe_matmul_fn>(matmul_float<TROUPE_BF16>)),
      var(TROUPE_OP_MATMUL_Q8_0, static_cast<troupe_matmul_fn>(matmul_quant<TROUPE_Q8_0>)),
      var(TROUPE_OP_MATMUL_Q4_0, static_cast<troupe_matmul_fn>(matmul_quant<TROUPE_Q4_0>)),
      var(TROUPE_OP_RMSNORM, static_cast<troupe_rmsnorm_fn>(rmsnorm)),
      var(TROUPE_OP_ROPE, static_cast<troupe_rope_fn>(rope)),
      var(TROUPE_OP_ATTENTION, static_cast<troupe_attention_fn>(attention)),
      var(TROUPE_OP_SILU_MUL, static_cast<troupe_silu_mul_fn>(silu_mul)),
      var(TROUPE_OP_ADD, static_cast<troupe_add_fn>(add)),
      var(TROUPE_OP_EMBEDDING_F32, static_cast<troupe_embedding_fn>(embedding<TROUPE_F32>)),
      var(TROUPE_OP_EMBEDDING_F16, static_cast<troupe_embedding_fn>(embedding<TROUPE_F16>)),
      var(TROUPE_OP_EMBEDDING_BF16, static_cast<troupe_embedding_fn>(embedding<TROUPE_BF16>)),
      var(TROUPE_OP_EMBEDDING_Q8_0, static_cast<troupe_embedding_fn>(embedding<TROUPE_Q8_0>)),
      var(TROUPE_OP_EMBEDDING_Q4_0, static_cast<troupe_embedding_fn>(embedding<TROUPE_Q4_0>)),
      var(TROUPE_OP_ARGMAX, static_cast<troupe_argmax_fn>(argmax)),
      var(TROUPE_OP_ATTENTION_F16KV, static_cast<troupe_attention_f16kv_fn>(attention_f16kv)),
      var(TROUPE_OP_TO_F16, static_cast<troupe_to_f16_fn>(to_f16)),
      var(TROUPE_OP_KV_STORE, static_cast<troupe_kv_store_fn>(kv_store<false>)),
      var(TROUPE_OP_KV_STORE_F16, static_cast<troupe_kv_store_fn>(kv_store<true>)),
      var(TROUPE_OP_ADD_RMSNORM, static_cast<troupe_add_rmsnorm_fn>(add_rmsnorm)),
      var(TROUPE_OP_ADD_BIAS, static_cast<troupe_add_bias_fn>(add_bias)),
  };
  const int count = (int)(sizeof all / sizeof all[0]);
  for (int i = 0; i < count; ++i) out[i] = all[i];
  return count;
}

}  // namespace troupe::kern::cpu::TROUPE_ISA_NS
