// Helpers for the gpu-labelled tests: skip without a usable device, device vectors.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda.h"
#include "kernels/ref/dtype.h"
#include "troupe/kernel_abi.h"

// Skips the test, giving cuda_available's reason (no device, driver missing, too old).
#define TROUPE_REQUIRE_CUDA()                                                   \
  do {                                                                          \
    std::string troupe_why_;                                                    \
    if (!::troupe::kern::cuda::cuda_available(&troupe_why_))                    \
      GTEST_SKIP() << "no usable CUDA device: " << troupe_why_ << ": skipping"; \
  } while (0)

namespace troupe::test {

// A device copy of a host vector; download() brings it back.
template <typename T>
class dev_vec {
 public:
  explicit dev_vec(const std::vector<T>& h) : n_(h.size()) {
    TROUPE_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(1, n_) * sizeof(T)));
    if (n_) TROUPE_CUDA_CHECK(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit dev_vec(size_t n) : dev_vec(std::vector<T>(n)) {}
  ~dev_vec() { (void)cudaFree(p_); }
  dev_vec(const dev_vec&) = delete;
  dev_vec& operator=(const dev_vec&) = delete;
  T* get() const { return p_; }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    TROUPE_CUDA_CHECK(cudaDeviceSynchronize());
    if (n_) TROUPE_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Rows of k floats encoded as `dtype` (the raw bytes a model file would hold).
inline std::vector<uint8_t> encode(const std::vector<float>& f, troupe_dtype dtype, int64_t rows, int64_t k) {
  const int64_t rb = kern::row_bytes(dtype, k);
  std::vector<uint8_t> out(rb * rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = &f[r * k];
    uint8_t* dst = &out[r * rb];
    switch (dtype) {
      case TROUPE_F32:
        std::memcpy(dst, src, k * 4);
        break;
      case TROUPE_F16:
      case TROUPE_BF16:
        for (int64_t i = 0; i < k; ++i) {
          const uint16_t h = dtype == TROUPE_F16 ? kern::f32_to_f16(src[i]) : kern::f32_to_bf16(src[i]);
          std::memcpy(dst + 2 * i, &h, 2);
        }
        break;
      case TROUPE_Q8_0:
        kern::quantize_row_q8_0(src, reinterpret_cast<kern::block_q8_0*>(dst), k);
        break;
      case TROUPE_Q4_0:
        kern::quantize_row_q4_0(src, reinterpret_cast<kern::block_q4_0*>(dst), k);
        break;
    }
  }
  return out;
}

// Every element within atol + rtol * |ref|; reports the first few misses.
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<float>& ref, float atol,
                                            float rtol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "sizes differ: " << got.size() << " vs " << ref.size();
  int misses = 0;
  std::string msg;
  float worst = 0.0f;
  for (size_t i = 0; i < got.size(); ++i) {
    const float err = std::fabs(got[i] - ref[i]);
    worst = std::max(worst, err);
    if (!(err <= atol + rtol * std::fabs(ref[i]))) {
      if (++misses <= 5)
        msg += " [" + std::to_string(i) + "] got " + std::to_string(got[i]) + " ref " + std::to_string(ref[i]) + ";";
    }
  }
  if (misses)
    return ::testing::AssertionFailure() << misses << " of " << got.size() << " elements off (atol " << atol
                                         << ", rtol " << rtol << ", worst " << worst << "):" << msg;
  return ::testing::AssertionSuccess();
}

}  // namespace troupe::test
