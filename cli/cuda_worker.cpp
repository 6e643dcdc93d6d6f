#include "cli/cuda_worker.h"

#include "troupe/communicator.h"
#include "troupe/error.h"
#ifdef TROUPE_WITH_CUDA
#include "kernels/cuda/cuda.h"
#include "src/engine/cuda/cuda_backend.h"
#endif

namespace troupe::cli {

namespace {

[[maybe_unused]] [[noreturn]] void no_cuda(const std::string& what) {
  throw error(error_kind::unimplemented,
              what + ": this troupe was built without CUDA (configure with -DTROUPE_CUDA=ON on a machine with nvcc)",
              "backend");
}

}  // namespace

#ifdef TROUPE_WITH_CUDA

int cuda_device_for_rank(int asked, int rank) {
  const int count = kern::cuda::device_count();
  const int device = asked >= 0 ? asked : count > 0 ? rank % count : 0;
  std::string why;
  if (!kern::cuda::cuda_available(&why, device))
    throw error(error_kind::unimplemented, "cuda backend: " + why, "device");
  return device;
}

std::unique_ptr<worker_backend> make_cuda_worker_backend(const model_file& model, const kernel_registry& registry,
                                                         const cuda_worker_options& o, const tp::shard* shard,
                                                         communicator* nccl) {
  cuda_backend_options co;
  co.device = o.device;
  co.kv_bytes = o.kv_bytes;
  co.block_size = o.block_size;
  co.max_batch_tokens = o.max_batch_tokens;
  co.max_seqs = o.max_seqs;
  co.swap_bytes = o.swap_bytes;
  co.kv_f16 = o.kv_f16;
  if (o.kv_fraction > 0) co.kv_memory_fraction = o.kv_fraction;
  co.shard = shard;
  co.comm = nccl;
  return make_cuda_backend(model, registry, co);
}

#else

int cuda_device_for_rank(int, int) { no_cuda("--backend cuda"); }
std::unique_ptr<worker_backend> make_cuda_worker_backend(const model_file&, const kernel_registry&,
                                                         const cuda_worker_options&, const tp::shard*, communicator*) {
  no_cuda("--backend cuda");
}

#endif

std::unique_ptr<communicator> make_nccl_group(rendezvous_store& store, int rank, int size, int device,
                                              const std::string& prefix, std::chrono::milliseconds timeout) {
  nccl_options no;
  no.device = device;
  no.prefix = prefix;
  no.timeout = timeout;
  try {
    return make_nccl_communicator(store, rank, size, no);
  } catch (const error& e) {
    throw error(
        e.kind(),
        "--backend cuda --tp-size " + std::to_string(size) + ": the GPU ranks all-reduce through NCCL: " + e.what(),
        "tp-size");
  }
}

}  // namespace troupe::cli
