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
//   attention_f16kv: as attention (the reference reads the same f16 pools);  to_f16: the
//     bits exactly (round to nearest even, like F16C);
//   argmax: the ids exactly; logprobs 2e-6 + 1e-5 |ref| (a sum of exponentials, each
//     accurate to ~2e-7 relative, over up to 128k entries in float blocks).
//
// CUDA variants get the same cases, uploaded to the device, run on a stream and downloaded;
// their bounds are looser where the GPU path rounds differently (per dtype):
//   matmul: the bound above plus r sum_p |x_p w_p|, r the relative rounding of the GEMM's
//     inputs: 2^-10 for f32 (TF32 allowed), f16 and quantized (activations and dequantized
//     weights rounded to f16), 2^-7 for bf16;
//   rmsnorm and rope: 1e-5 + 1e-4 |ref|;  attention: 1e-4 + 1e-3 |ref|;  argmax logprobs:
//   2e-5 + 1e-4 |ref| (per-thread float sums of the exponentials); others as on the CPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe {
class kernel_registry;
}

namespace troupe::kern {

// Where a checked or timed variant's buffers live and its work runs. CPU variants run on
// host memory (no copies); CUDA variants on a device (kern::cuda::make_variant_device), where
// inputs are uploaded, the variant runs on the device's stream and outputs come back.
class variant_device {
 public:
  virtual ~variant_device() = default;
  virtual const troupe_kctx* ctx() const = 0;  // what the variant receives (ctx->stream on CUDA)
  // A copy of `bytes` host bytes that the variant may read and write; valid until release().
  virtual void* upload(const void* host, size_t bytes) = 0;
  // Waits for the work queued so far, then copies back. Throws troupe::error on a device error.
  virtual void download(void* host, const void* dev, size_t bytes) = 0;
  virtual void release() = 0;  // frees every upload
  // Seconds per call of `call`, on this device's clock (events on the stream for CUDA):
  // one warm-up call, then repeats until ~0.3 s (at least 2 calls).
  virtual double seconds_per_call(const std::function<void()>& call) = 0;
  virtual std::string describe() const = 0;  // "cpu", "cuda:0 NVIDIA H100 80GB HBM3"
};

// Host memory and the steady clock: where CPU variants run.
std::unique_ptr<variant_device> make_host_device(const troupe_kctx* ctx);

struct check_options {
  std::string op;       // only this op (its registry name); empty: all
  std::string variant;  // only this variant name; empty: all but "ref"
  uint64_t seed = 1;
  variant_device* cuda = nullptr;  // where CUDA variants run; null: they are reported skipped
  std::string cuda_skip_reason;    // why they are skipped (no device, the driver's error)
};

struct check_result {
  troupe_op op{};
  std::string variant;
  troupe_backend backend = TROUPE_BACKEND_CPU;
  bool skipped = false;  // not run: no device for its backend (skip_reason says why)
  std::string skip_reason;
  int cases = 0;
  double max_abs_err = 0;  // worst |got - ref| over all cases
  double worst_ratio = 0;  // worst |got - ref| / allowed; above 1 is a failure
  bool pass = true;
  std::string first_failure;  // the case and element of the first failure, if any
};

// Checks every variant (other than "ref") of every op that matches `opt`: CPU ones on
// `ctx` (its pool decides the threads; the reference runs there too), CUDA ones on
// opt.cuda or, without it, listed as skipped. Ops without a "ref" are skipped. A variant
// that throws (a device error) fails with the message.
std::vector<check_result> check_variants(const kernel_registry& reg, const troupe_kctx* ctx,
                                         const check_options& opt = {});

// Random weights in [-1, 1], rows of k elements stored as `dtype` (a troupe_dtype; k a
// multiple of 32 for the quantized types): test and benchmark data.
std::vector<char> random_weights(int dtype, int64_t rows, int64_t k, uint64_t seed);

// The dtype a matmul or embedding op reads its weights as.
int op_dtype(troupe_op op);

// One line per op and backend: the allowed error (the text above, short).
std::string tolerance_summary(troupe_op op, troupe_backend backend = TROUPE_BACKEND_CPU);

}  // namespace troupe::kern
