// Checks kernel variants against the reference ("ref") of their op on random and
// awkward shapes: |got - ref| <= allowed, element by element. Shared by the unit test
// (tests/kernels_cpu_test.cpp) and `troupe kernels check`.
//
// The allowed error per op (u = 2^-24, the f32 unit roundoff):
//   matmul f32/f16/bf16: 1e-6 + 1e-5 |ref| + k u sum_p |x_p w_p|  (an f32 sum of k products
//     in any order, against the ref's f64 sum of the same converted weights).
//   matmul q8_0/q4_0: the above, plus the error of quantizing the activations to 8 bits
//     per 32-block: |x - x^| <= amax_b (1/2 + 127 * 2^-11) / 127 per element (rounding to
//     the grid, plus an f16-rounded scale), so the sum gains sum_b e_b sum_{p in b} |w_p|.
//     The ref is applied to the same quantized weights.
//   rmsnorm: 1e-6 + (1e-6 + dim u) |ref|  (an f32 sum of squares).
//   rope: 1e-6 + 1e-5 |ref|;  attention: 5e-6 + 1e-5 |ref| (outputs are convex
//     combinations of values in [-1, 1]; an exp accurate to ~1e-7 relative).
//   silu_mul: 1e-6 + 1e-5 |ref|;  add and embedding: exact.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe {
class kernel_registry;
}

namespace troupe::kern {

struct check_options {
  std::string op;       // only this op (its registry name); empty: all
  std::string variant;  // only this variant name; empty: all but "ref"
  uint64_t seed = 1;
};

struct check_result {
  troupe_op op{};
  std::string variant;
  int cases = 0;
  double max_abs_err = 0;  // worst |got - ref| over all cases
  double worst_ratio = 0;  // worst |got - ref| / allowed; above 1 is a failure
  bool pass = true;
  std::string first_failure;  // the case and element of the first failure, if any
};

// Checks every CPU variant (other than "ref") of every op that matches `opt`, running
// each on `ctx` (its pool decides the threads). Ops without a "ref" are skipped.
std::vector<check_result> check_variants(const kernel_registry& reg, const troupe_kctx* ctx,
                                         const check_options& opt = {});

// Random weights in [-1, 1], rows of k elements stored as `dtype` (a troupe_dtype; k a
// multiple of 32 for the quantized types): test and benchmark data.
std::vector<char> random_weights(int dtype, int64_t rows, int64_t k, uint64_t seed);

// The dtype a matmul or embedding op reads its weights as.
int op_dtype(troupe_op op);

// One line per op: the allowed error (the text above, short).
std::string tolerance_summary(troupe_op op);

}  // namespace troupe::kern
