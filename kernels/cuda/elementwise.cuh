// Element-wise ops of the feed-forward block and the residual stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace troupe::kern::cuda {

// out (n) = silu(gate) * up. out may alias gate or up.
void invoke_silu_mul(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream);

// out (n) = a + b. out may alias a or b.
void invoke_add(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);

// x (rows, n) += bias (n) on every row.
void invoke_add_bias(float* x, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

// cudaSuccess when this binary holds code the current device can run (probed on one of
// these kernels), else the error, typically cudaErrorNoKernelImageForDevice.
cudaError_t kernel_image_status();

}  // namespace troupe::kern::cuda
