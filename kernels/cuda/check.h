// Error checks for CUDA runtime and cuBLAS calls: they throw troupe::error naming the call,
// the file and line, and the CUDA error, instead of aborting (a server survives them).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace troupe::kern::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* what, const char* file, int line);

// Out-of-memory with the numbers that matter: what was asked, what is free, of what total.
[[noreturn]] void throw_out_of_memory(const std::string& what, size_t asked);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace troupe::kern::cuda

#define TROUPE_CUDA_CHECK(expr)                                                                                     \
  do {                                                                                                              \
    const cudaError_t troupe_err_ = (expr);                                                                         \
    if (troupe_err_ != cudaSuccess) ::troupe::kern::cuda::throw_cuda_error(troupe_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define TROUPE_CUBLAS_CHECK(expr)                                                      \
  do {                                                                                 \
    const cublasStatus_t troupe_st_ = (expr);                                          \
    if (troupe_st_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::troupe::kern::cuda::throw_cublas_error(troupe_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (not execution errors).
#define TROUPE_CUDA_CHECK_LAUNCH(name) TROUPE_CUDA_CHECK(cudaPeekAtLastError())
