// Builds without CUDA: NCCL is not there, and asking for it says so.
#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {

std::unique_ptr<communicator> make_nccl_communicator(rendezvous_store&, int, int, const nccl_options&) {
  throw error(error_kind::unimplemented,
              "nccl: this troupe was built without CUDA (configure with -DTROUPE_CUDA=ON on a machine with nvcc)");
}

}  // namespace troupe
