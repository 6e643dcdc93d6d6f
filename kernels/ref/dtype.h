// Scalar conversions and the quantized block layouts (GGML's Q8_0 and Q4_0).
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/dtypes.h"  // row_bytes and the other per-type figures

namespace troupe::kern {

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even.
inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
  if (absx >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // overflow to inf
  if (absx < 0x38800000) {                                   // subnormal or zero in f16
    if (absx < 0x33000000) return (uint16_t)sign;
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14 + (113 - e) ... bits to drop
    const uint32_t half = 1u << (shift - 1);
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ((absx - 0x38000000) >> 13);
  const uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return (uint16_t)(sign | r);
}

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

constexpr int QK = 32;  // elements per quantized block

// value = d * qs[i]
struct block_q8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[QK];
};
static_assert(sizeof(block_q8_0) == 34);

// value = d * ((nibble) - 8); element i < 16 in the low nibble of qs[i], i >= 16 in the high nibble of qs[i-16]
struct block_q4_0 {
  uint16_t d;  // f16 scale
  uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_0) == 18);

static_assert(find_dtype(TROUPE_Q8_0)->block_elems == QK && find_dtype(TROUPE_Q8_0)->block_bytes == sizeof(block_q8_0));
static_assert(find_dtype(TROUPE_Q4_0)->block_elems == QK && find_dtype(TROUPE_Q4_0)->block_bytes == sizeof(block_q4_0));

// Reference (de)quantization of one row, used by the loader, the quantizer and the tests.
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t k);
void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t k);
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t k);
void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t k);
// Any supported type -> f32.
void dequantize_row(int dtype, const void* x, float* y, int64_t k);

}  // namespace troupe::kern
