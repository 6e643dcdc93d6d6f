// The CUDA kernels as seen by the rest of Troupe: registration of the CUDA variants of
// every op, and a check for a usable device. Plain C++: no CUDA header needed to include it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/roofline.h"
#include "troupe/kernel_registry.h"

namespace troupe::kern {
class variant_device;
}

namespace troupe::kern::cuda {

// Adds the "cuda.v1" variant (backend TROUPE_BACKEND_CUDA) of every op to the registry.
// They take device pointers and run on the cudaStream_t in troupe_kctx::stream; the
// matmul and attention variants allocate stream-ordered scratch (cudaMallocAsync), and the
// single-token attention variant reads the query position back (one stream sync).
void register_all(kernel_registry& registry);
// The same variants, for a backend to fall back on when its registry holds none for CUDA.
std::vector<troupe_kernel_variant> variants();

// True when a CUDA device is present, its driver loads, its compute capability is at least
// 7.5 and this build holds kernels it can run. Otherwise false with the reason in *why
// (e.g. "cudaGetDeviceCount failed: cudaErrorInsufficientDriver (35): CUDA driver missing or
// too old"). Never throws, never aborts: the CPU backend is the fallback.
bool cuda_available(std::string* why, int device = 0);

// Devices the runtime sees; 0 without a driver or a device (never throws).
int device_count();

// Where `troupe kernels check|bench` runs CUDA variants: device memory for each upload, a
// stream of its own (in ctx()->stream), timing by events on that stream. Throws
// troupe::error(unimplemented) with cuda_available's reason when the device is not usable.
std::unique_ptr<variant_device> make_variant_device(int device = 0);

// The device's roofline: the published figures when its name is in the table, otherwise
// derived from cudaDeviceGetAttribute (clocks, bus width, SMs). Throws troupe::error when
// the device cannot be queried.
roofline device_roofline(int device = 0);

}  // namespace troupe::kern::cuda
