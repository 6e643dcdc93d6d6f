// Device checks: is there a device, a driver, a capability this build can run. Host code:
// the kernel-image probe lives in elementwise.cu (one nvcc run less per build).
#include <cuda_runtime.h>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/elementwise.cuh"

namespace troupe::kern::cuda {

namespace {

std::string err_text(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + std::to_string((int)e) + ")"; }
}  // namespace

bool cuda_available(std::string* why, int device) {
  auto fail = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    std::string hint;
    if (e == cudaErrorInsufficientDriver)
      hint = ": CUDA driver missing or older than this build's runtime (no GPU on this machine?)";
    else if (e == cudaErrorNoDevice)
      hint = ": no CUDA device visible (check CUDA_VISIBLE_DEVICES)";
    return fail("cudaGetDeviceCount failed: " + err_text(e) + hint);
  }
  if (count <= 0) return fail("no CUDA device found");
  if (device < 0 || device >= count)
    return fail("CUDA device " + std::to_string(device) + " asked, " + std::to_string(count) + " present");
  cudaDeviceProp prop{};
  if (const cudaError_t pe = cudaGetDeviceProperties(&prop, device); pe != cudaSuccess)
    return fail("cudaGetDeviceProperties(" + std::to_string(device) + ") failed: " + err_text(pe));
  if (prop.major * 10 + prop.minor < 75)
    return fail(std::string("CUDA device ") + prop.name + " has compute capability " + std::to_string(prop.major) +
                "." + std::to_string(prop.minor) + "; Troupe needs 7.5 or newer");
  int prev = 0;
  (void)cudaGetDevice(&prev);
  (void)cudaSetDevice(device);
  const cudaError_t ke = kernel_image_status();
  (void)cudaSetDevice(prev);
  if (ke != cudaSuccess) {
    (void)cudaGetLastError();
    return fail(std::string("this build has no kernels for ") + prop.name + " (sm_" + std::to_string(prop.major) +
                std::to_string(prop.minor) + "): built for CMAKE_CUDA_ARCHITECTURES " TROUPE_CUDA_ARCHS ": " +
                err_text(ke));
  }
  if (why) why->clear();
  return true;
}

}  // namespace troupe::kern::cuda
