#include "kernels/cuda/check.h"

#include "troupe/error.h"

namespace troupe::kern::cuda {

namespace {
std::string where(const char* what, const char* file, int line) {
  return std::string(what) + " at " + file + ":" + std::to_string(line);
}

std::string mib(size_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MiB"; }
}  // namespace

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  const std::string msg =
      "cuda: " + where(what, file, line) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the sticky-free allocation error so later calls work
    throw error(error_kind::overloaded, msg, "cuda");
  }
  throw error(error_kind::failed, msg, "cuda");
}

void throw_cublas_error(cublasStatus_t st, const char* what, const char* file, int line) {
  throw error(
      error_kind::failed,
      "cublas: " + where(what, file, line) + ": " + cublasGetStatusName(st) + " (" + cublasGetStatusString(st) + ")",
      "cuda");
}

void throw_out_of_memory(const std::string& what, size_t asked) {
  size_t free_b = 0, total_b = 0;
  (void)cudaGetLastError();
  std::string mem = "free memory unknown";
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) mem = mib(free_b) + " free of " + mib(total_b);
  throw error(error_kind::overloaded,
              "cuda: out of device memory for " + what + ": asked " + mib(asked) + " (" + std::to_string(asked) +
                  " bytes), " + mem,
              "cuda");
}

}  // namespace troupe::kern::cuda
