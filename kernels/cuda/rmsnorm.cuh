// RMSNorm, plain and fused with the residual add that precedes it in every layer.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace troupe::kern::cuda {

// out (rows, dim) = x / rms(x) * w, with rms = sqrt(mean(x^2) + eps). out may alias x.
void invoke_rmsnorm(float* out, const float* x, const float* w, int64_t rows, int64_t dim, float eps,
                    cudaStream_t stream);

// x (rows, dim) += residual (rows, dim); out (rows, dim) = rmsnorm(x) * w.
// One pass over memory instead of two launches; out must not alias x or residual.
void invoke_add_rmsnorm(float* out, float* x, const float* residual, const float* w, int64_t rows, int64_t dim,
                        float eps, cudaStream_t stream);

}  // namespace troupe::kern::cuda
