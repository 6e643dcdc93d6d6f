// Builds without NCCL (no CUDA, or CUDA without libnccl found): asking for it says so.
#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {

std::unique_ptr<communicator> make_nccl_communicator(rendezvous_store&, int, int, const nccl_options&) {
  throw error(error_kind::unimplemented,
              "nccl: this troupe was built without NCCL (configure with -DTROUPE_CUDA=ON on a machine with nvcc and "
              "libnccl; NCCL_LIBRARY and NCCL_INCLUDE_DIR point CMake at it)");
}

}  // namespace troupe
