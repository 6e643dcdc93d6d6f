#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/ref/dtype.h"

using namespace troupe::kern;

TEST(Dtype, F16RoundTripsExactValuesAndRoundsToNearest) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(f)), f) << f;
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  // 1 + 2^-11 is exactly between 1 and 1 + 2^-10: ties to even gives 1.
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 0.00048828125f)), 1.0f);
  for (uint32_t h = 0; h < 0x7c00; h += 7) EXPECT_EQ(f32_to_f16(f16_to_f32((uint16_t)h)), h);
}

TEST(Dtype, Bf16Rounds) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_NEAR(bf16_to_f32(f32_to_bf16(3.14159f)), 3.14159f, 0.01f);
}

TEST(Quant, Q8AndQ4RoundTripWithinOneStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int k = 256;
  std::vector<float> x(k), y(k);
  for (auto& v : x) v = nd(rng);
  std::vector<block_q8_0> q8(k / QK);
  quantize_row_q8_0(x.data(), q8.data(), k);
  dequantize_row_q8_0(q8.data(), y.data(), k);
  for (int b = 0; b < k / QK; ++b) {
    const float d = f16_to_f32(q8[b].d);
    for (int i = 0; i < QK; ++i) EXPECT_LE(std::fabs(y[b * QK + i] - x[b * QK + i]), 0.5f * d + 1e-3f);
  }
  std::vector<block_q4_0> q4(k / QK);
  quantize_row_q4_0(x.data(), q4.data(), k);
  dequantize_row_q4_0(q4.data(), y.data(), k);
  for (int b = 0; b < k / QK; ++b) {
    const float d = std::fabs(f16_to_f32(q4[b].d));
    for (int i = 0; i < QK; ++i) EXPECT_LE(std::fabs(y[b * QK + i] - x[b * QK + i]), d + 1e-3f);
  }
}
