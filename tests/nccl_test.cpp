// NCCL collectives between GPU ranks (threads of this process, one device each). Labelled
// gpu: skips, saying why, where no device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "src/comm/rendezvous.h"
#include "troupe/communicator.h"

TEST(Nccl, AllReduceAcrossDevices) {
  int n_dev = 0;
  const cudaError_t e = cudaGetDeviceCount(&n_dev);
  if (e != cudaSuccess || n_dev < 1)
    GTEST_SKIP() << "no CUDA device: " << (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
  const int size = n_dev >= 2 ? 2 : 1;
  troupe::comm::memory_store store;
  std::vector<std::thread> ranks;
  std::vector<std::string> failures(size);
  for (int r = 0; r < size; ++r)
    ranks.emplace_back([&, r] {
      try {
        troupe::nccl_options opts;
        opts.device = r;
        auto comm = troupe::make_nccl_communicator(store, r, size, opts);
        const int n = 4097;
        std::vector<float> host(n);
        for (int i = 0; i < n; ++i) host[i] = (float)(r + 1) * i;
        float* dev = nullptr;
        cudaMalloc(&dev, n * sizeof(float));
        cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
        comm->all_reduce_sum(dev, n);
        cudaMemcpy(host.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost);
        cudaFree(dev);
        const float ranks_sum = size * (size + 1) / 2.0f;
        for (int i = 0; i < n; ++i)
          if (host[i] != ranks_sum * i) throw std::runtime_error("wrong sum at " + std::to_string(i));
        comm->barrier();
      } catch (const std::exception& ex) {
        failures[r] = ex.what();
      }
    });
  for (auto& t : ranks) t.join();
  for (int r = 0; r < size; ++r) EXPECT_EQ(failures[r], "") << "rank " << r;
}
