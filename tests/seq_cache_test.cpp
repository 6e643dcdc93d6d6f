// The worker's side of plans as diffs, on the CPU backend and the shared stories260K model:
// a run whose plans carry diffs (expanded by worker_core's seq_cache) streams exactly the
// tokens of the same run with every sequence sent in full, with penalties and seeded draws
// that read the history, preemptions (resumed in full) and async scheduling. Every plan
// crosses the codec, as it does between scheduler and worker.
#include <gtest/gtest.h>

#include <deque>
#include <map>

#include "kernels/ref/ref.h"
#include "src/cluster/codec.h"
#include "src/engine/cpu_backend.h"
#include "src/sched/policy.h"
#include "src/cluster/worker_core.h"
#include "test_support.h"
#include "troupe/error.h"

namespace troupe {
namespace {

struct run_stats {
  std::map<uint64_t, std::vector<int32_t>> streamed;
  int64_t diffs = 0, released = 0, preemptions = 0;
};

class SeqCache : public ::testing::Test {
 protected:
  void SetUp() override {
    TROUPE_REQUIRE_MODELS();
    model_ = open_model((test::models_dir() / "stories260K" / "stories260K.gguf").string());
    for (const auto& v : kern::ref::variants()) registry_.add(v);
  }

  // Four requests on one replica whose KV pool holds `kv_blocks` blocks of 4.
  run_stats run(bool diffs, int32_t inflight, int64_t kv_blocks) {
    cpu_backend_options o;
    o.block_size = 4;
    o.kv_bytes = 4 << 20;
    auto backend = std::make_unique<cpu_backend>(*model_, registry_, o);
    const int64_t blocks = std::min<int64_t>(kv_blocks, backend->kv_blocks());
    worker_core worker(std::move(backend), {"test", "stories260K", 8});
    sched::policy_config cfg;
    cfg.max_step_tokens = 24;  // prompts go in chunks
    cfg.max_inflight_steps = inflight;
    cfg.kv_watermark = 0;
    cfg.prefix_caching = false;
    sched::policy p(cfg);
    sched::replica_info ri;
    ri.kv_blocks = blocks;
    ri.block_size = 4;
    ri.max_batch = 8;
    ri.plan_diffs = diffs;
    p.add_replica(ri, 0.0);
    for (uint64_t id = 1; id <= 4; ++id) {
      sched::request r;
      r.id = id;
      for (int32_t i = 0; i < 10 + 7 * static_cast<int32_t>(id); ++i)
        r.prompt.push_back(1 + static_cast<int32_t>((id * 37 + i * 11) % 500));
      r.sampling.max_tokens = 20;
      r.sampling.ignore_eos = true;
      if (id == 1) r.sampling.repetition_penalty = 1.3f;
      if (id == 2) r.sampling.temperature = 0.8f, r.sampling.seed = 7;  // the draw hashes tokens generated
      if (id == 3) r.sampling.frequency_penalty = 0.7f;
      EXPECT_TRUE(p.submit(r, 0.0).accepted);
    }
    run_stats st;
    std::deque<step_plan> in_flight;
    double now = 0;
    for (int i = 0; i < 2000; ++i) {
      while (static_cast<int32_t>(in_flight.size()) < inflight) {
        auto ps = p.schedule(0, now);
        if (!ps) break;
        auto msg = codec::decode_control(codec::encode(proto::control_message{ps->plan}));
        in_flight.push_back(std::get<step_plan>(msg));
      }
      if (in_flight.empty()) break;
      step_plan plan = std::move(in_flight.front());
      in_flight.pop_front();
      for (const seq_work& w : plan.seqs) st.diffs += w.diff;
      st.released += static_cast<int64_t>(plan.released.size());
      proto::step_outcome out = worker.step(plan);
      EXPECT_EQ(out.error, "");
      if (!out.error.empty()) break;
      now += 0.01;
      for (const auto& e : p.on_result(0, out.result, now))
        for (const auto& t : e.tokens) st.streamed[e.id].push_back(t.id);
    }
    EXPECT_EQ(p.running() + p.queued(), 0u);
    st.preemptions = static_cast<int64_t>(p.stats(0)->preemptions);
    return st;
  }

  std::unique_ptr<model_file> model_;
  kernel_registry registry_;
};

TEST_F(SeqCache, DiffPlansStreamTheTokensOfFullPlans) {
  for (int32_t inflight : {1, 2}) {
    SCOPED_TRACE("max_inflight_steps " + std::to_string(inflight));
    const run_stats full = run(false, inflight, 1 << 20);
    const run_stats diff = run(true, inflight, 1 << 20);
    EXPECT_EQ(full.diffs, 0);
    EXPECT_GT(diff.diffs, 60);
    ASSERT_EQ(full.streamed.size(), 4u);
    for (const auto& [id, tokens] : full.streamed) EXPECT_EQ(tokens.size(), 20u) << "request " << id;
    EXPECT_EQ(diff.streamed, full.streamed);
  }
}

TEST_F(SeqCache, DiffPlansSurvivePreemption) {
  // 20 blocks of 4 = 80 positions for four sequences of 37..58 positions each.
  for (int32_t inflight : {1, 2}) {
    SCOPED_TRACE("max_inflight_steps " + std::to_string(inflight));
    const run_stats full = run(false, inflight, 20);
    const run_stats diff = run(true, inflight, 20);
    EXPECT_GT(diff.preemptions, 0);
    EXPECT_GT(diff.released, 0);
    EXPECT_EQ(diff.streamed, full.streamed);
  }
}

TEST(SeqCacheUnit, ADiffOfAnUnknownSequenceFailsAndEmptiesTheCache) {
  fixed_token_backend b(5);
  seq_cache cache;
  step_plan full;
  full.step_id = 1;
  full.seqs.resize(1);
  full.seqs[0].seq_id = 3;
  full.seqs[0].tokens = {1, 2};
  full.seqs[0].block_table = {0};
  full.seqs[0].history = {1, 2};
  full.seqs[0].n_prompt = 2;
  EXPECT_EQ(cache.step(b, full).outputs.at(0).token, 5);
  EXPECT_EQ(*cache.history(3), (std::vector<int32_t>{1, 2, 5}));  // extended by what it sampled
  step_plan diff;
  diff.step_id = 2;
  diff.seqs.resize(1);
  diff.seqs[0].seq_id = 3;
  diff.seqs[0].tokens = {5};
  diff.seqs[0].start_pos = 2;
  diff.seqs[0].diff = true;
  cache.step(b, diff);
  EXPECT_EQ(*cache.history(3), (std::vector<int32_t>{1, 2, 5, 5}));
  diff.step_id = 3;
  diff.seqs[0].seq_id = 4;
  EXPECT_THROW(cache.step(b, diff), error);
  EXPECT_EQ(cache.size(), 0u);
  step_plan release;
  release.step_id = 4;
  release.released = {3};
  cache.step(b, full);
  cache.step(b, release);
  EXPECT_EQ(cache.history(3), nullptr);
}

}  // namespace
}  // namespace troupe
