// Rotary position embedding, in place, both pair layouts.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace troupe::kern::cuda {

// x (n_tokens, n_heads, head_dim) rotated in place; row t starts at x + t * row_stride
// (row_stride >= n_heads * head_dim, in floats). positions (n_tokens), inv_freq (head_dim/2)
// on the device. neox false: pairs (2i, 2i+1); true: pairs (i, i + head_dim/2).
void invoke_rope(float* x, int64_t row_stride, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                 int64_t head_dim, const float* inv_freq, bool neox, cudaStream_t stream);

}  // namespace troupe::kern::cuda
