// The CUDA side of `troupe worker` and `troupe generate`: a CUDA backend for the whole
// model, or for this rank's tensor-parallel shard with an NCCL communicator for its
// all-reduces (beside the Gloo group that relays step plans, as CPU ranks have). Built in
// every configuration: without CUDA, or without NCCL, each function throws
// troupe::error(unimplemented) saying what this build lacks.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace troupe {
class communicator;
class rendezvous_store;
namespace tp {
struct shard;
}
}  // namespace troupe

namespace troupe::cli {

struct cuda_worker_options {
  int device = 0;        // a device index (see cuda_device_for_rank)
  int64_t kv_bytes = 0;  // 0: a fraction of the device memory left after the weights
  int32_t block_size = 16;
  int64_t max_batch_tokens = 512;
  int32_t max_seqs = 64;
  int64_t swap_bytes = 0;  // pinned host pool for preemption by swap; 0 = none
  bool kv_f16 = true;      // KV pool in f16 (false: f32)
  double kv_fraction = 0;  // with kv_bytes == 0: share of the free memory; 0 = the backend's default
};

// The device a rank uses: `asked` when >= 0, else rank % the devices visible (one GPU per
// rank on a multi-GPU host). Throws troupe::error(unimplemented) with the reason when no
// device is usable.
int cuda_device_for_rank(int asked, int rank);

// `size` GPU ranks joined by NCCL on `device`, bootstrapped through `store` under
// `prefix` (rank 0 publishes the unique id). Call after the Gloo group has formed: NCCL's
// own set-up waits for every rank without a timeout.
std::unique_ptr<communicator> make_nccl_group(rendezvous_store& store, int rank, int size, int device,
                                              const std::string& prefix, std::chrono::milliseconds timeout);

// A CUDA backend over the whole model, or over `shard` with `nccl` (both or neither).
std::unique_ptr<worker_backend> make_cuda_worker_backend(const model_file& model, const kernel_registry& registry,
                                                         const cuda_worker_options& o, const tp::shard* shard = nullptr,
                                                         communicator* nccl = nullptr);

}  // namespace troupe::cli
