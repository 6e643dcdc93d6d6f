// `troupe worker --backend cuda --tp-size 2` in the cluster, as real processes on one
// multi-GPU host: two GPU ranks (NCCL between them, Gloo relaying the plans) serve jobs
// with the greedy output of `troupe generate` on the CPU. Needs 2 GPUs; skips, saying why,
// elsewhere. Greedy ids over 32 tokens of stories260K with f16 weights: equal, as the
// single-GPU test (test_cuda_backend) finds them.
#include <gtest/gtest.h>

#include "cluster_jobs.h"
#include "kernels/cuda/cuda.h"

using namespace troupe;
using namespace troupe::test;

TEST(TensorParallelClusterCuda, TwoGpuRanksServeLikeGenerate) {
  TROUPE_REQUIRE_MODELS();
  std::string why;
  if (!kern::cuda::cuda_available(&why, 0)) GTEST_SKIP() << "no usable CUDA device: " << why;
  if (kern::cuda::device_count() < 2) GTEST_SKIP() << kern::cuda::device_count() << " CUDA device: the group needs 2";
  const auto dir = temp_dir("tp-cluster-cuda");
  const int sched_port = free_port(), gateway_port = free_port(), rdv_port = free_port();
  child_process scheduler({"scheduler", "--listen", tcp(sched_port), "--rendezvous", tcp(rdv_port)},
                          dir / "scheduler.log");
  ASSERT_TRUE(scheduler.wait_for_log("ready on")) << scheduler.log();
  auto rank = [&](int r) {
    return std::make_unique<child_process>(std::vector<std::string>{"worker",
                                                                    "--backend",
                                                                    "cuda",
                                                                    "--model",
                                                                    model_path(),
                                                                    "--scheduler",
                                                                    tcp(sched_port),
                                                                    "--name",
                                                                    "gpu" + std::to_string(r),
                                                                    "--tp-size",
                                                                    "2",
                                                                    "--rank",
                                                                    std::to_string(r),
                                                                    "--group",
                                                                    "gpu",
                                                                    "--rendezvous",
                                                                    tcp(rdv_port),
                                                                    "--max-batch",
                                                                    "4",
                                                                    "--tp-timeout",
                                                                    "30"},
                                           dir / ("rank" + std::to_string(r) + ".log"));
  };
  auto rank1 = rank(1);
  auto rank0 = rank(0);
  child_process gateway(
      {"gateway", "--model", model_path(), "--listen", tcp(gateway_port), "--scheduler", tcp(sched_port)},
      dir / "gateway.log");
  ASSERT_TRUE(gateway.wait_for_log("ready on")) << gateway.log();
  ASSERT_TRUE(scheduler.wait_for_log("registered as replica 1")) << scheduler.log() << rank0->log() << rank1->log();
  EXPECT_TRUE(rank0->wait_for_log("tensor-parallel nccl")) << rank0->log();  // the backend's describe()
  expect_like_generate(run_clients(tcp(gateway_port), 8, 32), 32);
  std::filesystem::remove_all(dir);
}
