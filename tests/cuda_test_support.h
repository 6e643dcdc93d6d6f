// Helpers for the gpu-labelled tests: skip without a usable device, device vectors.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda.h"

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
