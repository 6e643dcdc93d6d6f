// Async scheduling (policy_config::max_inflight_steps = 2) on literal timestamps: the next
// step is planned while one is in flight, its decodes feed placeholders, and the results
// of work planned past a finish, a cancel or a preemption are dropped. The worker's side
// (step_resolver) is tested at the end.
#include <gtest/gtest.h>

#include <deque>

#include "src/sched/policy.h"
#include "src/cluster/step_resolver.h"
#include "tests/sched_test_support.h"
#include "troupe/error.h"

namespace troupe::sched::test {
namespace {

replica_info replica(uint32_t id, int64_t blocks, int32_t block_size = 16) {
  replica_info r;
  r.id = id;
  r.kv_blocks = blocks;
  r.block_size = block_size;
  return r;
}

policy_config async_config() {
  policy_config cfg;
  cfg.max_inflight_steps = 2;
  cfg.kv_watermark = 0;
  return cfg;
}

const seq_work* find_work(const planned_step& ps, uint64_t id) {
  for (const auto& w : ps.plan.seqs)
    if (w.seq_id == id) return &w;
  return nullptr;
}

TEST(SchedAsync, NextStepIsPlannedWhileOneIsInFlight) {
  policy p(async_config());
  replica_info full = replica(0, 64);
  full.plan_diffs = false;  // every plan carries the history the scheduler knows
  p.add_replica(full, 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 5, 10), 0.0).accepted);
  fake_worker w;
  auto a = p.schedule(0, 0.1);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->plan.seqs.at(0).feed_last_sampled);  // the prompt: real tokens
  auto b = p.schedule(0, 0.1);                         // a is still in flight
  ASSERT_TRUE(b);
  const seq_work& d = b->plan.seqs.at(0);
  EXPECT_TRUE(d.feed_last_sampled);
  EXPECT_EQ(d.tokens, std::vector<int32_t>{-1});
  EXPECT_EQ(d.start_pos, 5);
  EXPECT_TRUE(d.sample);
  EXPECT_EQ(d.history.size(), 5u);  // the scheduler does not know the pending token yet
  EXPECT_EQ(p.check_invariants(), "");
  EXPECT_FALSE(p.schedule(0, 0.1));  // two in flight: the limit
  w.record(p.on_result(0, w.run(*a), 0.2));
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 1));
  auto c = p.schedule(0, 0.2);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->plan.seqs.at(0).feed_last_sampled);
  EXPECT_EQ(c->plan.seqs.at(0).start_pos, 6);
  EXPECT_EQ(c->plan.seqs.at(0).history.size(), 6u);
  // Results must come in plan order.
  step_result early;
  early.step_id = c->plan.step_id;
  early.outputs = {{1, 99, 0.0f, {}}};
  EXPECT_THROW(p.on_result(0, early, 0.3), error);
  w.record(p.on_result(0, w.run(*b), 0.3));
  w.record(p.on_result(0, w.run(*c), 0.4));
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 3));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedAsync, FinishWhileTheNextStepIsInFlightDropsItsToken) {
  policy p(async_config());
  p.add_replica(replica(0, 64), 0.0);
  request r = make_request(1, 5, 10);
  r.sampling.stop_ids = {token_at(1, 6)};  // the second generated token stops it
  ASSERT_TRUE(p.submit(r, 0.0).accepted);
  fake_worker w;
  auto a = p.schedule(0, 0.1);
  auto b = p.schedule(0, 0.1);
  ASSERT_TRUE(a && b);
  w.record(p.on_result(0, w.run(*a), 0.2));
  auto c = p.schedule(0, 0.2);  // planned before b's result says stop
  ASSERT_TRUE(c);
  ASSERT_TRUE(find_work(*c, 1));
  w.record(p.on_result(0, w.run(*b), 0.3));
  EXPECT_EQ(w.finished[1], finish_reason::stop);
  EXPECT_EQ(p.stats(0)->used_blocks, 0);  // freed at once, with c still in flight
  EXPECT_EQ(p.check_invariants(), "");
  EXPECT_TRUE(p.on_result(0, w.run(*c), 0.4).empty());  // c's token never reaches the client
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 2));
  EXPECT_FALSE(p.schedule(0, 0.5));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedAsync, CancelInFlightFreesBlocksAndDropsBothResults) {
  policy p(async_config());
  p.add_replica(replica(0, 64), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 20, 10), 0.0).accepted);
  fake_worker w;
  auto a = p.schedule(0, 0.1);
  auto b = p.schedule(0, 0.1);
  ASSERT_TRUE(a && b);
  EXPECT_GT(p.stats(0)->used_blocks, 0);
  p.cancel(1, 0.15);
  auto evs = p.take_events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].finished, finish_reason::cancelled);
  EXPECT_EQ(p.stats(0)->used_blocks, 0);
  EXPECT_EQ(p.check_invariants(), "");
  EXPECT_TRUE(p.on_result(0, w.run(*a), 0.2).empty());
  EXPECT_TRUE(p.on_result(0, w.run(*b), 0.3).empty());
  EXPECT_FALSE(p.schedule(0, 0.4));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedAsync, NeverPlansPastMaxTokensCountingPendingTokens) {
  policy p(async_config());
  p.add_replica(replica(0, 64), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 5, 2), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 5, 1), 0.0).accepted);
  fake_worker w;
  auto a = p.schedule(0, 0.1);  // both prompts: each samples its first token
  ASSERT_TRUE(a);
  ASSERT_EQ(a->plan.seqs.size(), 2u);
  auto b = p.schedule(0, 0.1);  // only request 1 may sample a second token
  ASSERT_TRUE(b);
  ASSERT_EQ(b->plan.seqs.size(), 1u);
  EXPECT_EQ(b->plan.seqs[0].seq_id, 1u);
  w.record(p.on_result(0, w.run(*a), 0.2));
  EXPECT_EQ(w.finished[2], finish_reason::length);
  EXPECT_FALSE(p.schedule(0, 0.2));  // request 1: one token seen, one in flight, max 2
  w.record(p.on_result(0, w.run(*b), 0.3));
  EXPECT_EQ(w.finished[1], finish_reason::length);
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 2));
  EXPECT_EQ(w.streamed[2], expected_stream(2, 5, 1));
  EXPECT_EQ(p.stats(0)->used_blocks, 0);
}

TEST(SchedAsync, PreemptedWithWorkInFlightResumesFromReportedTokens) {
  // 4 blocks of 4 tokens. Two requests of 4 + 8 tokens (3 blocks each) cannot both run to
  // the end: when request 1 needs its third block, request 2 (the later arrival) goes,
  // with its own decode still in flight.
  policy p(async_config());
  p.add_replica(replica(0, 4, 4), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 4, 8), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 4, 8), 0.01).accepted);
  fake_worker w;
  std::deque<planned_step> in_flight;
  bool preempted_in_flight = false, awaiting_resume = false, resumed = false;
  double t = 0.1;
  for (int i = 0; i < 100 && w.finished.size() < 2; ++i, t += 0.01) {
    while (true) {
      const uint64_t preemptions = p.stats(0)->preemptions;
      auto ps = p.schedule(0, t);
      if (!ps) break;
      const seq_work* r2 = find_work(*ps, 2);
      if (awaiting_resume && r2) {
        // Its first plan after the preemption: prompt + what the client saw, no placeholder.
        resumed = true;
        awaiting_resume = false;
        EXPECT_FALSE(r2->feed_last_sampled);
        std::vector<int32_t> want = make_request(2, 4, 8).prompt;
        want.insert(want.end(), w.streamed[2].begin(), w.streamed[2].end());
        EXPECT_EQ(r2->history, want);
        EXPECT_EQ(r2->tokens, std::vector<int32_t>(want.begin() + r2->start_pos, want.end()));
      }
      if (p.stats(0)->preemptions > preemptions) {
        EXPECT_FALSE(r2);  // request 2 was the victim
        for (const auto& f : in_flight) preempted_in_flight = preempted_in_flight || find_work(f, 2);
        awaiting_resume = true;
      }
      in_flight.push_back(std::move(*ps));
      ASSERT_EQ(p.check_invariants(), "");
    }
    ASSERT_FALSE(in_flight.empty());
    w.record(p.on_result(0, w.run(in_flight.front()), t));
    in_flight.pop_front();
    w.record(p.take_events());
    ASSERT_EQ(p.check_invariants(), "");
  }
  EXPECT_TRUE(preempted_in_flight);
  EXPECT_TRUE(resumed);
  EXPECT_EQ(w.streamed[1], expected_stream(1, 4, 8));  // nothing twice, nothing missing
  EXPECT_EQ(w.streamed[2], expected_stream(2, 4, 8));
  EXPECT_EQ(p.stats(0)->used_blocks, 0);
}

TEST(SchedAsync, ResumeOnAnotherReplicaGetsRealTokens) {
  policy p(async_config());
  p.add_replica(replica(0, 64), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 5, 10), 0.0).accepted);
  fake_worker w;
  auto a = p.schedule(0, 0.1);
  auto b = p.schedule(0, 0.1);
  ASSERT_TRUE(a && b);
  w.record(p.on_result(0, w.run(*a), 0.2));
  auto c = p.schedule(0, 0.2);
  ASSERT_TRUE(c);
  p.add_replica(replica(1, 64), 0.25);
  p.remove_replica(0, 0.3);  // b and c were in flight there
  EXPECT_EQ(p.check_invariants(), "");
  auto d = p.schedule(1, 0.4);
  ASSERT_TRUE(d);
  const seq_work& r = d->plan.seqs.at(0);
  EXPECT_FALSE(r.feed_last_sampled);
  EXPECT_EQ(r.start_pos, 0);
  std::vector<int32_t> want = make_request(1, 5, 10).prompt;
  want.push_back(token_at(1, 5));  // the one token reported before the loss
  EXPECT_EQ(r.tokens, want);
  EXPECT_TRUE(p.on_result(0, w.run(*b), 0.45).empty());  // the lost replica: ignored
  auto e = p.schedule(1, 0.5);                           // the decode after the re-prefill: a placeholder again
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->plan.seqs.at(0).feed_last_sampled);
  w.record(p.on_result(1, w.run(*d), 0.6));
  w.record(p.on_result(1, w.run(*e), 0.7));
  EXPECT_EQ(w.streamed[1], expected_stream(1, 5, 3));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedAsync, MaxInflightStepsBelowOneIsRejected) {
  policy_config cfg;
  cfg.max_inflight_steps = 0;
  try {
    policy p(cfg);
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_EQ(e.field(), "max_inflight_steps");
  }
}

// ---- the worker's side ----------------------------------------------------------------------

TEST(StepResolver, FeedsTheTokenSampledInThePreviousStepOnly) {
  step_resolver r;
  step_plan p1;
  p1.step_id = 1;
  p1.seqs.resize(1);
  p1.seqs[0].seq_id = 7;
  p1.seqs[0].tokens = {5};
  r.resolve(p1);  // no placeholder: nothing to do, nothing remembered is needed
  EXPECT_EQ(p1.seqs[0].tokens, std::vector<int32_t>{5});
  step_result r1;
  r1.outputs = {{7, 42, 0.0f, {}}, {8, -1, 0.0f, {}}};  // seq 8 did not sample
  r.remember(r1);

  step_plan p2;
  p2.step_id = 2;
  seq_work w;
  w.seq_id = 7;
  w.tokens = {-1};
  w.start_pos = 3;
  w.history = {1, 2, 3};
  w.feed_last_sampled = true;
  p2.seqs = {w};
  ASSERT_TRUE(p2.seqs[0].feed_last_sampled);
  r.resolve(p2);
  EXPECT_EQ(p2.seqs[0].tokens, std::vector<int32_t>{42});
  EXPECT_EQ(p2.seqs[0].history, (std::vector<int32_t>{1, 2, 3, 42}));
  EXPECT_FALSE(p2.seqs[0].feed_last_sampled);

  step_plan p3 = p2;
  p3.seqs[0] = w;
  p3.seqs[0].seq_id = 8;  // sampled nothing last step
  EXPECT_THROW(r.resolve(p3), error);
  r.remember({});  // a step without seq 7: forgotten
  p3.seqs[0].seq_id = 7;
  EXPECT_THROW(r.resolve(p3), error);
}

}  // namespace
}  // namespace troupe::sched::test
