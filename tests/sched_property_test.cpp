// Randomized workloads over many seeds, checking the policy's invariants after every call:
// no block leaked or held twice, the budget and batch bounds, tables covering their
// positions, every request ending, and every client seeing each token exactly once.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <sstream>

#include "src/sched/policy.h"
#include "src/sched/trace.h"
#include "tests/sched_test_support.h"

namespace troupe::sched::test {
namespace {

struct job {
  request req;
  bool done = false;
};

class workload {
 public:
  workload(uint64_t seed, int32_t max_inflight_steps = 1) : rng_(seed) {
    cfg_.max_inflight_steps = max_inflight_steps;
    cfg_.max_step_tokens = pick({16, 32, 64, 128});
    cfg_.chunked_prefill = chance(0.8);
    cfg_.prefix_caching = chance(0.6);
    if (chance(0.3)) {
      cfg_.preemption = preemption_mode::swap;
      cfg_.host_kv_blocks = uniform(0, 32);
    }
    cfg_.kv_watermark = chance(0.5) ? 0.0 : 0.05;
    cfg_.aging_s = chance(0.5) ? 0.0 : 0.5;
    cfg_.max_queued = 64;
    cfg_.tenants = {{"a", 1.0}, {"b", 2.0}};
    cfg_.trace = seed % 10 == 0;
    for (int f = 0; f < 3; ++f)
      for (int i = 0; i < 64; ++i) families_[f].push_back(uniform(100, 140));
  }

  void run() {
    policy p(cfg_);
    const int n_replicas = uniform(1, 3);
    for (int i = 0; i < n_replicas; ++i) add_replica(p, 0.0);
    const int n_requests = uniform(5, 40);
    int submitted = 0;
    for (int tick = 0; tick < 20000; ++tick) {
      const double t = 0.01 * tick;
      if (submitted < n_requests && chance(0.4)) {
        submit(p, t, static_cast<uint64_t>(++submitted));
        if (::testing::Test::HasFatalFailure()) return;
      }
      if (chance(0.03) && !jobs_.empty()) {
        auto it = jobs_.begin();
        std::advance(it, uniform(0, static_cast<int>(jobs_.size()) - 1));
        p.cancel(it->first, t);
        check(p);
      }
      if (chance(0.005) && replicas_.size() > 1) {
        auto it = replicas_.begin();
        std::advance(it, uniform(0, static_cast<int>(replicas_.size()) - 1));
        p.remove_replica(it->first, t);
        replicas_.erase(it);
        check(p);
        add_replica(p, t);
      }
      for (auto& [id, r] : replicas_) {
        bool answered = false;
        if (!r.in_flight.empty() && !chance(0.3)) {  // else the result arrives later
          // The worker executes its plans in order, each when its result comes back.
          worker_.record(p.on_result(id, worker_.run(r.in_flight.front()), t));
          r.in_flight.pop_front();
          answered = true;
          check(p);
        }
        // One step at a time: a result and the next plan are two ticks apart, as before.
        const bool may_plan = cfg_.max_inflight_steps > 1 || !answered;
        if (may_plan && static_cast<int32_t>(r.in_flight.size()) < cfg_.max_inflight_steps) {
          if (auto ps = p.schedule(id, t)) {
            check_plan(*ps, r.info);
            r.in_flight.push_back(std::move(*ps));
          }
        }
        check(p);
        if (::testing::Test::HasFatalFailure()) return;
      }
      worker_.record(p.take_events());
      if (submitted == n_requests && p.running() + p.queued() == 0) break;
    }
    ASSERT_EQ(p.running() + p.queued(), 0u) << "requests left hanging";
    check_streams();
    if (cfg_.trace) {
      std::stringstream trace(p.take_trace());
      const replay_report rep = replay(trace, cfg_);
      EXPECT_TRUE(rep.same) << rep.difference;
    }
  }

 private:
  struct replica_run {
    replica_info info;
    std::deque<planned_step> in_flight;  // planned, oldest first
  };

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  int pick(std::initializer_list<int> v) { return *(v.begin() + uniform(0, static_cast<int>(v.size()) - 1)); }

  void add_replica(policy& p, double t) {
    replica_run r;
    r.info.id = next_replica_++;
    r.info.block_size = pick({4, 8, 16});
    r.info.kv_blocks = uniform(8, 64);
    r.info.max_batch = uniform(1, 8);
    p.add_replica(r.info, t);
    replicas_.emplace(r.info.id, r);
    worker_.kv.replicas[r.info.id].block_size = r.info.block_size;  // every read checked, swaps included
  }

  void submit(policy& p, double t, uint64_t id) {
    request r = make_request(id, 1, uniform(1, 30), chance(0.5) ? "a" : "b", uniform(0, 2));
    const auto& fam = families_[uniform(0, 2)];
    r.prompt.assign(fam.begin(), fam.begin() + uniform(0, 40));
    for (int n = uniform(1, 60); n > 0; --n) r.prompt.push_back(uniform(100, 140));
    if (chance(0.2)) r.sampling.stop_ids = {token_at(id, static_cast<int32_t>(r.prompt.size()) + uniform(0, 10))};
    const admission a = p.submit(r, t);
    if (a.accepted) {
      jobs_[id].req = r;
    } else {
      EXPECT_FALSE(a.error.field.empty());
      EXPECT_FALSE(a.error.message.empty());
    }
    check(p);
  }

  void check(const policy& p) { ASSERT_EQ(p.check_invariants(), ""); }

  void check_plan(const planned_step& ps, const replica_info& info) {
    int32_t tokens = 0;
    ASSERT_LE(ps.plan.seqs.size(), static_cast<size_t>(info.max_batch));
    for (uint64_t id : ps.plan.released) ASSERT_EQ(held_.erase({info.id, id}), 1u) << "released " << id;
    for (const seq_work& w : ps.plan.seqs) {
      const auto n = static_cast<int32_t>(w.tokens.size());
      tokens += n;
      ASSERT_GT(n, 0);
      // A diff extends what the replica's worker holds of the sequence: only a sequence
      // the replica's previous plans sent in full, and not released since.
      const auto held = held_.find({info.id, w.seq_id});
      ASSERT_TRUE(!w.diff || held != held_.end()) << "a diff of request " << w.seq_id << " its worker never got";
      // Sent in full again only after its worker was told to drop it (released).
      ASSERT_TRUE(w.diff || held == held_.end()) << "request " << w.seq_id << " in full again, never released";
      std::vector<int32_t>& table = held_[{info.id, w.seq_id}];
      follow_table(table, w);
      ASSERT_GE(static_cast<int64_t>(table.size()) * info.block_size, w.start_pos + n);
      for (int32_t b : table) ASSERT_TRUE(b >= 0 && b < info.kv_blocks);
      const job& j = jobs_.at(w.seq_id);
      // The history is the prompt plus exactly what the client has seen; a diff carries
      // none, and its worker's expansion must give that same history (checked when it runs).
      std::vector<int32_t> want = j.req.prompt;
      const auto& seen = worker_.streamed[w.seq_id];
      want.insert(want.end(), seen.begin(), seen.end());
      if (!w.diff) {
        ASSERT_EQ(w.history, want);
        ASSERT_EQ(w.n_prompt, static_cast<int32_t>(j.req.prompt.size()));
      } else {
        ASSERT_TRUE(w.history.empty());
      }
      auto& full = worker_.expected[{ps.plan.step_id, w.seq_id}];
      full.history = want;
      if (w.feed_last_sampled) full.history.push_back(token_at(w.seq_id, static_cast<int32_t>(want.size())));
      full.table = table;
      full.n_prompt = static_cast<int32_t>(j.req.prompt.size());
      if (w.feed_last_sampled) {  // the token being sampled now: right after what was seen
        ASSERT_GT(cfg_.max_inflight_steps, 1);
        ASSERT_EQ(w.tokens, std::vector<int32_t>{-1});
        ASSERT_EQ(w.start_pos, static_cast<int32_t>(want.size()));
        ASSERT_TRUE(w.sample);
        // Never past max_tokens, counting the token in flight and this one.
        ASSERT_LE(static_cast<int32_t>(seen.size()) + 2, j.req.sampling.max_tokens);
        continue;
      }
      ASSERT_EQ(w.tokens, std::vector<int32_t>(want.begin() + w.start_pos, want.begin() + w.start_pos + n));
      ASSERT_EQ(w.sample, w.start_pos + n == static_cast<int32_t>(want.size()));
    }
    ASSERT_LE(tokens, cfg_.max_step_tokens);
  }

  void check_streams() {
    for (const auto& [id, j] : jobs_) {
      ASSERT_TRUE(worker_.finished.count(id)) << "request " << id << " never finished";
      const auto& got = worker_.streamed[id];
      const auto n_prompt = static_cast<int32_t>(j.req.prompt.size());
      ASSERT_EQ(got, expected_stream(id, n_prompt, static_cast<int32_t>(got.size()))) << "request " << id;
      const finish_reason why = worker_.finished[id];
      if (why == finish_reason::length) {
        EXPECT_EQ(static_cast<int32_t>(got.size()), j.req.sampling.max_tokens);
      }
      if (why == finish_reason::stop) {
        EXPECT_EQ(got.back(), j.req.sampling.stop_ids.at(0));
      }
      EXPECT_LE(static_cast<int32_t>(got.size()), j.req.sampling.max_tokens);
    }
  }

  std::mt19937_64 rng_;
  policy_config cfg_;
  std::vector<int32_t> families_[3];
  std::map<uint32_t, replica_run> replicas_;
  uint32_t next_replica_ = 0;
  std::map<uint64_t, job> jobs_;
  fake_worker worker_;
  // (replica, request) -> the block table its worker holds, from the plans sent there.
  std::map<std::pair<uint32_t, uint64_t>, std::vector<int32_t>> held_;
};

TEST(SchedProperty, InvariantsHoldOverManySeededWorkloads) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    workload(seed).run();
    if (::testing::Test::HasFailure()) return;
  }
}

// Async scheduling: a step planned while the previous ones are in flight, placeholders
// resolved by the fake worker, tokens of work planned past a finish dropped.
TEST(SchedProperty, InvariantsHoldWithStepsInFlight) {
  for (int32_t inflight : {2, 3}) {
    for (uint64_t seed = 1; seed <= (inflight == 2 ? 300u : 100u); ++seed) {
      SCOPED_TRACE("max_inflight_steps " + std::to_string(inflight) + ", seed " + std::to_string(seed));
      workload(seed, inflight).run();
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace troupe::sched::test
