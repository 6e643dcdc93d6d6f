// The CUDA kernels as seen by the rest of Troupe: registration of the CUDA variants of
// every op, and a check for a usable device. Plain C++: no CUDA header needed to include it.
#pragma once
#include <string>

#include "troupe/kernel_registry.h"

namespace troupe::kern::cuda {

// Adds the "cuda.v1" variant (backend TROUPE_BACKEND_CUDA) of every op to the registry.
// They take device pointers and run on the cudaStream_t in troupe_kctx::stream; the
// matmul and attention variants allocate stream-ordered scratch (cudaMallocAsync), and the
// single-token attention variant reads the query position back (one stream sync).
void register_all(kernel_registry& registry);

// True when a CUDA device is present, its driver loads, its compute capability is at least
// 7.5 and this build holds kernels it can run. Otherwise false with the reason in *why
// (e.g. "cudaGetDeviceCount failed: cudaErrorInsufficientDriver (35): CUDA driver missing or
// too old"). Never throws, never aborts: the CPU backend is the fallback.
bool cuda_available(std::string* why, int device = 0);

}  // namespace troupe::kern::cuda
