// Quantized matmul with AVX-512 VNNI. Included by ops_body.h inside the ISA namespace
// (the avx512 translation unit only). Two layouts of the quantized activations, both of
// which keep the weights as the file has them (no repacking):
// - block pairs (m < 8, the matrix-vector product above all): one row of x per register,
//   two 32-element blocks per register, as below;
// - rows in lanes (m >= 8): 8 or 16 rows of x per register, a weight block broadcast (see
//   the section further down).
//
// Per block pair and output the work is one vpdpbusd (unsigned weight bytes x signed
// activation bytes, plus the zero-point bias), one int->float conversion, one scale
// product and one FMA. For that, the activations are laid out per pair of blocks exactly
// as the weights unpack:
//   Q8_0: bytes [block0 (32), block1 (32)]: int32 lanes 0-7 belong to block 0, 8-15 to 1;
//   Q4_0: the low nibbles of both blocks, then the high nibbles:
//         bytes [block0 0..15, block1 0..15, block0 16..31, block1 16..31]: lanes 0-3 and
//         8-11 belong to block 0, 4-7 and 12-15 to block 1.
// The activation scale and the bias (-zero point * sum(q)) are stored already spread
// over the lanes of their block (the bias in the block's first lane only).
#pragma once

// int32 lanes per run of one block in a pair register
template <int DT>
constexpr int pair_lane_run = DT == TROUPE_Q8_0 ? 8 : 4;

template <int DT>
static inline __m512i pair_lane_index() {
  constexpr int g = pair_lane_run<DT>;
  return _mm512_setr_epi32(0 / g % 2, 1 / g % 2, 2 / g % 2, 3 / g % 2, 4 / g % 2, 5 / g % 2, 6 / g % 2, 7 / g % 2,
                           8 / g % 2, 9 / g % 2, 10 / g % 2, 11 / g % 2, 12 / g % 2, 13 / g % 2, 14 / g % 2,
                           15 / g % 2);
}

// quantize_block with AVX-512 (bit for bit the same: the same amax, the same scale and the
// same round-to-nearest-even); the scalar loop's calls to fmaxf and lrintf made the
// activation quantization a fifth of a 512-token prefill.
static inline int32_t quantize_block_512(const float* v, int8_t* q, float* d) {
  const __m512 a = _mm512_loadu_ps(v), b = _mm512_loadu_ps(v + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
  const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
  const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
  _mm_storeu_si128((__m128i*)q, _mm512_cvtepi32_epi8(qa));
  _mm_storeu_si128((__m128i*)(q + 16), _mm512_cvtepi32_epi8(qb));
  *d = amax / 127.0f;
  return _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
}

struct wide_x {
  const __m512i* qs;    // (m, nb2) 64 activation bytes per block pair
  const __m512i* bias;  // (m, nb2) int32 lanes
  const __m512* d;      // (m, nb2) scale lanes
  int64_t nb2;          // block pairs per row (a missing odd block is zero)
};

template <int DT>
void quantize_x_wide(const float* x, int64_t k, int64_t r0, int64_t r1, const wide_x& xa) {
  const int64_t nb = k / QK;
  constexpr int run = pair_lane_run<DT>;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t g = 0; g < xa.nb2; ++g) {
      int8_t* qs = (int8_t*)(xa.qs + r * xa.nb2 + g);
      int32_t* bias = (int32_t*)(xa.bias + r * xa.nb2 + g);
      float* d = (float*)(xa.d + r * xa.nb2 + g);
      for (int h = 0; h < 2; ++h) {
        const int64_t b = 2 * g + h;
        int8_t q[QK] = {0};
        float scale = 0.0f;
        const int32_t sum = b < nb ? quantize_block_512(x + r * k + b * QK, q, &scale) : 0;
        if (DT == TROUPE_Q8_0) {
          memcpy(qs + h * QK, q, QK);
        } else {
          memcpy(qs + h * 16, q, 16);
          memcpy(qs + 32 + h * 16, q + 16, 16);
        }
        for (int l = 0; l < 16; ++l) {
          if (l / run % 2 != h) continue;
          d[l] = scale;
          bias[l] = l % (2 * run) == h * run && l < 2 * run ? (DT == TROUPE_Q8_0 ? -128 : -8) * sum : 0;
        }
      }
    }
}

// Two weight blocks as the unsigned bytes of one register, in the activation's order.
static inline __m512i unpack_pair(const block_q8_0* b0, const block_q8_0* b1) {
  const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)b0->qs)),
                                       _mm256_loadu_si256((const __m256i*)b1->qs), 1);
  return _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
}
static inline __m512i unpack_pair(const block_q4_0* b0, const block_q4_0* b1) {
  const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)b0->qs)),
                                            _mm_loadu_si128((const __m128i*)b1->qs), 1);
  const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1);
  return _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
}

template <int DT, int MR, int NR>
void wide_tile(const wide_x& xa, const char* w, int64_t rb, float* y, int64_t n, int64_t nb, int64_t i0, int mr,
               int64_t j0, int nr) {
  using block = std::conditional_t<DT == TROUPE_Q8_0, block_q8_0, block_q4_0>;
  const block* wr[NR];
  int64_t xr[MR];
  for (int j = 0; j < NR; ++j) wr[j] = (const block*)(w + (j0 + (j < nr ? j : nr - 1)) * rb);
  for (int i = 0; i < MR; ++i) xr[i] = (i0 + (i < mr ? i : mr - 1)) * xa.nb2;
  const __m512i lane_block = pair_lane_index<DT>();
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < xa.nb2; ++g) {
    // An odd last block pairs with itself; its activation scale is zero.
    const int64_t b0 = 2 * g, b1 = 2 * g + 1 < nb ? 2 * g + 1 : 2 * g;
    __m512i wv[NR];
    __m512 dw[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      // Rows are short (a few hundred bytes at dim 768): NR interleaved rows end before the
      // hardware prefetcher locks on, so fetch the next tile (contiguous, NR rows on) now.
      // Also for 2 <= m < 8 (4 x 4 tiles): batch 4 decode on 110m q4_0 430 -> 530 tok/s.
      __builtin_prefetch((const char*)(wr[j] + b0) + NR * rb, 0, 3);
      wv[j] = unpack_pair(wr[j] + b0, wr[j] + b1);
      const __m128 d2 = _mm_cvtph_ps(_mm_cvtsi32_si128((int)wr[j][b0].d | ((int)wr[j][b1].d << 16)));
      dw[j] = _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(d2));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_load_si512(xa.qs + xr[i] + g);
      const __m512i bias = _mm512_load_si512(xa.bias + xr[i] + g);
      const __m512 dx = _mm512_load_ps((const float*)(xa.d + xr[i] + g));
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(bias, wv[j], xv)), _mm512_mul_ps(dw[j], dx),
                                    acc[i][j]);
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) y[(i0 + i) * n + j0 + j] = _mm512_reduce_add_ps(acc[i][j]);
}

// The Q8_0 matrix-vector product: one weight row at a time, one sequential stream per
// thread with a prefetch k_stream_ahead bytes on (see float_rows), two accumulators.
template <int DT>
void wide_rows(const wide_x& xa, const char* w, int64_t rb, float* y, int64_t nb, int64_t j0, int nr) {
  using block = std::conditional_t<DT == TROUPE_Q8_0, block_q8_0, block_q4_0>;
  const __m512i lane_block = pair_lane_index<DT>();
  for (int j = 0; j < nr; ++j) {
    const block* wr = (const block*)(w + (j0 + j) * rb);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t g = 0; g < xa.nb2; ++g) {
      // An odd last block pairs with itself; its activation scale is zero.
      const int64_t b0 = 2 * g, b1 = 2 * g + 1 < nb ? 2 * g + 1 : 2 * g;
      // A pair is 68 (Q8_0) or 36 (Q4_0) bytes: about one prefetch per line or two.
      __builtin_prefetch((const char*)(wr + b0) + k_stream_ahead, 0, 3);
      const __m512i wv = unpack_pair(wr + b0, wr + b1);
      const __m128 d2 = _mm_cvtph_ps(_mm_cvtsi32_si128((int)wr[b0].d | ((int)wr[b1].d << 16)));
      const __m512 dw = _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(d2));
      const __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512(xa.bias + g), wv, _mm512_load_si512(xa.qs + g));
      const __m512 dx = _mm512_load_ps((const float*)(xa.d + g));
      acc[g & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx), acc[g & 1]);
    }
    y[j0 + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
  }
}

// ---- rows in lanes (m >= 8) ----
// R rows of x share each register. With R = 16, lane l of register t of a block holds
// bytes 4t..4t+3 of that block of row i0 + l; with R = 8 the block is split in two halves
// over the lanes: lane l holds bytes 4t.. of row l and lane 8 + l bytes 16 + 4t.. of row l.
// A weight block's four bytes (R = 16) or two runs of four (R = 8) are broadcast to the
// lanes, so one vpdpbusd serves R rows, and the scale work (int->float, scale product,
// FMA) is done once per weight block per R rows instead of once per row.
struct lanes_x {
  const __m512i* q;     // (groups, nb, R / 2) registers of R rows
  const __m512i* bias;  // (groups, nb) int32 per row: -zero point * sum(q), first half only
  const __m512* d;      // (groups, nb) scale per row
  int64_t nb;
};

template <int DT, int R>
void quantize_x_lanes(const float* x, int64_t m, int64_t k, int64_t g0, int64_t g1, const lanes_x& xa) {
  constexpr int T = R / 2;  // registers per block
  const int64_t nb = xa.nb;
  for (int64_t g = g0; g < g1; ++g)
    for (int64_t b = 0; b < nb; ++b) {
      int32_t* q = (int32_t*)(xa.q + (g * nb + b) * T);  // (T, 16)
      int32_t* bias = (int32_t*)(xa.bias + g * nb + b);
      float* d = (float*)(xa.d + g * nb + b);
      for (int r = 0; r < R; ++r) {
        const int64_t row = g * R + r;
        int8_t qb[QK] = {0};
        float scale = 0.0f;
        const int32_t sum = row < m ? quantize_block_512(x + row * k + b * QK, qb, &scale) : 0;
        for (int u = 0; u < 8; ++u) memcpy(q + u % T * 16 + r + R * (u / T), qb + 4 * u, 4);
        for (int h = 0; h < 16 / R; ++h) {
          bias[r + R * h] = h ? 0 : (DT == TROUPE_Q8_0 ? -128 : -8) * sum;
          d[r + R * h] = scale;
        }
      }
    }
}

// Rows i0..i0+mr-1 (i0 a multiple of R, MR = R * groups) by weight rows j0..j0+nr-1.
template <int DT, int R, int MR, int NR>
void lanes_tile(const lanes_x& xa, const char* w, int64_t rb, float* y, int64_t n, int64_t i0, int mr, int64_t j0,
                int nr) {
  using block = std::conditional_t<DT == TROUPE_Q8_0, block_q8_0, block_q4_0>;
  constexpr int G = MR / R, T = R / 2;
  const int64_t nb = xa.nb;
  const block* wr[NR];
  int64_t xg[G];
  for (int j = 0; j < NR; ++j) wr[j] = (const block*)(w + (j0 + (j < nr ? j : nr - 1)) * rb);
  for (int g = 0; g < G; ++g) xg[g] = (i0 / R + (g * R < mr ? g : 0)) * nb;
  const __m512i nib = _mm512_set1_epi8(0x0f);
  // R = 8: the second half of the lanes takes the high nibbles (Q4_0) or dwords 4..7 (Q8_0)
  const __m512i half_shift = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
  __m512 acc[G][NR];
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[g][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const block* wb = wr[j] + b;
      // As in the matrix-vector product: NR short rows end before the hardware prefetcher
      // locks on, so fetch the next tile's (NR rows on) now. Measured in bench_engine
      // (110m q4_0, CPU time of the same work): batch 8 -20%, batch 32 -12%, prefill same.
      __builtin_prefetch((const char*)wb + NR * rb, 0, 3);
      const __m512 dw = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)wb->d)));
      __m512i wv[T];
      if constexpr (DT == TROUPE_Q8_0 && R == 16) {
#pragma GCC unroll 8
        for (int t = 0; t < 8; ++t) {
          int32_t v;
          memcpy(&v, wb->qs + 4 * t, 4);
          wv[t] = _mm512_xor_si512(_mm512_set1_epi32(v), _mm512_set1_epi8((char)0x80));
        }
      } else if constexpr (DT == TROUPE_Q8_0) {
        const __m512i q = _mm512_castsi256_si512(
            _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)wb->qs), _mm256_set1_epi8((char)0x80)));
#pragma GCC unroll 4
        for (int t = 0; t < 4; ++t)
          wv[t] = _mm512_permutexvar_epi32(_mm512_add_epi32(half_shift, _mm512_set1_epi32(t)), q);
      } else {
#pragma GCC unroll 4
        for (int t = 0; t < 4; ++t) {
          int32_t v;
          memcpy(&v, wb->qs + 4 * t, 4);
          const __m512i p = _mm512_set1_epi32(v);
          if constexpr (R == 16) {
            wv[t] = _mm512_and_si512(p, nib);
            wv[t + 4] = _mm512_and_si512(_mm512_srli_epi16(p, 4), nib);
          } else {
            wv[t] = _mm512_and_si512(_mm512_srlv_epi32(p, half_shift), nib);
          }
        }
      }
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        const __m512i* xq = xa.q + (xg[g] + b) * T;
        // Two chains: vpdpbusd's latency is hidden by the other chains.
        __m512i s0 = _mm512_load_si512(xa.bias + xg[g] + b), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int t = 0; t < T / 2; ++t) {
          s0 = _mm512_dpbusd_epi32(s0, wv[t], _mm512_load_si512(xq + t));
          s1 = _mm512_dpbusd_epi32(s1, wv[t + T / 2], _mm512_load_si512(xq + t + T / 2));
        }
        const __m512 dx = _mm512_load_ps((const float*)(xa.d + xg[g] + b));
        acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, dx), acc[g][j]);
      }
    }
  }
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < nr; ++j) {
      alignas(64) float out[16];
      _mm512_store_ps(out, acc[g][j]);
      for (int l = 0; l < R && g * R + l < mr; ++l)
        y[(i0 + g * R + l) * n + j0 + j] = R == 16 ? out[l] : out[l] + out[l + 8];
    }
}

template <int DT, int R, int MR, int NR>
void matmul_quant_lanes(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n,
                        int64_t k) {
  static_assert(k_mc % MR == 0 && MR % R == 0, "a tile starts on a group of R rows");
  using block = std::conditional_t<DT == TROUPE_Q8_0, block_q8_0, block_q4_0>;
  const int64_t nb = k / QK, groups = (m + R - 1) / R;
  const int64_t rb = nb * (int64_t)sizeof(block);
  const size_t part = (size_t)(groups * nb) * 64;
  scratch buf((R / 2 + 2) * part);
  const lanes_x xa{buf.as<__m512i>(), buf.as<__m512i>(R / 2 * part), buf.as<__m512>((R / 2 + 1) * part), nb};
  parallel(threads_for(ctx, m * k * 4), groups,
           [&](int64_t g0, int64_t g1) { quantize_x_lanes<DT, R>(x, m, k, g0, g1, xa); });
  const char* wb = (const char*)w;
  matmul_tiles_as<MR, NR>(ctx, m, n, k, [&]<int MR_, int NR_>(int64_t i0, int mr, int64_t j0, int nr) {
    lanes_tile<DT, R, MR_, NR_>(xa, wb, rb, y, n, i0, mr, j0, nr);
  });
}

template <int DT>
void matmul_quant_wide(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n,
                       int64_t k) {
  // Rows in lanes from 8 rows on. Measured on Zen 4 (bench_kernels, 1 thread, 2048 x 768
  // weights, best of 3; block-pair 4 x 4 tiles before -> this, with the vectorized
  // quantization and the prefetch): Q4_0 m = 8 154 -> 85 us, m = 32 566 -> 285 us,
  // m = 512 9.3 -> 5.4 ms; Q8_0 136 -> 72 us, 527 -> 252 us, 8.8 -> 4.2 ms. Under load,
  // 16 x 8 beat 32 x 4, 32 x 2, 16 x 4 and 16 x 16 (spills); at m = 8, 8 x 4 beat 8 x 2,
  // 8 x 8 and 16 lanes half empty.
  if (m >= 16) return matmul_quant_lanes<DT, 16, 16, 8>(ctx, y, x, w, m, n, k);
  if (m >= 8) return matmul_quant_lanes<DT, 8, 8, 4>(ctx, y, x, w, m, n, k);
  using block = std::conditional_t<DT == TROUPE_Q8_0, block_q8_0, block_q4_0>;
  const int64_t nb = k / QK, nb2 = (nb + 1) / 2;
  const int64_t rb = nb * (int64_t)sizeof(block);
  const size_t part = (size_t)(m * nb2) * 64;
  scratch buf(3 * part);
  const wide_x xa{buf.as<__m512i>(), buf.as<__m512i>(part), buf.as<__m512>(2 * part), nb2};
  parallel(threads_for(ctx, m * k * 4), m, [&](int64_t r0, int64_t r1) { quantize_x_wide<DT>(x, k, r0, r1, xa); });
  const char* wb = (const char*)w;
  // Q4_0 rows are a quarter of f16's and its unpacking costs more: the 8-row tiles, which
  // load the activations once for 8 rows, decoded 110m q4_0 on 1 thread at 303-319 tok/s,
  // the rows one at a time at 213-217.
  if (m == 1 && DT == TROUPE_Q8_0)
    return run_tiles<1, k_decode_nr>(threads_for(ctx, n * k), m, n, [&]<int, int>(int64_t, int, int64_t j0, int nr) {
      wide_rows<DT>(xa, wb, rb, y, nb, j0, nr);
    });
  matmul_tiles(ctx, m, n, k, [&]<int MR, int NR>(int64_t i0, int mr, int64_t j0, int nr) {
    wide_tile<DT, MR, NR>(xa, wb, rb, y, n, nb, i0, mr, j0, nr);
  });
}
