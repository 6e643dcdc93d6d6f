// The CUDA backend as one rank of a tensor-parallel group: its shard (src/engine/shard.h, the
// same Megatron splits as the CPU backend) and an NCCL communicator for the two all-reduces
// per layer. The wiring checks run anywhere (they come before the device check); the group
// runs on two GPUs, as threads of this process, against one GPU holding the whole model.
// Tolerance on logits (f32 weights and KV): atol 1e-3, rtol 1e-3 (summation order only).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <thread>

#include "cuda_test_support.h"
#include "identity_comm.h"
#include "kernels/ref/ref.h"
#include "random_model.h"
#include "src/comm/rendezvous.h"
#include "src/engine/cuda/cuda_backend.h"
#include "src/engine/shard.h"
#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {
namespace {

cuda_backend_options f32_opts() {
  cuda_backend_options o;
  o.kv_blocks = 64;
  o.kv_f16 = false;
  o.dense_type = TROUPE_F32;
  o.max_batch_tokens = 64;
  o.max_seqs = 4;
  return o;
}

TEST(CudaTp, AHostCommunicatorOrAMismatchedShardIsRefused) {
  test::random_model m(test::small_config());
  kernel_registry reg;
  const tp::shard s1 = tp::make_shard(m.config(), m.weights(), 1, 2);
  test::identity_comm gloo1(1, 2, "gloo tcp"), gloo0(0, 2, "gloo tcp");  // host memory, as CPU ranks
  cuda_backend_options o = f32_opts();
  o.shard = &s1;
  o.comm = &gloo1;
  try {
    make_cuda_backend(m, reg, o);
    FAIL() << "a Gloo communicator was accepted for device all-reduces";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::failed);
    EXPECT_NE(std::string(e.what()).find("needs an NCCL communicator"), std::string::npos) << e.what();
  }
  o.comm = &gloo0;  // rank 0's communicator with rank 1's shard
  try {
    make_cuda_backend(m, reg, o);
    FAIL() << "a shard of another rank was accepted";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("shard is rank 1 of 2"), std::string::npos) << e.what();
  }
  o.comm = nullptr;
  EXPECT_THROW(make_cuda_backend(m, reg, o), error);
}

seq_work work(uint64_t id, std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> table) {
  seq_work w;
  w.seq_id = id;
  w.tokens = std::move(tokens);
  w.start_pos = start;
  w.block_table = std::move(table);
  w.sample = true;
  return w;
}

// A prefill of two sequences, then greedy decode steps fed with the tokens chosen.
std::vector<step_plan> plans() {
  std::vector<step_plan> out;
  step_plan p;
  p.seqs.push_back(work(1, {3, 9, 27, 17, 51, 25, 11}, 0, {0, 1, 2, 3, 4, 5, 6, 7}));
  p.seqs.push_back(work(2, {5, 6}, 0, {8, 9, 10, 11, 12, 13, 14, 15}));
  out.push_back(p);
  for (int i = 0; i < 12; ++i) {
    step_plan d;
    d.seqs.push_back(work(1, {(int32_t)(i * 7 % 64)}, 7 + i, {0, 1, 2, 3, 4, 5, 6, 7}));
    d.seqs.push_back(work(2, {(int32_t)(i * 5 % 64)}, 2 + i, {8, 9, 10, 11, 12, 13, 14, 15}));
    out.push_back(d);
  }
  return out;
}

TEST(CudaTp, TwoGpuRanksMatchOneGpu) {
  TROUPE_REQUIRE_CUDA();
  int n_dev = 0;
  (void)cudaGetDeviceCount(&n_dev);
  if (n_dev < 2) GTEST_SKIP() << n_dev << " CUDA device(s): the group needs 2";
  test::random_model m(test::small_config());  // 4 heads, 2 KV heads, hidden 48: 2 ways
  kernel_registry reg;
  for (const auto& v : kern::ref::variants()) reg.add(v);
  kern::cuda::register_all(reg);
  const auto ps = plans();

  // the whole model on device 0
  std::vector<std::vector<float>> want;
  std::vector<int32_t> want_tokens;
  {
    cuda_backend one(m, reg, f32_opts());
    for (const auto& p : ps) {
      const step_result r = one.step(p);
      for (size_t j = 0; j < p.seqs.size(); ++j) {
        want.push_back(one.last_logits(j));
        want_tokens.push_back(r.outputs[j].token);
      }
    }
  }

  comm::memory_store store;
  std::vector<std::vector<float>> got;
  std::vector<int32_t> got_tokens;
  std::string failures[2];
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        nccl_options no;
        no.device = r;
        no.prefix = "cuda_tp_test";
        auto nccl = make_nccl_communicator(store, r, 2, no);
        const tp::shard s = tp::make_shard(m.config(), m.weights(), r, 2);
        cuda_backend_options o = f32_opts();
        o.device = r;
        o.shard = &s;
        o.comm = nccl.get();
        cuda_backend rank(m, reg, o);
        EXPECT_NE(rank.describe().find("tensor-parallel nccl"), std::string::npos) << rank.describe();
        for (const auto& p : ps) {
          const step_result res = rank.step(p);
          if (r != 0) continue;
          for (size_t j = 0; j < p.seqs.size(); ++j) {
            got.push_back(rank.last_logits(j));
            got_tokens.push_back(res.outputs[j].token);
          }
        }
      } catch (const std::exception& e) {
        failures[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  ASSERT_EQ(failures[0], "");
  ASSERT_EQ(failures[1], "");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(test::all_close(got[i], want[i], 1e-3f, 1e-3f)) << "sampled row " << i;
  EXPECT_EQ(got_tokens, want_tokens);
}

}  // namespace
}  // namespace troupe
