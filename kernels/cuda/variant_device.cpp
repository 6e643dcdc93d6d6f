// CUDA variants under `troupe kernels check|bench`: each case's inputs are copied to device
// memory, the variant runs on this device's stream, outputs come back after a sync; timing
// uses events recorded on the same stream. Also the device's roofline.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/check.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda.h"
#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {

class cuda_variant_device : public variant_device {
 public:
  explicit cuda_variant_device(int device) {
    std::string why;
    if (!cuda_available(&why, device)) throw error(error_kind::unimplemented, why, "device");
    TROUPE_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    TROUPE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " " + prop.name;
    TROUPE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ctx_.n_threads = 1;
    ctx_.stream = stream_;
  }
  ~cuda_variant_device() override {
    release();
    if (stream_) (void)cudaStreamDestroy(stream_);
  }

  const troupe_kctx* ctx() const override { return &ctx_; }

  void* upload(const void* host, size_t bytes) override {
    void* d = nullptr;
    if (cudaMalloc(&d, std::max<size_t>(bytes, 1)) != cudaSuccess) throw_out_of_memory("kernel check input", bytes);
    allocations_.push_back(d);
    if (bytes) TROUPE_CUDA_CHECK(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, stream_));
    return d;
  }

  void download(void* host, const void* dev, size_t bytes) override {
    TROUPE_CUDA_CHECK(cudaPeekAtLastError());  // a launch the variant got wrong
    if (bytes) TROUPE_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream_));
    TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // and any fault while it ran
  }

  void release() override {
    if (allocations_.empty()) return;
    (void)cudaStreamSynchronize(stream_);
    for (void* p : allocations_) (void)cudaFree(p);
    allocations_.clear();
  }

  double seconds_per_call(const std::function<void()>& call) override {
    call();  // warm-up: first-use costs (cuBLAS heuristics, module loading)
    TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    cudaEvent_t start = nullptr, stop = nullptr;
    TROUPE_CUDA_CHECK(cudaEventCreate(&start));
    if (cudaEventCreate(&stop) != cudaSuccess) {
      (void)cudaEventDestroy(start);
      throw error(error_kind::failed, "cuda: cudaEventCreate failed", "device");
    }
    double seconds = 0;
    try {
      // Batches of doubling size until one takes ~0.3 s of device time.
      for (int reps = 2;; reps *= 2) {
        TROUPE_CUDA_CHECK(cudaEventRecord(start, stream_));
        for (int i = 0; i < reps; ++i) call();
        TROUPE_CUDA_CHECK(cudaEventRecord(stop, stream_));
        TROUPE_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        TROUPE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        seconds = ms / 1e3 / reps;
        if (ms >= 300 || reps >= (1 << 20)) break;
      }
    } catch (...) {
      (void)cudaEventDestroy(start);
      (void)cudaEventDestroy(stop);
      throw;
    }
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    return seconds;
  }

  std::string describe() const override { return name_; }

 private:
  std::string name_;
  cudaStream_t stream_ = nullptr;
  troupe_kctx ctx_{};
  std::vector<void*> allocations_;
};

int attribute(cudaDeviceAttr a, int device) {
  int v = 0;
  return cudaDeviceGetAttribute(&v, a, device) == cudaSuccess ? v : 0;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::unique_ptr<variant_device> make_variant_device(int device) {
  return std::make_unique<cuda_variant_device>(device);
}

roofline device_roofline(int device) {
  cudaDeviceProp prop{};
  TROUPE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (auto r = published_roofline(prop.name)) return *r;
  return derived_roofline(attribute(cudaDevAttrMemoryClockRate, device),
                          attribute(cudaDevAttrGlobalMemoryBusWidth, device),
                          attribute(cudaDevAttrMultiProcessorCount, device), attribute(cudaDevAttrClockRate, device),
                          prop.major, prop.minor);
}

}  // namespace troupe::kern::cuda
