// Collective communication between the ranks of one worker group (tensor parallelism).
// Two implementations: Gloo over TCP for CPU ranks, NCCL for GPU ranks. Bootstrap
// (rendezvous) goes through a key-value store that the cluster's control plane provides.
#pragma once
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace troupe {

// A resource: RAII, not copyable. Collectives are blocking and must be entered by every
// rank of the group in the same order.
class communicator {
 public:
  virtual ~communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: data(n) becomes the element-wise sum over all ranks.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  // data(bytes) on every rank becomes root's.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  virtual std::string describe() const = 0;  // "gloo tcp, rank 1 of 2"
};

// The rendezvous: ranks publish their addresses and read each other's. get() waits until
// the key exists or the timeout passes (then throws troupe::error(disconnected)).
class rendezvous_store {
 public:
  virtual ~rendezvous_store() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  virtual std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

struct gloo_options {
  std::string hostname = "127.0.0.1";  // address this rank listens on (an interface's address)
  std::string prefix = "group";        // namespaces the store's keys (one group, one prefix)
  std::chrono::milliseconds timeout{30000};
};

// Connects `size` ranks into a full mesh over TCP through the store. Throws troupe::error
// naming the peer and the reason when the mesh cannot form within the timeout.
std::unique_ptr<communicator> make_gloo_communicator(rendezvous_store& store, int rank, int size,
                                                     const gloo_options& opts);

}  // namespace troupe

namespace troupe {

struct nccl_options {
  int device = 0;                // CUDA device of this rank
  std::string prefix = "group";  // namespaces the store's keys
  std::chrono::milliseconds timeout{60000};
};

// GPU ranks: all_reduce_sum and broadcast take DEVICE pointers and run on the
// communicator's stream (synchronized before returning). Rank 0 creates the NCCL unique id
// and publishes it through the store. Only in builds with CUDA (TROUPE_WITH_CUDA); elsewhere
// it throws troupe::error(unimplemented).
std::unique_ptr<communicator> make_nccl_communicator(rendezvous_store& store, int rank, int size,
                                                     const nccl_options& opts);

}  // namespace troupe
