// The NCCL communicator: GPU ranks. Bootstrap: rank 0 creates the unique id and publishes it
// through the control plane's rendezvous store; the others read it.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>

#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw error(error_kind::failed, std::string("nccl: ") + what + ": " + cudaGetErrorString(e));
}

void check_nccl(ncclResult_t r, const char* what, int rank) {
  if (r != ncclSuccess)
    throw error(r == ncclRemoteError || r == ncclSystemError ? error_kind::disconnected : error_kind::failed,
                std::string("nccl ") + what + " failed on rank " + std::to_string(rank) + ": " + ncclGetErrorString(r));
}

class nccl_communicator : public communicator {
 public:
  nccl_communicator(rendezvous_store& store, int rank, int size, const nccl_options& opts)
      : rank_(rank), size_(size), device_(opts.device) {
    if (size < 1 || rank < 0 || rank >= size)
      throw error(error_kind::failed,
                  "nccl: rank " + std::to_string(rank) + " of size " + std::to_string(size) + " is out of range",
                  "rank");
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id;
    const std::string key = opts.prefix + "/nccl-unique-id";
    if (rank == 0) {
      check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", rank);
      store.set(key, std::vector<char>(reinterpret_cast<char*>(&id), reinterpret_cast<char*>(&id) + sizeof id));
    } else {
      auto v = store.get(key, opts.timeout);
      if (v.size() != sizeof id)
        throw error(error_kind::failed, "nccl: unique id under '" + key + "' has " + std::to_string(v.size()) +
                                            " bytes, expected " + std::to_string(sizeof id));
      std::memcpy(&id, v.data(), sizeof id);
    }
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_nccl(ncclCommInitRank(&comm_, size, id, rank), "ncclCommInitRank", rank);
  }

  ~nccl_communicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    check_nccl(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_, stream_), "all_reduce", rank_);
    check_cuda(cudaStreamSynchronize(stream_), "all_reduce sync");
  }

  void broadcast(void* data, size_t bytes, int root) override {
    if (size_ == 1 || bytes == 0) return;
    check_nccl(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "broadcast", rank_);
    check_cuda(cudaStreamSynchronize(stream_), "broadcast sync");
  }

  void barrier() override {
    if (size_ == 1) return;
    // NCCL has no barrier: an all-reduce of one float on the device is one.
    float* d = nullptr;
    check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&d), sizeof(float), stream_), "barrier alloc");
    check_cuda(cudaMemsetAsync(d, 0, sizeof(float), stream_), "barrier memset");
    check_nccl(ncclAllReduce(d, d, 1, ncclFloat32, ncclSum, comm_, stream_), "barrier", rank_);
    check_cuda(cudaFreeAsync(d, stream_), "barrier free");
    check_cuda(cudaStreamSynchronize(stream_), "barrier sync");
  }

  std::string describe() const override {
    return "nccl cuda:" + std::to_string(device_) + ", rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }

 private:
  int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<communicator> make_nccl_communicator(rendezvous_store& store, int rank, int size,
                                                     const nccl_options& opts) {
  return std::make_unique<nccl_communicator>(store, rank, size, opts);
}

}  // namespace troupe
