// RAII owners of device and pinned host memory. Allocation failures throw troupe::error
// (overloaded) saying what was being allocated, how much was asked and how much is free.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>

#include "kernels/cuda/check.h"

namespace troupe {

class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(size_t bytes, const std::string& what) : bytes_(bytes) {
    if (bytes && cudaMalloc(&ptr_, bytes) != cudaSuccess) {
      ptr_ = nullptr;
      kern::cuda::throw_out_of_memory(what, bytes);
    }
  }
  ~device_buffer() {
    if (ptr_) (void)cudaFree(ptr_);
  }
  device_buffer(device_buffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
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

// Page-locked host memory: the source and target of asynchronous copies (and of copies
// recorded in a CUDA graph, which must keep their addresses).
class pinned_buffer {
 public:
  pinned_buffer() = default;
  pinned_buffer(size_t bytes, const std::string& what) : bytes_(bytes) {
    if (bytes && cudaMallocHost(&ptr_, bytes) != cudaSuccess) {
      ptr_ = nullptr;
      (void)cudaGetLastError();
      kern::cuda::throw_out_of_memory(what + " (pinned host memory)", bytes);
    }
  }
  ~pinned_buffer() {
    if (ptr_) (void)cudaFreeHost(ptr_);
  }
  pinned_buffer(pinned_buffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  pinned_buffer& operator=(pinned_buffer&& o) noexcept {
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

}  // namespace troupe
