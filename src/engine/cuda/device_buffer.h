// RAII owners of device memory and of pinned host memory. Allocation failures throw
// troupe::error (overloaded) saying what was being allocated, how much was asked and how
// much is free.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>

#include "kernels/cuda/check.h"

namespace troupe {

enum class memory_kind { device, pinned_host };

template <memory_kind K>
class cuda_memory {
 public:
  cuda_memory() = default;
  cuda_memory(size_t bytes, const std::string& what) : bytes_(bytes) {
    if (!bytes) return;
    const cudaError_t e = K == memory_kind::device ? cudaMalloc(&ptr_, bytes) : cudaMallocHost(&ptr_, bytes);
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      kern::cuda::throw_out_of_memory(K == memory_kind::device ? what : what + " (pinned host memory)", bytes);
    }
  }
  ~cuda_memory() {
    if (!ptr_) return;
    if constexpr (K == memory_kind::device)
      (void)cudaFree(ptr_);
    else
      (void)cudaFreeHost(ptr_);
  }
  cuda_memory(cuda_memory&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  cuda_memory& operator=(cuda_memory&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

using device_buffer = cuda_memory<memory_kind::device>;
// Page-locked host memory: the source and target of asynchronous copies (and of copies
// recorded in a CUDA graph, which must keep their addresses).
using pinned_buffer = cuda_memory<memory_kind::pinned_host>;

}  // namespace troupe
