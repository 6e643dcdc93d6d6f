// Embedding lookup: rows of a token table, converted to f32.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "troupe/kernel_abi.h"

namespace troupe::kern::cuda {

// out (n_ids, dim) f32 = rows ids[] of table (vocab, dim) stored as dtype
// (f32, f16, bf16, q8_0 or q4_0; dim a multiple of 32 for the quantized types).
// ids live on the device.
void invoke_embedding(float* out, const void* table, troupe_dtype dtype, const int32_t* ids, int64_t n_ids, int64_t dim,
                      cudaStream_t stream);

}  // namespace troupe::kern::cuda
