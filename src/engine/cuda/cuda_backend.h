// The CUDA worker backend: one model replica on one GPU. Plain C++ header (no CUDA include):
// built only when TROUPE_WITH_CUDA.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace troupe {

class communicator;
namespace tp {
struct shard;
}

struct cuda_backend_options {
  int device = 0;
  int32_t block_size = 16;           // tokens per KV block
  int64_t kv_blocks = 0;             // 0 = kv_bytes worth, or kv_memory_fraction of the free memory
  int64_t kv_bytes = 0;              // used when kv_blocks == 0; 0 = kv_memory_fraction
  double kv_memory_fraction = 0.85;  // of the device memory left after weights and scratch
  bool kv_f16 = true;                // KV pool in f16 (false: f32)
  // Dense (f32/f16/bf16) weights are converted to this type once at load: TROUPE_F16 or
  // TROUPE_BF16 for cuBLAS tensor cores, or TROUPE_F32 (exact, slow, for checks).
  // Q8_0 / Q4_0 weights stay quantized.
  troupe_dtype dense_type = TROUPE_F16;
  bool cuda_graphs = true;          // capture the decode step once per batch shape and replay it
  int64_t max_batch_tokens = 2048;  // most new tokens one step may carry (sizes the scratch)
  int32_t max_seqs = 256;           // most sequences one step may carry
  int64_t swap_bytes = 0;           // pinned host pool for preemption by swap (step_plan::swap_out/in); 0 = none
  // Tensor parallelism, as in cpu_backend_options: this rank's shard (tp::make_shard) and
  // the group's NCCL communicator (make_nccl_communicator on the same device), which
  // all-reduces the attention output and MLP down projections in device memory. Both
  // null: the whole model. Both must outlive the backend. CUDA graphs are off with them.
  const tp::shard* shard = nullptr;
  communicator* comm = nullptr;
};

// Same as cuda_available in kernels/cuda/cuda.h (re-exported for callers of this header).
bool cuda_backend_available(std::string* why, int device = 0);

class cuda_backend : public worker_backend {
 public:
  // Keeps references to `model` and `registry` (both must outlive the backend). Uploads the
  // weights, allocates the KV pool and the scratch. Throws troupe::error: unimplemented when
  // no usable device (the reason from cuda_available), overloaded when memory runs out
  // (asked and free amounts in the message), failed for a model it cannot run. Every op
  // runs the registry's selected CUDA variant for the device weight and KV types, or the
  // built-in one when the registry holds none for CUDA (kern::cuda::variants()); CUDA graphs
  // are used only while every selected variant is a built-in one.
  cuda_backend(const model_file& model, const kernel_registry& registry, const cuda_backend_options& opt);
  ~cuda_backend() override;

  step_result step(const step_plan& plan) override;
  int64_t kv_blocks() const override;
  int32_t block_size() const override;
  std::string describe() const override;
  void copy_block(int32_t src, int32_t dst) override;
  int64_t host_blocks() const override;
  int64_t max_step_tokens() const override;

  // The logits (vocab) of the last step's sampled_index-th sampling sequence (plan order), copied to the
  // host: for tests and debugging.
  std::vector<float> last_logits(size_t sampled_index) const;
  // Steps replayed from a captured CUDA graph so far (for tests).
  int64_t graph_replays() const;

  struct impl;

 private:
  std::unique_ptr<impl> p_;
};

std::unique_ptr<worker_backend> make_cuda_backend(const model_file& model, const kernel_registry& registry,
                                                  const cuda_backend_options& opt = {});

}  // namespace troupe
