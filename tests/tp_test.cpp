// Tensor parallelism on the CPU over Gloo:
//  - in process (one thread per rank, real TCP): every step's logits of tp = 2 and 4 equal
//    tp = 1's within 1e-4 (the all-reduce sums partial products in another order);
//  - real processes (`troupe generate --tp-size N`, one process per rank): greedy ids
//    identical to tp = 1 on the shared models and on a synth model whose 2 KV heads are
//    replicated over 4 ranks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ref/ref.h"
#include "src/comm/rendezvous.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/shard.h"
#include "temp_dir.h"
#include "test_support.h"
#include "troupe/communicator.h"
#include "troupe/kernel_registry.h"

namespace {

using logits_per_step = std::vector<std::vector<float>>;

// Greedy decoding of `prompt` for n_gen tokens on one rank; returns rank's logits per step.
logits_per_step run_rank(const troupe::model_file& m, const troupe::kernel_registry& reg, troupe::communicator* comm,
                         const troupe::tp::shard* shard, const std::vector<int32_t>& prompt, int n_gen) {
  troupe::kern::cpu::thread_pool pool(1);
  const troupe_kctx kctx = troupe::kern::cpu::make_kctx(pool);
  troupe::cpu_backend_options opt;
  opt.kctx = &kctx;
  opt.kv_bytes = 8 << 20;
  opt.shard = shard;
  opt.comm = comm;
  troupe::cpu_backend backend(m, reg, opt);
  logits_per_step out;
  troupe::seq_work w;
  w.seq_id = 7;
  w.tokens = prompt;
  for (int b = 0; b < 16; ++b) w.block_table.push_back(b);
  for (int g = 0; g < n_gen; ++g) {
    troupe::step_plan plan;
    plan.seqs.push_back(w);
    auto res = backend.step(plan);
    auto l = backend.last_logits(0);
    out.emplace_back(l.begin(), l.end());
    w.start_pos += (int32_t)w.tokens.size();
    w.tokens = {res.outputs[0].token};
  }
  return out;
}

void fill_registry(troupe::kernel_registry& reg) {
  for (const auto& v : troupe::kern::ref::variants()) reg.add(v);
  troupe::kern::cpu::register_all(reg);
}

std::vector<int32_t> greedy_ids(const std::string& json_line) {
  return nlohmann::json::parse(json_line).at("ids").get<std::vector<int32_t>>();
}

// Runs `troupe generate --json` as `size` processes; returns rank 0's generated ids.
std::vector<int32_t> generate_tp(const std::string& model, int size, int port) {
  const std::string base = troupe::test::troupe_bin() + " --log-level error generate --model " + model +
                           " --prompt 'Once upon a time' --max-tokens 24 --json --threads 1 --kv-mb 16 --tp-size " +
                           std::to_string(size) + " --rendezvous tcp://127.0.0.1:" + std::to_string(port);
  std::vector<std::future<troupe::test::run_output>> others;
  for (int r = 1; r < size; ++r)
    others.push_back(std::async(
        std::launch::async, [&, r] { return troupe::test::run_command(base + " --tp-rank " + std::to_string(r)); }));
  auto r0 = troupe::test::run_command(base + " --tp-rank 0");
  for (auto& f : others) EXPECT_EQ(f.get().exit_code, 0);
  EXPECT_EQ(r0.exit_code, 0) << r0.out;
  return r0.exit_code == 0 ? greedy_ids(r0.out) : std::vector<int32_t>{};
}

int free_port_base() { return 29000 + (getpid() % 500) * 4; }

}  // namespace

TEST(TensorParallel, LogitsMatchSingleRankWithinTolerance) {
  TROUPE_REQUIRE_MODELS();
  auto m = troupe::open_model((troupe::test::models_dir() / "stories260K/stories260K.gguf").string());
  troupe::kernel_registry reg;
  fill_registry(reg);
  const std::vector<int32_t> prompt{1, 403, 407, 261, 378};
  const auto single = run_rank(*m, reg, nullptr, nullptr, prompt, 12);
  for (int size : {2, 4}) {
    troupe::comm::memory_store store;
    std::vector<std::future<logits_per_step>> ranks;
    for (int r = 0; r < size; ++r)
      ranks.push_back(std::async(std::launch::async, [&, r] {
        troupe::gloo_options go;
        go.prefix = "logits" + std::to_string(size);
        auto comm = troupe::make_gloo_communicator(store, r, size, go);
        auto shard = troupe::tp::make_shard(m->config(), m->weights(), r, size);
        return run_rank(*m, reg, comm.get(), &shard, prompt, 12);
      }));
    std::vector<logits_per_step> got;
    for (auto& f : ranks) got.push_back(f.get());
    float worst = 0;
    for (size_t step = 0; step < single.size(); ++step)
      for (size_t i = 0; i < single[step].size(); ++i) {
        for (int r = 0; r < size; ++r) ASSERT_EQ(got[r][step][i], got[0][step][i]) << "ranks disagree";
        worst = std::max(worst, std::fabs(got[0][step][i] - single[step][i]));
      }
    EXPECT_LE(worst, 1e-4f) << "tp " << size;
    std::printf("tp %d: worst |logit - single| = %g over %zu steps\n", size, worst, single.size());
  }
}

TEST(TensorParallel, ProcessesGiveSingleRankGreedyIds) {
  TROUPE_REQUIRE_MODELS();
  troupe::test::temp_dir tmp;
  // A synth model with 2 KV heads: over 4 ranks each KV head is replicated twice.
  const std::string synth = (tmp.path / "tiny.gguf").string();
  ASSERT_EQ(troupe::test::run_command(troupe::test::troupe_bin() + " model synth --preset tiny --dtype f32 --out " +
                                      synth + " 2>/dev/null")
                .exit_code,
            0);
  const std::vector<std::string> models = {
      (troupe::test::models_dir() / "stories260K/stories260K.gguf").string(),
      (troupe::test::models_dir() / "tinystories-656K").string(),
      synth,
  };
  int port = free_port_base();
  for (const auto& model : models) {
    const auto single = generate_tp(model, 1, port++);
    ASSERT_EQ(single.size(), 24u) << model;
    for (int size : {2, 4}) EXPECT_EQ(generate_tp(model, size, port++), single) << model << " tp " << size;
  }
}

// A GPU rank of a group: `troupe worker --backend cuda --tp-size N` needs a usable device
// (and NCCL); where there is none it fails at once, saying why, before joining any group.
TEST(TensorParallel, CudaWorkerRankSaysWhyItCannotStart) {
  TROUPE_REQUIRE_MODELS();
  const auto r = troupe::test::run_command("timeout 60 " + troupe::test::troupe_bin() +
                                           " worker --backend cuda --tp-size 2 --rank 0 --tp-timeout 1" +
                                           " --rendezvous tcp://127.0.0.1:1 --scheduler tcp://127.0.0.1:1 --model " +
                                           (troupe::test::models_dir() / "stories260K/stories260K.gguf").string());
  EXPECT_NE(r.exit_code, 0) << r.out;
  if (r.out.find("joining tensor-parallel group") == std::string::npos) {         // no GPU, or no CUDA build
    const bool says_why = r.out.find("cuda backend: ") != std::string::npos ||    // no usable device
                          r.out.find("built without CUDA") != std::string::npos;  // a CPU-only build
    EXPECT_TRUE(says_why) << r.out;
  }
}
