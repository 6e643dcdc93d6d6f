// The vector vocabulary of the CPU kernels, one set per instruction set. Included only by
// the per-ISA translation units (ops_avx512.cpp, ops_avx2.cpp, ops_generic.cpp), each
// compiled with its own -m flags, inside namespace troupe::kern::cpu::TROUPE_ISA_NS.
//
// Everything here is static inline in an ISA-specific namespace and uses no C++ library
// template: an inline function shared between translation units compiled with different
// flags could be merged by the linker into one copy with AVX-512 instructions, which the
// generic fallback would then execute on a CPU without them.
//
//   vf: VL floats.  wq: one unpacked 32-weight block.  vi: partial int32 sums of a block.
//
// The includer has already included <immintrin.h> (on x86), <stdint.h>, <string.h> and
// kernel_abi.h, outside the namespace.
#pragma once

// ---- float vectors -----------------------------------------------------------------

#if defined(__AVX512F__)
constexpr int VL = 16;
using vf = __m512;
static inline vf vzero() { return _mm512_setzero_ps(); }
static inline vf vset1(float a) { return _mm512_set1_ps(a); }
static inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
static inline __mmask16 vmask(int n) { return (__mmask16)((1u << n) - 1); }
static inline vf vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps(vmask(n), p); }
static inline void vstore_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, vmask(n), v); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline float vhsum(vf v) { return _mm512_reduce_add_ps(v); }
static inline float vhmax(vf v) { return _mm512_reduce_max_ps(v); }
// out[0..3] = the horizontal sums of a, b, c and d: one transposing reduction, about the
// cost of one vhsum.
static inline void vhsum4(vf a, vf b, vf c, vf d, float* out) {
  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c and d, then [a, b, c, d]
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
  const __m512 s16 =
      _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)), _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(s16), _mm512_extractf32x8_ps(s16, 1));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)));
}
static inline vf vround(vf v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127], as float
static inline vf vswap_pairs(vf v) { return _mm512_permute_ps(v, 0xB1); }
static inline vf vpow2i(vf n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
#elif defined(__AVX2__)
constexpr int VL = 8;
using vf = __m256;
static inline vf vzero() { return _mm256_setzero_ps(); }
static inline vf vset1(float a) { return _mm256_set1_ps(a); }
static inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
static inline __m256i vmask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf vload_n(const float* p, int n) { return _mm256_maskload_ps(p, vmask(n)); }
static inline void vstore_n(float* p, vf v, int n) { _mm256_maskstore_ps(p, vmask(n), v); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline float vhsum(vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline float vhmax(vf v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline void vhsum4(vf a, vf b, vf c, vf d, float* out) {
  const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
  const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
  const __m256d abd = _mm256_castps_pd(ab), cdd = _mm256_castps_pd(cd);
  const __m256 s8 =
      _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(abd, cdd)), _mm256_castpd_ps(_mm256_unpackhi_pd(abd, cdd)));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)));
}
static inline vf vround(vf v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf vswap_pairs(vf v) { return _mm256_permute_ps(v, 0xB1); }
static inline vf vpow2i(vf n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
#else
// The portable fallback: fixed-size arrays the compiler may vectorize for the baseline.
constexpr int VL = 8;
struct vf {
  float v[VL];
};
#define TROUPE_VF_MAP(expr)                     \
  vf r;                                         \
  for (int i = 0; i < VL; ++i) r.v[i] = (expr); \
  return r
static inline vf vzero() { TROUPE_VF_MAP(0.0f); }
static inline vf vset1(float a) { TROUPE_VF_MAP(a); }
static inline vf vload(const float* p) { TROUPE_VF_MAP(p[i]); }
static inline void vstore(float* p, vf v) {
  for (int i = 0; i < VL; ++i) p[i] = v.v[i];
}
static inline vf vload_n(const float* p, int n) { TROUPE_VF_MAP(i < n ? p[i] : 0.0f); }
static inline void vstore_n(float* p, vf v, int n) {
  for (int i = 0; i < n; ++i) p[i] = v.v[i];
}
static inline vf vfma(vf a, vf b, vf c) { TROUPE_VF_MAP(a.v[i] * b.v[i] + c.v[i]); }
static inline vf vadd(vf a, vf b) { TROUPE_VF_MAP(a.v[i] + b.v[i]); }
static inline vf vsub(vf a, vf b) { TROUPE_VF_MAP(a.v[i] - b.v[i]); }
static inline vf vmul(vf a, vf b) { TROUPE_VF_MAP(a.v[i] * b.v[i]); }
static inline vf vdiv(vf a, vf b) { TROUPE_VF_MAP(a.v[i] / b.v[i]); }
static inline vf vmax(vf a, vf b) { TROUPE_VF_MAP(a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
static inline vf vmin(vf a, vf b) { TROUPE_VF_MAP(a.v[i] < b.v[i] ? a.v[i] : b.v[i]); }
static inline vf vround(vf a) { TROUPE_VF_MAP(__builtin_nearbyintf(a.v[i])); }
static inline vf vswap_pairs(vf a) { TROUPE_VF_MAP(a.v[i ^ 1]); }
static inline vf vpow2i(vf n) {
  vf r;
  for (int i = 0; i < VL; ++i) {
    const uint32_t bits = (uint32_t)((int32_t)n.v[i] + 127) << 23;
    memcpy(&r.v[i], &bits, 4);
  }
  return r;
}
#undef TROUPE_VF_MAP
static inline float vhsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < VL; ++i) s += v.v[i];
  return s;
}
static inline float vhmax(vf v) {
  float s = v.v[0];
  for (int i = 1; i < VL; ++i) s = s > v.v[i] ? s : v.v[i];
  return s;
}
static inline void vhsum4(vf a, vf b, vf c, vf d, float* out) {
  out[0] = vhsum(a);
  out[1] = vhsum(b);
  out[2] = vhsum(c);
  out[3] = vhsum(d);
}
#endif

// exp(x) for x <= 88.7, relative error about 2e-7: x = n ln2 + r with |r| <= ln2/2, then a
// degree-6 polynomial for e^r (Taylor terms; the remainder is below float rounding).
static inline vf vexp(vf x) {
  x = vmax(vmin(x, vset1(88.37f)), vset1(-87.3f));
  const vf n = vround(vmul(x, vset1(1.44269504088896341f)));
  // Cody-Waite: ln2 split into a part exact in float and the rest.
  vf r = vfma(n, vset1(-0.693145751953125f), x);
  r = vfma(n, vset1(-1.428606765330187045e-06f), r);
  vf p = vset1(1.0f / 720);
  p = vfma(p, r, vset1(1.0f / 120));
  p = vfma(p, r, vset1(1.0f / 24));
  p = vfma(p, r, vset1(1.0f / 6));
  p = vfma(p, r, vset1(0.5f));
  p = vfma(p, r, vset1(1.0f));
  p = vfma(p, r, vset1(1.0f));
  return vmul(p, vpow2i(n));
}

// ---- scalar conversions (local copies: see the note at the top) ----------------------

static inline float h2f(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  // Branch-free (so a loop of it vectorizes): move exponent and mantissa into place and
  // rebias; Inf/NaN get the rest of the exponent; subnormals are renormalized by a float
  // subtraction of 2^-14.
  uint32_t o = (uint32_t)(h & 0x7fff) << 13;
  const uint32_t exp = o & 0x0f800000u;
  o += (uint32_t)(127 - 15) << 23;
  if (exp == 0x0f800000u) o += (uint32_t)(128 - 16) << 23;
  float f;
  memcpy(&f, &o, 4);
  if (exp == 0) {
    const uint32_t t = o + (1u << 23);
    memcpy(&f, &t, 4);
    f -= 6.103515625e-05f;
  }
  uint32_t bits;
  memcpy(&bits, &f, 4);
  bits |= (uint32_t)(h & 0x8000) << 16;
  memcpy(&f, &bits, 4);
  return f;
#endif
}

// f32 -> f16 bits, round to nearest even; overflow to infinity, NaN stays NaN.
static inline uint16_t f2h(float f) {
#if defined(__F16C__)
  return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00);   // NaN
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to infinity
  if (x < 0x38800000u) {
    // f16 subnormal (or zero): adding 0.5, whose ulp is 2^-24, the f16 subnormal step, lets
    // the float addition do the rounding; the low bits are then the f16 mantissa.
    float a;
    memcpy(&a, &x, 4);
    a += 0.5f;
    uint32_t b;
    memcpy(&b, &a, 4);
    return (uint16_t)(sign | (b - 0x3f000000u));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even.
  x += 0xc8000fffu + ((x >> 13) & 1);
  return (uint16_t)(sign | (x >> 13));
#endif
}

// Stores VL floats as f16 (f2h's rounding).
static inline void vstore_f16(uint16_t* p, vf v) {
#if defined(__AVX512F__)
  _mm256_storeu_si256((__m256i*)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__AVX2__)
  _mm_storeu_si128((__m128i*)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  for (int i = 0; i < VL; ++i) p[i] = f2h(v.v[i]);
#endif
}

static inline float bf2f(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// ---- weight rows as float vectors --------------------------------------------------
// wload<DT>(row, p): elements p..p+VL-1 of a row of dtype DT as floats; wload_n: the first
// n (< VL) of them, the rest zero.

template <int DT>
static inline vf wload(const void* row, int64_t p);
template <int DT>
static inline vf wload_n(const void* row, int64_t p, int n);

template <>
inline vf wload<TROUPE_F32>(const void* row, int64_t p) {
  return vload((const float*)row + p);
}
template <>
inline vf wload_n<TROUPE_F32>(const void* row, int64_t p, int n) {
  return vload_n((const float*)row + p, n);
}

#if defined(__AVX512F__)
template <>
inline vf wload<TROUPE_F16>(const void* row, int64_t p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)((const uint16_t*)row + p)));
}
template <>
inline vf wload_n<TROUPE_F16>(const void* row, int64_t p, int n) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(vmask(n), (const uint16_t*)row + p));
}
template <>
inline vf wload<TROUPE_BF16>(const void* row, int64_t p) {
  const __m256i h = _mm256_loadu_si256((const __m256i*)((const uint16_t*)row + p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
template <>
inline vf wload_n<TROUPE_BF16>(const void* row, int64_t p, int n) {
  const __m256i h = _mm256_maskz_loadu_epi16(vmask(n), (const uint16_t*)row + p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#elif defined(__AVX2__)
template <>
inline vf wload<TROUPE_F16>(const void* row, int64_t p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((const uint16_t*)row + p)));
}
template <>
inline vf wload_n<TROUPE_F16>(const void* row, int64_t p, int n) {
  uint16_t tmp[VL] = {0};
  memcpy(tmp, (const uint16_t*)row + p, (size_t)n * 2);
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)tmp));
}
template <>
inline vf wload<TROUPE_BF16>(const void* row, int64_t p) {
  const __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)row + p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
template <>
inline vf wload_n<TROUPE_BF16>(const void* row, int64_t p, int n) {
  uint16_t tmp[VL] = {0};
  memcpy(tmp, (const uint16_t*)row + p, (size_t)n * 2);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)tmp)), 16));
}
#else
// 16-bit weights (f16 or bf16), the first n of VL converted, the rest zero.
template <int DT>
static inline vf wload_half_n(const void* row, int64_t p, int n) {
  const uint16_t* h = (const uint16_t*)row + p;
  vf r;
  for (int i = 0; i < VL; ++i) r.v[i] = i >= n ? 0.0f : DT == TROUPE_F16 ? h2f(h[i]) : bf2f(h[i]);
  return r;
}
template <>
inline vf wload<TROUPE_F16>(const void* row, int64_t p) {
  return wload_half_n<TROUPE_F16>(row, p, VL);
}
template <>
inline vf wload_n<TROUPE_F16>(const void* row, int64_t p, int n) {
  return wload_half_n<TROUPE_F16>(row, p, n);
}
template <>
inline vf wload<TROUPE_BF16>(const void* row, int64_t p) {
  return wload_half_n<TROUPE_BF16>(row, p, VL);
}
template <>
inline vf wload_n<TROUPE_BF16>(const void* row, int64_t p, int n) {
  return wload_half_n<TROUPE_BF16>(row, p, n);
}
#endif

// ---- quantized blocks --------------------------------------------------------------
// The activations are quantized per 32-element block to int8 qs with a float scale and
// the block's sum of qs. A weight block is unpacked once (wq) and multiplied with several
// activation blocks: idot gives partial int32 sums whose total is sum(w * x) over the
// block, with the weight's zero point removed through `bias` = -zero * sum(x qs).
//
// Q4_0 nibbles are used unsigned (0..15) and Q8_0 weights, where VNNI's unsigned x signed
// product is available, are made unsigned by flipping the sign bit (w + 128): both
// products then need only the bias to be exact.

#if defined(__AVX2__)
using xq_t = __m256i;  // 32 activation int8
using vi = __m256i;    // 8 partial int32 sums
struct wq {
  __m256i a;  // unsigned operand
  __m256i s;  // the signed weights (maddubs sign trick for Q8_0 without VNNI)
};
using acc_t = __m256;
static inline xq_t xq_load(const int8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
static inline acc_t acc_zero() { return _mm256_setzero_ps(); }
static inline acc_t acc_fma(acc_t acc, vi s, float scale) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(scale), acc);
}
static inline float acc_sum(acc_t a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline vi vi_scalar(int32_t v) { return _mm256_castsi128_si256(_mm_cvtsi32_si128(v)); }
// 16 packed bytes -> 32 nibbles in element order (low nibbles first, as GGML stores Q4_0)
static inline __m256i q4_nibbles(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128((const __m128i*)qs);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}
static inline wq unpack_q4(const block_q4_0* b) { return {q4_nibbles(b->qs), _mm256_setzero_si256()}; }
static inline vi bias_q4(int32_t xsum) { return vi_scalar(-8 * xsum); }
#if defined(__AVX512VNNI__)
static inline wq unpack_q8(const block_q8_0* b) {
  const __m256i w = _mm256_loadu_si256((const __m256i*)b->qs);
  return {_mm256_xor_si256(w, _mm256_set1_epi8((char)0x80)), w};
}
static inline vi bias_q8(int32_t xsum) { return vi_scalar(-128 * xsum); }
static inline vi idot_q4(const wq& w, xq_t x, vi bias) { return _mm256_dpbusd_epi32(bias, w.a, x); }
static inline vi idot_q8(const wq& w, xq_t x, vi bias) { return _mm256_dpbusd_epi32(bias, w.a, x); }
#else
static inline wq unpack_q8(const block_q8_0* b) {
  const __m256i w = _mm256_loadu_si256((const __m256i*)b->qs);
  return {_mm256_abs_epi8(w), w};
}
static inline vi bias_q8(int32_t) { return _mm256_setzero_si256(); }
// maddubs: 15 * 127 * 2 and 128 * 127 * 2 both fit int16, so no saturation.
static inline vi idot_q4(const wq& w, xq_t x, vi bias) {
  return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w.a, x), _mm256_set1_epi16(1)), bias);
}
static inline vi idot_q8(const wq& w, xq_t x, vi) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w.a, _mm256_sign_epi8(x, w.s)), _mm256_set1_epi16(1));
}
#endif
#else
using xq_t = const int8_t*;
using vi = int32_t;
struct wq {
  int8_t a[QK];  // signed weights, zero point removed
};
using acc_t = float;
static inline xq_t xq_load(const int8_t* p) { return p; }
static inline acc_t acc_zero() { return 0.0f; }
static inline acc_t acc_fma(acc_t acc, vi s, float scale) { return acc + (float)s * scale; }
static inline float acc_sum(acc_t a) { return a; }
static inline wq unpack_q4(const block_q4_0* b) {
  wq r;
  for (int i = 0; i < QK / 2; ++i) {
    r.a[i] = (int8_t)((b->qs[i] & 0x0f) - 8);
    r.a[i + QK / 2] = (int8_t)((b->qs[i] >> 4) - 8);
  }
  return r;
}
static inline wq unpack_q8(const block_q8_0* b) {
  wq r;
  memcpy(r.a, b->qs, QK);
  return r;
}
static inline vi bias_q4(int32_t) { return 0; }
static inline vi bias_q8(int32_t) { return 0; }
static inline vi idot_q4(const wq& w, xq_t x, vi) {
  int32_t s = 0;
  for (int i = 0; i < QK; ++i) s += w.a[i] * x[i];
  return s;
}
static inline vi idot_q8(const wq& w, xq_t x, vi b) { return idot_q4(w, x, b); }
#endif
