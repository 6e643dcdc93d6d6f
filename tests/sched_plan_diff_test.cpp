// Plans as diffs (seq_work::diff): a sequence travels in full the first time a replica runs
// it and after anything that leaves that replica's worker without its state (a preemption, a
// swap, a move to another replica), and as a diff otherwise; step_plan::released tells the
// worker what to drop.
#include <gtest/gtest.h>

#include <algorithm>

#include "sched_test_support.h"

namespace troupe::sched::test {
namespace {

replica_info replica(uint32_t id, int64_t blocks, int32_t block_size = 4) {
  replica_info r;
  r.id = id;
  r.kv_blocks = blocks;
  r.block_size = block_size;
  return r;
}

const seq_work* find_work(const planned_step& ps, uint64_t id) {
  for (const auto& w : ps.plan.seqs)
    if (w.seq_id == id) return &w;
  return nullptr;
}

bool released(const planned_step& ps, uint64_t id) {
  return std::count(ps.plan.released.begin(), ps.plan.released.end(), id) == 1;
}

TEST(SchedPlanDiff, ARunningSequenceIsSentInFullOnceThenAsDiffs) {
  policy p(policy_config{});
  p.add_replica(replica(0, 64), 0.0);
  request r = make_request(1, 6, 8);
  r.sampling.repetition_penalty = 1.2f;
  ASSERT_TRUE(p.submit(r, 0.0).accepted);
  fake_worker w;
  auto first = w.step(p, 0, 0.1);
  ASSERT_TRUE(first);
  const seq_work& f = first->plan.seqs.at(0);
  EXPECT_FALSE(f.diff);
  EXPECT_EQ(f.history, r.prompt);
  EXPECT_EQ(f.n_prompt, 6);
  EXPECT_EQ(f.block_table.size(), 2u);  // 6 tokens, blocks of 4
  EXPECT_FLOAT_EQ(f.sampling.repetition_penalty, 1.2f);

  auto second = w.step(p, 0, 0.2);  // decode at position 6: still in the second block
  ASSERT_TRUE(second);
  const seq_work& d = second->plan.seqs.at(0);
  EXPECT_TRUE(d.diff);
  EXPECT_EQ(d.start_pos, 6);
  EXPECT_EQ(d.tokens, std::vector<int32_t>{token_at(1, 6)});  // the new token to feed, nothing else
  EXPECT_TRUE(d.history.empty());
  EXPECT_TRUE(d.block_table.empty());
  EXPECT_EQ(d.sampling.repetition_penalty, sampling_params{}.repetition_penalty);  // the worker's cached one

  w.step(p, 0, 0.3);               // position 7
  auto third = w.step(p, 0, 0.4);  // position 8: a third block
  ASSERT_TRUE(third);
  const seq_work& g = third->plan.seqs.at(0);
  EXPECT_TRUE(g.diff);
  EXPECT_EQ(g.start_pos, 8);
  ASSERT_EQ(g.block_table.size(), 1u);  // only the block appended
  EXPECT_EQ(std::count(f.block_table.begin(), f.block_table.end(), g.block_table[0]), 0);
  while (w.step(p, 0, 1.0)) {
  }
  EXPECT_EQ(w.streamed[1], expected_stream(1, 6, 8));
  EXPECT_EQ(w.caches[0].size(), 1u);  // finished: released with the next plan, if any comes
}

TEST(SchedPlanDiff, AFinishedSequenceIsReleasedWithTheNextPlan) {
  policy p(policy_config{});
  p.add_replica(replica(0, 64), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 4, 1), 0.0).accepted);  // done after its prefill
  fake_worker w;
  ASSERT_TRUE(w.step(p, 0, 0.1));
  EXPECT_EQ(w.finished.count(1), 1u);
  ASSERT_TRUE(p.submit(make_request(2, 4, 2), 0.2).accepted);
  auto next = w.step(p, 0, 0.3);
  ASSERT_TRUE(next);
  EXPECT_TRUE(released(*next, 1));
  EXPECT_FALSE(find_work(*next, 2)->diff);
  EXPECT_EQ(w.caches[0].history(1), nullptr);
}

TEST(SchedPlanDiff, APreemptedSequenceIsReleasedAndResumesInFull) {
  policy_config cfg;
  cfg.kv_watermark = 0;
  cfg.prefix_caching = false;
  policy p(cfg);
  p.add_replica(replica(0, 6), 0.0);  // 24 positions: two sequences of 4 + 10 cannot both finish
  ASSERT_TRUE(p.submit(make_request(1, 4, 10), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 4, 10), 0.1).accepted);
  fake_worker w;
  bool seen_release = false, resumed_full = false, seen_diff = false;
  for (int i = 0; i < 200 && w.finished.size() < 2; ++i) {
    auto ps = w.step(p, 0, 1.0 + 0.01 * i);
    ASSERT_TRUE(ps);
    ASSERT_EQ(p.check_invariants(), "");
    if (released(*ps, 2) && !w.finished.count(2)) seen_release = true;
    const seq_work* two = find_work(*ps, 2);
    if (!two) continue;
    if (seen_release && !resumed_full) {
      EXPECT_FALSE(two->diff) << "the first work after a preemption carries everything";
      EXPECT_EQ(two->start_pos, 0);  // recomputed from its prompt and generated tokens
      EXPECT_GT(two->history.size(), 4u);
      resumed_full = true;
    } else if (two->start_pos > 0 && !seen_release) {
      seen_diff = seen_diff || two->diff;
    }
  }
  EXPECT_TRUE(seen_diff);
  EXPECT_TRUE(seen_release);
  EXPECT_TRUE(resumed_full);
  EXPECT_EQ(p.stats(0)->preemptions, 1u);
  for (uint64_t id = 1; id <= 2; ++id) EXPECT_EQ(w.streamed[id], expected_stream(id, 4, 10));
}

TEST(SchedPlanDiff, ASequenceMovedToAnotherReplicaArrivesInFull) {
  policy p(policy_config{});
  p.add_replica(replica(0, 64), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 5, 12), 0.0).accepted);
  fake_worker w;
  for (int i = 0; i < 4; ++i) w.step(p, 0, 0.1 * (i + 1));
  ASSERT_EQ(w.streamed[1].size(), 4u);
  p.add_replica(replica(1, 64), 1.0);
  p.remove_replica(0, 1.0);  // its worker failed: nobody left to tell
  auto moved = w.step(p, 1, 1.1);
  ASSERT_TRUE(moved);
  const seq_work& m = moved->plan.seqs.at(0);
  EXPECT_FALSE(m.diff);
  EXPECT_TRUE(moved->plan.released.empty());
  EXPECT_EQ(m.start_pos, 0);
  EXPECT_EQ(m.history.size(), 5u + 4u);
  auto next = w.step(p, 1, 1.2);
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->plan.seqs.at(0).diff);
  while (w.step(p, 1, 2.0)) {
  }
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 12));
}

TEST(SchedPlanDiff, AReplicaWithoutDiffsGetsEveryWorkInFull) {
  policy p(policy_config{});
  replica_info r = replica(0, 64);
  r.plan_diffs = false;  // a worker from before plans as diffs
  p.add_replica(r, 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 5, 6), 0.0).accepted);
  fake_worker w;
  int steps = 0;
  while (auto ps = w.step(p, 0, 0.1 * ++steps)) {
    EXPECT_FALSE(ps->plan.seqs.at(0).diff);
    EXPECT_TRUE(ps->plan.released.empty());
    EXPECT_EQ(ps->plan.seqs.at(0).history.size(), 5u + (steps - 1));
  }
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 6));
}

}  // namespace
}  // namespace troupe::sched::test
