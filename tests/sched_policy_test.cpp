// The scheduling policy, driven by a fake worker with literal timestamps: batching,
// chunked prefill, admission errors, finishing, cancellation, preemption, replica loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "src/sched/policy.h"
#include "tests/sched_test_support.h"

namespace troupe::sched::test {
namespace {

replica_info replica(uint32_t id, int64_t blocks, int32_t block_size = 16, int32_t max_batch = 64) {
  replica_info r;
  r.id = id;
  r.kv_blocks = blocks;
  r.block_size = block_size;
  r.max_batch = max_batch;
  return r;
}

int32_t plan_tokens(const planned_step& ps) {
  int32_t n = 0;
  for (const auto& w : ps.plan.seqs) n += static_cast<int32_t>(w.tokens.size());
  return n;
}

const seq_work* find_work(const planned_step& ps, uint64_t id) {
  for (const auto& w : ps.plan.seqs)
    if (w.seq_id == id) return &w;
  return nullptr;
}

// ---- batching -------------------------------------------------------------------------------

TEST(SchedPolicy, AdmitsInArrivalOrder) {
  policy p({});
  p.add_replica(replica(0, 100, 16, 1), 0.0);
  for (uint64_t id = 1; id <= 4; ++id) ASSERT_TRUE(p.submit(make_request(id, 5, 3), 0.5 * id).accepted);
  fake_worker w;
  std::vector<uint64_t> first_seen;
  for (int i = 0; i < 40; ++i) {
    auto ps = w.step(p, 0, 3.0 + i);
    if (!ps) break;
    for (const auto& s : ps->plan.seqs)
      if (std::find(first_seen.begin(), first_seen.end(), s.seq_id) == first_seen.end()) first_seen.push_back(s.seq_id);
  }
  EXPECT_EQ(first_seen, (std::vector<uint64_t>{1, 2, 3, 4}));
  for (uint64_t id = 1; id <= 4; ++id) EXPECT_EQ(w.streamed[id], expected_stream(id, 5, 3));
  EXPECT_EQ(p.running() + p.queued(), 0u);
}

TEST(SchedPolicy, RespectsTokenBudgetAndBatch) {
  policy_config cfg;
  cfg.max_step_tokens = 48;
  policy p(cfg);
  p.add_replica(replica(0, 400, 16, 6), 0.0);
  for (uint64_t id = 1; id <= 20; ++id) ASSERT_TRUE(p.submit(make_request(id, 10 + 7 * id, 12), 0.0).accepted);
  fake_worker w;
  int steps = 0;
  while (auto ps = w.step(p, 0, 1.0 + steps)) {
    EXPECT_LE(plan_tokens(*ps), 48);
    EXPECT_LE(ps->plan.seqs.size(), 6u);
    ASSERT_EQ(p.check_invariants(), "");
    ASSERT_LT(++steps, 1000);
  }
  EXPECT_EQ(w.finished.size(), 20u);
}

TEST(SchedPolicy, ChunkedPrefillKeepsDecodesRunning) {
  policy_config cfg;
  cfg.max_step_tokens = 64;
  policy p(cfg);
  p.add_replica(replica(0, 200), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 8, 100), 0.0).accepted);
  fake_worker w;
  w.step(p, 0, 0.1);  // prefill of request 1
  ASSERT_TRUE(p.submit(make_request(2, 1000, 4), 0.2).accepted);
  int32_t prev_end = 0, chunks = 0;
  std::vector<int32_t> table_2;  // request 2's table as its worker holds it
  for (int i = 0; i < 30 && !w.streamed.count(2); ++i) {
    auto ps = w.step(p, 0, 0.3 + 0.1 * i);
    ASSERT_TRUE(ps);
    EXPECT_LE(plan_tokens(*ps), 64);
    ASSERT_TRUE(find_work(*ps, 1)) << "the running decode skipped a step";
    EXPECT_EQ(find_work(*ps, 1)->tokens.size(), 1u);
    const seq_work* b = find_work(*ps, 2);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->start_pos, prev_end);  // chunks follow one another
    prev_end = b->start_pos + static_cast<int32_t>(b->tokens.size());
    EXPECT_EQ(b->sample, prev_end == 1000);
    EXPECT_EQ(b->diff, chunks > 0);  // the first chunk in full, later ones as diffs
    follow_table(table_2, *b);
    EXPECT_EQ(table_2.size(), static_cast<size_t>((prev_end + 15) / 16));
    ++chunks;
  }
  EXPECT_EQ(prev_end, 1000);
  EXPECT_EQ(chunks, (1000 + 62) / 63);  // 63 tokens a step next to the decode
}

TEST(SchedPolicy, WithoutChunkingAPromptIsPrefilledWhole) {
  policy_config cfg;
  cfg.max_step_tokens = 1024;
  cfg.chunked_prefill = false;
  policy p(cfg);
  p.add_replica(replica(0, 200), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 8, 100), 0.0).accepted);
  fake_worker w;
  w.step(p, 0, 0.1);
  ASSERT_TRUE(p.submit(make_request(2, 1000, 4), 0.2).accepted);
  auto ps = w.step(p, 0, 0.3);
  ASSERT_TRUE(ps);
  const seq_work* b = find_work(*ps, 2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->tokens.size(), 1000u);
  EXPECT_TRUE(b->sample);
  EXPECT_EQ(plan_tokens(*ps), 1001);  // the decode waited for the whole prompt
  // A prompt that can never be prefilled in one step is refused at the door.
  auto a = p.submit(make_request(3, 1025, 4), 0.4);
  EXPECT_FALSE(a.accepted);
  EXPECT_EQ(a.error.field, "prompt");
}

// ---- admission ------------------------------------------------------------------------------

TEST(SchedPolicy, RejectsWhatCanNeverRunNamingTheField) {
  policy_config cfg;
  cfg.max_queued = 2;
  cfg.max_context = 2000;
  policy p(cfg);
  p.add_replica(replica(0, 64, 16), 0.0);  // 1024 tokens
  auto a = p.submit(make_request(1, 1000, 100), 0.0);
  EXPECT_FALSE(a.accepted);
  EXPECT_EQ(a.error.kind, error_kind::failed);
  EXPECT_EQ(a.error.field, "max_tokens");
  a = p.submit(make_request(2, 1500, 100), 0.0);
  EXPECT_EQ(a.error.field, "prompt");
  a = p.submit(make_request(3, 10, 3000), 0.0);
  EXPECT_EQ(a.error.field, "max_tokens");
  EXPECT_NE(a.error.message.find("max_context"), std::string::npos);
  request r = make_request(4, 0, 10);
  EXPECT_EQ(p.submit(r, 0.0).error.field, "prompt");
  r = make_request(5, 10, 10);
  r.sampling.temperature = -1;
  EXPECT_EQ(p.submit(r, 0.0).error.field, "temperature");
  ASSERT_TRUE(p.submit(make_request(6, 10, 10), 0.0).accepted);
  EXPECT_EQ(p.submit(make_request(6, 10, 10), 0.0).error.field, "id");
  ASSERT_TRUE(p.submit(make_request(7, 10, 10), 0.0).accepted);
  a = p.submit(make_request(8, 10, 10), 0.0);
  EXPECT_EQ(a.error.kind, error_kind::overloaded);
  EXPECT_EQ(a.error.field, "queue");
}

TEST(SchedPolicy, BadConfigAndReplicaThrowNamingTheField) {
  policy_config cfg;
  cfg.max_step_tokens = 0;
  try {
    policy p(cfg);
    FAIL();
  } catch (const error& e) {
    EXPECT_EQ(e.field(), "max_step_tokens");
  }
  policy p({});
  EXPECT_THROW(p.add_replica(replica(0, 0), 0.0), error);
  p.add_replica(replica(0, 10), 0.0);
  EXPECT_THROW(p.add_replica(replica(0, 10), 0.0), error);
}

// ---- finishing ------------------------------------------------------------------------------

TEST(SchedPolicy, FinishesOnEosStopIdsAndLength) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  request eos = make_request(1, 4, 50);
  eos.eos_ids = {token_at(1, 4 + 2)};  // the third generated token
  request ignored = make_request(2, 4, 5);
  ignored.eos_ids = {token_at(2, 4 + 1)};
  ignored.sampling.ignore_eos = true;
  request stop = make_request(3, 4, 50);
  stop.sampling.stop_ids = {token_at(3, 4 + 3)};
  ASSERT_TRUE(p.submit(eos, 0.0).accepted);
  ASSERT_TRUE(p.submit(ignored, 0.0).accepted);
  ASSERT_TRUE(p.submit(stop, 0.0).accepted);
  fake_worker w;
  for (int i = 0; i < 20; ++i) w.step(p, 0, 0.1 * (i + 1));
  EXPECT_EQ(w.finished[1], finish_reason::stop);
  EXPECT_EQ(w.streamed[1], expected_stream(1, 4, 3));  // the EOS token is reported
  EXPECT_EQ(w.finished[2], finish_reason::length);
  EXPECT_EQ(w.streamed[2], expected_stream(2, 4, 5));
  EXPECT_EQ(w.finished[3], finish_reason::stop);
  EXPECT_EQ(w.streamed[3].size(), 4u);
  EXPECT_EQ(p.stats(0)->used_blocks, 0);
}

TEST(SchedPolicy, CancelMidPrefillFreesBlocks) {
  policy_config cfg;
  cfg.max_step_tokens = 64;
  policy p(cfg);
  p.add_replica(replica(0, 100), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 500, 10), 0.0).accepted);
  fake_worker w;
  auto ps = w.step(p, 0, 0.1);
  ASSERT_TRUE(ps);
  EXPECT_FALSE(ps->plan.seqs[0].sample);
  EXPECT_GT(p.stats(0)->used_blocks, 0);
  // Cancelled while the next chunk is in flight: its output is ignored.
  auto in_flight = p.schedule(0, 0.2);
  ASSERT_TRUE(in_flight);
  p.cancel(1, 0.25);
  auto evs = p.take_events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].finished, finish_reason::cancelled);
  EXPECT_EQ(p.stats(0)->used_blocks, 0);
  EXPECT_TRUE(p.on_result(0, w.run(*in_flight), 0.3).empty());
  EXPECT_EQ(p.check_invariants(), "");
  EXPECT_FALSE(p.schedule(0, 0.4));
  p.cancel(1, 0.5);  // unknown now: ignored
  EXPECT_TRUE(p.take_events().empty());
}

TEST(SchedPolicy, MismatchedResultThrows) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 5, 5), 0.0).accepted);
  auto ps = p.schedule(0, 0.1);
  ASSERT_TRUE(ps);
  EXPECT_FALSE(p.schedule(0, 0.1));  // a step is in flight
  step_result bad;
  bad.step_id = ps->plan.step_id + 7;
  EXPECT_THROW(p.on_result(0, bad, 0.2), error);
  fake_worker w;
  EXPECT_EQ(p.on_result(0, w.run(*ps), 0.2).size(), 1u);
}

TEST(SchedPolicy, WatermarkKeepsBlocksForRunningDecodes) {
  for (double watermark : {0.0, 0.25}) {
    policy_config cfg;
    cfg.kv_watermark = watermark;  // 0.25 of 20 blocks: 5 kept free
    policy p(cfg);
    p.add_replica(replica(0, 20, 4), 0.0);
    ASSERT_TRUE(p.submit(make_request(1, 40, 30), 0.0).accepted);  // 10 blocks
    fake_worker w;
    w.step(p, 0, 0.1);
    ASSERT_TRUE(p.submit(make_request(2, 24, 4), 0.2).accepted);  // 6 more: 4 left
    auto ps = w.step(p, 0, 0.3);
    ASSERT_TRUE(ps);
    EXPECT_EQ(find_work(*ps, 2) != nullptr, watermark == 0.0) << "watermark " << watermark;
  }
}

// ---- preemption -----------------------------------------------------------------------------

void run_until_done(policy& p, fake_worker& w, uint32_t replica, size_t n_requests) {
  for (int i = 0; i < 2000 && w.finished.size() < n_requests; ++i) {
    w.step(p, replica, 1.0 + 0.01 * i);
    ASSERT_EQ(p.check_invariants(), "");
  }
  ASSERT_EQ(w.finished.size(), n_requests);
}

TEST(SchedPolicy, PreemptionByRecomputeKeepsHistory) {
  policy_config cfg;
  cfg.kv_watermark = 0;
  policy p(cfg);
  p.add_replica(replica(0, 10, 4), 0.0);  // 40 tokens; each request needs 32
  ASSERT_TRUE(p.submit(make_request(1, 8, 24), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 8, 24), 0.1).accepted);
  fake_worker w;
  run_until_done(p, w, 0, 2);
  EXPECT_GT(p.stats(0)->preemptions, 0u);
  for (uint64_t id = 1; id <= 2; ++id) {
    EXPECT_EQ(w.finished[id], finish_reason::length);
    EXPECT_EQ(w.streamed[id], expected_stream(id, 8, 24)) << "request " << id;
  }
}

TEST(SchedPolicy, ResumedPrefillCoversPromptAndGenerated) {
  policy_config cfg;
  cfg.kv_watermark = 0;
  cfg.prefix_caching = false;  // the resumed prefill starts at 0
  policy p(cfg);
  p.add_replica(replica(0, 10, 4), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 8, 24), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 8, 24), 0.1).accepted);
  fake_worker w;
  bool saw_resume = false;
  for (int i = 0; i < 200 && w.finished.size() < 2; ++i) {
    auto ps = p.schedule(0, 1.0 + 0.01 * i);
    if (!ps) continue;
    for (const auto& s : ps->plan.seqs) {
      if (s.start_pos != 0 || s.tokens.size() <= 8) continue;
      // A resumed sequence re-feeds its prompt plus what it had generated, and no more.
      saw_resume = true;
      EXPECT_EQ(s.history.size(), s.tokens.size());
      EXPECT_EQ(s.n_prompt, 8);
      const auto gen = w.streamed[s.seq_id];
      EXPECT_EQ(std::vector<int32_t>(s.tokens.begin() + 8, s.tokens.end()), gen);
    }
    w.record(p.on_result(0, w.run(*ps), 1.0 + 0.01 * i));
  }
  EXPECT_TRUE(saw_resume);
}

TEST(SchedPolicy, PreemptionBySwapKeepsComputedTokens) {
  policy_config cfg;
  cfg.kv_watermark = 0;
  cfg.preemption = preemption_mode::swap;
  cfg.host_kv_blocks = 16;
  cfg.trace = true;
  policy p(cfg);
  p.add_replica(replica(0, 10, 4), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 8, 24), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 8, 24), 0.1).accepted);
  fake_worker w;
  w.kv.replicas[0].block_size = 4;  // every attended position must hold its token
  run_until_done(p, w, 0, 2);
  for (uint64_t id = 1; id <= 2; ++id) EXPECT_EQ(w.streamed[id], expected_stream(id, 8, 24));
  const std::string trace = p.take_trace();
  EXPECT_NE(trace.find("\"swapped_out\":[2]"), std::string::npos);
  EXPECT_NE(trace.find("\"swapped_in\":[2]"), std::string::npos);
  EXPECT_EQ(p.stats(0)->host_blocks_used, 0);
}

// The copies a worker must do: the victim's blocks go to host slots in the plan that takes
// them, and come back into fresh blocks at the head of its table in the plan that resumes
// it, which continues at the same position (no recompute).
TEST(SchedPolicy, SwapEmitsCopyListsForTheWorker) {
  policy_config cfg;
  cfg.kv_watermark = 0;
  cfg.prefix_caching = false;
  cfg.preemption = preemption_mode::swap;
  policy p(cfg);
  replica_info r = replica(0, 10, 4);
  r.host_kv_blocks = 8;  // the worker's pool, not the policy's default of 0
  p.add_replica(r, 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 8, 24), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 8, 24), 0.1).accepted);
  fake_worker w;
  std::vector<int32_t> victim_table;  // request 2's blocks before it was swapped out
  std::vector<int32_t> table_2;       // request 2's table as its worker holds it
  int32_t victim_computed = 0;
  bool out_seen = false, in_seen = false;
  for (int i = 0; i < 200 && w.finished.size() < 2; ++i) {
    auto ps = p.schedule(0, 1.0 + 0.01 * i);
    ASSERT_TRUE(ps);
    ASSERT_EQ(p.check_invariants(), "");
    const seq_work* two = find_work(*ps, 2);
    if (!ps->plan.swap_out.empty()) {
      ASSERT_FALSE(out_seen);
      out_seen = true;
      EXPECT_EQ(two, nullptr);
      ASSERT_EQ(ps->plan.swap_out.size(), victim_table.size());
      for (size_t k = 0; k < victim_table.size(); ++k) {
        EXPECT_EQ(ps->plan.swap_out[k].device_block, victim_table[k]);
        EXPECT_EQ(ps->plan.swap_out[k].host_slot, static_cast<int32_t>(k));
      }
      EXPECT_EQ(p.stats(0)->swapped, 1u);
      EXPECT_EQ(p.stats(0)->host_blocks_used, static_cast<int64_t>(victim_table.size()));
    }
    if (!ps->plan.swap_in.empty()) {
      ASSERT_TRUE(out_seen);
      in_seen = true;
      ASSERT_NE(two, nullptr);
      EXPECT_FALSE(two->diff);                     // a swapped-in sequence is sent in full
      EXPECT_EQ(two->start_pos, victim_computed);  // resumes where it stopped
      ASSERT_EQ(ps->plan.swap_in.size(), victim_table.size());
      for (size_t k = 0; k < victim_table.size(); ++k) {
        EXPECT_EQ(ps->plan.swap_in[k].host_slot, static_cast<int32_t>(k));
        EXPECT_EQ(ps->plan.swap_in[k].device_block, two->block_table[k]);
      }
      EXPECT_EQ(p.stats(0)->host_blocks_used, 0);
    }
    if (two) follow_table(table_2, *two);
    if (two && !out_seen) {
      victim_table = table_2;
      victim_computed = two->start_pos + static_cast<int32_t>(two->tokens.size());
    }
    w.record(p.on_result(0, w.run(*ps), 1.0 + 0.01 * i));
  }
  EXPECT_TRUE(out_seen);
  EXPECT_TRUE(in_seen);
  for (uint64_t id = 1; id <= 2; ++id) EXPECT_EQ(w.streamed[id], expected_stream(id, 8, 24));
}

// A replica whose worker reports no host pool never gets copies: preemption recomputes.
TEST(SchedPolicy, SwapWithoutAHostPoolRecomputes) {
  policy_config cfg;
  cfg.kv_watermark = 0;
  cfg.preemption = preemption_mode::swap;
  cfg.host_kv_blocks = 16;  // overridden by the replica's own 0
  policy p(cfg);
  replica_info r = replica(0, 10, 4);
  r.host_kv_blocks = 0;
  p.add_replica(r, 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 8, 24), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(2, 8, 24), 0.1).accepted);
  fake_worker w;
  for (int i = 0; i < 200 && w.finished.size() < 2; ++i) {
    auto ps = w.step(p, 0, 1.0 + 0.01 * i);
    ASSERT_TRUE(ps);
    EXPECT_TRUE(ps->plan.swap_out.empty() && ps->plan.swap_in.empty());
  }
  EXPECT_GT(p.stats(0)->preemptions, 0u);
  EXPECT_EQ(w.streamed[2], expected_stream(2, 8, 24));
  r.id = 1;
  r.host_kv_blocks = -2;
  EXPECT_THROW(p.add_replica(r, 2.0), error);
}

TEST(SchedPolicy, LowPriorityJobAgesPastAStreamOfHighOnes) {
  for (double aging : {0.0, 1.0}) {
    policy_config cfg;
    cfg.aging_s = aging;
    policy p(cfg);
    p.add_replica(replica(0, 100, 16, 1), 0.0);
    ASSERT_TRUE(p.submit(make_request(1, 4, 2, "default", 0), 0.0).accepted);
    fake_worker w;
    uint64_t next = 100;
    // A new high-priority job every step, more than one slot can serve.
    for (int i = 0; i < 100 && !w.finished.count(1); ++i) {
      const double t = 0.1 * i;
      ASSERT_TRUE(p.submit(make_request(next++, 4, 2, "default", 5), t).accepted);
      w.step(p, 0, t);
    }
    EXPECT_EQ(w.finished.count(1), aging > 0 ? 1u : 0u) << "aging_s " << aging;
  }
}

// ---- replicas -------------------------------------------------------------------------------

TEST(SchedPolicy, RemoveReplicaResumesItsWorkElsewhere) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(p.submit(make_request(id, 20, 10), 0.0).accepted);
  fake_worker w;
  for (int i = 0; i < 4; ++i) w.step(p, 0, 0.1 * (i + 1));
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_EQ(w.streamed[id].size(), 4u);
  auto lost = p.schedule(0, 0.5);  // in flight when the replica dies
  ASSERT_TRUE(lost);
  p.add_replica(replica(1, 100), 0.5);
  p.remove_replica(0, 0.6);
  EXPECT_EQ(p.queued(), 3u);
  EXPECT_TRUE(p.on_result(0, w.run(*lost), 0.7).empty());
  EXPECT_FALSE(p.stats(0));
  for (int i = 0; i < 20 && w.finished.size() < 3; ++i) w.step(p, 1, 1.0 + 0.1 * i);
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_EQ(w.streamed[id], expected_stream(id, 20, 10));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedPolicy, DrainedReplicaFinishesItsWorkAndAdmitsNothingNew) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  for (uint64_t id = 1; id <= 2; ++id) ASSERT_TRUE(p.submit(make_request(id, 20, 6), 0.0).accepted);
  fake_worker w;
  w.step(p, 0, 0.1);  // 1 and 2 run on replica 0
  p.add_replica(replica(1, 100), 0.2);
  p.drain_replica(0, 0.2);
  ASSERT_TRUE(p.submit(make_request(3, 20, 6), 0.3).accepted);
  for (int i = 0; i < 20 && w.finished.size() < 3; ++i) {
    if (auto ps = w.step(p, 0, 0.4 + 0.1 * i)) {
      for (const auto& s : ps->plan.seqs) EXPECT_NE(s.seq_id, 3u) << "a draining replica admitted a new request";
    }
    w.step(p, 1, 0.45 + 0.1 * i);
  }
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_EQ(w.streamed[id], expected_stream(id, 20, 6)) << "request " << id;
  const auto st = p.stats(0);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->running + st->swapped, 0u);  // empty: the driver may remove it now
  p.drain_replica(7, 1.0);                   // unknown: ignored
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedPolicy, RemoveReplicaFailsWhatNoReplicaLeftCanHold) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  p.add_replica(replica(1, 4), 0.0);
  ASSERT_TRUE(p.submit(make_request(1, 200, 10), 0.0).accepted);
  p.remove_replica(0, 1.0);
  auto evs = p.take_events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].finished, finish_reason::error);
  EXPECT_EQ(p.queued(), 0u);
}

// ---- models -----------------------------------------------------------------------------------

replica_info replica_of(uint32_t id, std::string model, int32_t max_batch = 64) {
  replica_info r = replica(id, 100, 16, max_batch);
  r.model = std::move(model);
  return r;
}

request request_for(uint64_t id, std::string model) {
  request r = make_request(id, 20, 6);
  r.model = std::move(model);
  return r;
}

TEST(SchedPolicy, RoutesEachRequestOnlyToReplicasOfItsModel) {
  policy p({});
  p.add_replica(replica_of(0, "llama"), 0.0);
  p.add_replica(replica_of(1, "mistral"), 0.0);
  // Odd ids for llama, even for mistral; 9 names no model and may run on either.
  for (uint64_t id = 1; id <= 8; ++id)
    ASSERT_TRUE(p.submit(request_for(id, id % 2 ? "llama" : "mistral"), 0.0).accepted);
  ASSERT_TRUE(p.submit(make_request(9, 20, 6), 0.0).accepted);
  fake_worker w;
  std::set<uint64_t> on0, on1;
  for (int i = 0; i < 40 && w.finished.size() < 9; ++i)
    for (uint32_t r : {0u, 1u})
      if (auto ps = w.step(p, r, 0.1 * i))
        for (const auto& s : ps->plan.seqs) (r == 0 ? on0 : on1).insert(s.seq_id);
  for (uint64_t id = 1; id <= 8; ++id) {
    EXPECT_EQ(w.streamed[id], expected_stream(id, 20, 6)) << "request " << id;
    EXPECT_EQ(on0.count(id), id % 2 ? 1u : 0u) << "request " << id << " on replica 0 (llama)";
    EXPECT_EQ(on1.count(id), id % 2 ? 0u : 1u) << "request " << id << " on replica 1 (mistral)";
  }
  EXPECT_EQ(w.streamed[9], expected_stream(9, 20, 6));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedPolicy, ABusyReplicaOfAnotherModelIsNeverTheRoutingChoice) {
  // Replica 1 serves another model and is idle: the least-loaded choice must not hold the
  // llama requests back for it (affinity_wait_s), nor may it take them.
  policy_config cfg;
  cfg.affinity_wait_s = 100;
  policy p(cfg);
  p.add_replica(replica_of(0, "llama"), 0.0);
  p.add_replica(replica_of(1, "mistral"), 0.0);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(p.submit(request_for(id, "llama"), 0.0).accepted);
  fake_worker w;
  EXPECT_FALSE(w.step(p, 1, 0.1)) << "a mistral replica planned llama work";
  const auto ps = w.step(p, 0, 0.1);
  ASSERT_TRUE(ps);
  EXPECT_EQ(ps->plan.seqs.size(), 3u);
  ASSERT_TRUE(p.submit(request_for(4, "llama"), 0.2).accepted);  // replica 0 is now the busy one
  const auto next = w.step(p, 0, 0.3);
  ASSERT_TRUE(next);
  EXPECT_TRUE(find_work(*next, 4)) << "held back for an idle replica of another model";
}

TEST(SchedPolicy, RequestForAModelWithoutReplicasWaitsForOne) {
  policy p({});
  p.add_replica(replica_of(0, "llama"), 0.0);
  ASSERT_TRUE(p.submit(request_for(1, "mistral"), 0.0).accepted);
  fake_worker w;
  EXPECT_FALSE(w.step(p, 0, 0.1));
  EXPECT_EQ(p.queued(), 1u);
  p.add_replica(replica_of(1, "mistral"), 0.2);
  for (int i = 0; i < 10 && w.finished.empty(); ++i) w.step(p, 1, 0.3 + 0.1 * i);
  EXPECT_EQ(w.streamed[1], expected_stream(1, 20, 6));
  // The last mistral replica goes away: its request waits again (the driver decides whether
  // waiting is hopeless); the llama replica never takes it.
  ASSERT_TRUE(p.submit(request_for(2, "mistral"), 2.0).accepted);
  w.step(p, 1, 2.1);
  p.remove_replica(1, 2.2);
  EXPECT_TRUE(p.take_events().empty());
  EXPECT_EQ(p.queued(), 1u);
  EXPECT_FALSE(w.step(p, 0, 2.3));
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedPolicy, OnlyReplicasOfItsModelBoundWhatARequestMayHold) {
  policy p({});
  replica_info big = replica_of(0, "llama");
  big.kv_blocks = 1000;
  p.add_replica(big, 0.0);
  p.add_replica(replica_of(1, "mistral"), 0.0);  // 100 blocks of 16: 1600 tokens
  request r = request_for(1, "mistral");
  r.prompt.assign(2000, 5);
  const admission a = p.submit(r, 0.0);
  EXPECT_FALSE(a.accepted) << "the llama replica could hold it, but cannot run it";
  EXPECT_EQ(a.error.field, "prompt");
  r.model = "llama";
  EXPECT_TRUE(p.submit(r, 0.0).accepted);
}

}  // namespace
}  // namespace troupe::sched::test
