// Reference quantization: the block formats of GGML's Q8_0 and Q4_0.
#include <algorithm>
#include <cmath>

#include "kernels/ref/dtype.h"

namespace troupe::kern {

void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t k) {
  for (int64_t b = 0; b < k / QK; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(x[b * QK + i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int i = 0; i < QK; ++i) y[b].qs[i] = (int8_t)std::lround(x[b * QK + i] * id);
  }
}

void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t k) {
  for (int64_t b = 0; b < k / QK; ++b) {
    // The scale maps the element of largest magnitude to -8, keeping its sign.
    float amax = 0.0f, vmax = 0.0f;
    for (int i = 0; i < QK; ++i) {
      const float v = x[b * QK + i];
      if (std::fabs(v) > amax) {
        amax = std::fabs(v);
        vmax = v;
      }
    }
    const float d = vmax / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int i = 0; i < QK / 2; ++i) {
      const int lo = std::min(15, (int)(x[b * QK + i] * id + 8.5f));
      const int hi = std::min(15, (int)(x[b * QK + QK / 2 + i] * id + 8.5f));
      y[b].qs[i] = (uint8_t)(lo | (hi << 4));
    }
  }
}

void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t k) {
  for (int64_t b = 0; b < k / QK; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int i = 0; i < QK; ++i) y[b * QK + i] = d * x[b].qs[i];
  }
}

void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t k) {
  for (int64_t b = 0; b < k / QK; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int i = 0; i < QK / 2; ++i) {
      y[b * QK + i] = d * ((x[b].qs[i] & 0x0f) - 8);
      y[b * QK + QK / 2 + i] = d * ((x[b].qs[i] >> 4) - 8);
    }
  }
}

void dequantize_row(int dtype, const void* x, float* y, int64_t k) {
  switch (dtype) {
    case 0:
      std::copy_n(static_cast<const float*>(x), k, y);
      return;
    case 1: {
      auto* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < k; ++i) y[i] = f16_to_f32(h[i]);
      return;
    }
    case 30: {
      auto* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < k; ++i) y[i] = bf16_to_f32(h[i]);
      return;
    }
    case 8:
      dequantize_row_q8_0(static_cast<const block_q8_0*>(x), y, k);
      return;
    case 2:
      dequantize_row_q4_0(static_cast<const block_q4_0*>(x), y, k);
      return;
  }
}

}  // namespace troupe::kern
