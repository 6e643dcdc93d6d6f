// The reference variants of every op (named "ref", backend CPU).
#pragma once
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe::kern::ref {
std::vector<troupe_kernel_variant> variants();

// The reference argmax (troupe_argmax_fn), f64 sums: also the sampler's default.
void argmax(const troupe_kctx* ctx, int32_t* ids, float* logprobs, const float* logits, int64_t rows, int64_t n,
            float temperature);
}  // namespace troupe::kern::ref
