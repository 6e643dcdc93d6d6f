// Quantized matmul with AVX-512 VNNI, two 32-element blocks per 512-bit register.
// Included by ops_body.h inside the ISA namespace (the avx512 translation unit only).
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
        const int32_t sum = b < nb ? quantize_block(x + r * k + b * QK, q, &scale) : 0;
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
      if constexpr (MR == 1) __builtin_prefetch((const char*)(wr[j] + b0) + NR * rb, 0, 3);
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

template <int DT>
void matmul_quant_wide(const troupe_kctx* ctx, float* y, const float* x, const void* w, int64_t m, int64_t n,
                       int64_t k) {
  using block = std::conditional_t<DT == TROUPE_Q8_0, block_q8_0, block_q4_0>;
  const int64_t nb = k / QK, nb2 = (nb + 1) / 2;
  const int64_t rb = nb * (int64_t)sizeof(block);
  const size_t part = (size_t)(m * nb2) * 64;
  scratch buf(3 * part);
  const wide_x xa{buf.as<__m512i>(), buf.as<__m512i>(part), buf.as<__m512>(2 * part), nb2};
  parallel(threads_for(ctx, m * k * 4), m, [&](int64_t r0, int64_t r1) { quantize_x_wide<DT>(x, k, r0, r1, xa); });
  const char* wb = (const char*)w;
  matmul_tiles(ctx, m, n, k, [&]<int MR, int NR>(int64_t i0, int mr, int64_t j0, int nr) {
    wide_tile<DT, MR, NR>(xa, wb, rb, y, n, nb, i0, mr, j0, nr);
  });
}
