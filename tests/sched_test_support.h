// A fake worker for policy tests: checks each plan against the sequences it has seen and
// answers with deterministic tokens, so a test can tell a duplicated or missing token.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "src/sched/policy.h"
#include "src/cluster/seq_cache.h"
#include "src/cluster/step_resolver.h"

namespace troupe::sched::test {

// The token a sequence produces at a position: a pure function, never an EOS id below 10.
inline int32_t token_at(uint64_t id, int32_t pos) { return 10 + static_cast<int32_t>((id * 7919 + pos * 31) % 997); }

inline request make_request(uint64_t id, int32_t prompt_len, int32_t max_tokens, std::string tenant = "default",
                            int32_t priority = 0) {
  request r;
  r.id = id;
  r.tenant = std::move(tenant);
  r.priority = priority;
  for (int32_t i = 0; i < prompt_len; ++i) r.prompt.push_back(1000 + static_cast<int32_t>((id * 13 + i) % 50000));
  r.sampling.max_tokens = max_tokens;
  r.eos_ids = {2};
  return r;
}

// A sequence's whole block table as its worker knows it after work `w` (a diff appends).
inline void follow_table(std::vector<int32_t>& table, const seq_work& w) {
  if (!w.diff) table.clear();
  table.insert(table.end(), w.block_table.begin(), w.block_table.end());
}

// What a worker's KV pools would hold, one token per position: a plan's swap copies are
// applied first, then every position a sequence attends to must hold its history's token.
// Catches a copy list that loses, misplaces or overwrites a swapped sequence's KV.
struct kv_model {
  using block = std::map<int32_t, int32_t>;  // offset in the block -> token written there
  struct pools {
    int32_t block_size = 0;
    std::map<int32_t, block> device, host;
  };
  std::map<uint32_t, pools> replicas;  // give each checked replica its block_size

  // `plan` as a backend sees it: diffs expanded (seq_cache).
  void apply(uint32_t replica, const step_plan& plan) {
    auto it = replicas.find(replica);
    if (it == replicas.end()) return;
    pools& r = it->second;
    for (const block_copy& c : plan.swap_out) r.host[c.host_slot] = r.device[c.device_block];
    for (const block_copy& c : plan.swap_in) r.device[c.device_block] = r.host[c.host_slot];
    const int32_t bs = r.block_size;
    for (const seq_work& w : plan.seqs) {
      for (int32_t pos = 0; pos < w.start_pos; ++pos) {
        const block& b = r.device[w.block_table[pos / bs]];
        auto at = b.find(pos % bs);
        ASSERT_TRUE(at != b.end() && at->second == w.history[pos])
            << "step " << plan.step_id << ": seq " << w.seq_id << " position " << pos << " in block "
            << w.block_table[pos / bs] << " does not hold its token";
      }
      for (size_t t = 0; t < w.tokens.size(); ++t) {
        const int32_t pos = w.start_pos + static_cast<int32_t>(t);
        r.device[w.block_table[pos / bs]][pos % bs] = w.tokens[t];
      }
    }
  }
};

struct fake_worker {
  // Everything the client has been told, per request.
  std::map<uint64_t, std::vector<int32_t>> streamed;
  std::map<uint64_t, finish_reason> finished;
  kv_model kv;                                  // checks the KV of the replicas listed in it
  std::map<uint32_t, step_resolver> resolvers;  // per replica, as each worker keeps one
  std::map<uint32_t, seq_cache> caches;         // per replica: plans as diffs, expanded
  // What the backend must see for a (step, seq), as a full plan would have carried it
  // (history after the placeholder's resolution, whole block table); checked and erased.
  struct full_work {
    std::vector<int32_t> history, table;
    int32_t n_prompt = 0;
  };
  std::map<std::pair<uint64_t, uint64_t>, full_work> expected;

  // What a backend sees of a plan: diffs expanded by the replica's seq_cache.
  struct expanded_backend : worker_backend {
    fake_worker& w;
    uint32_t replica;
    const std::vector<uint64_t>& placeholders;  // seqs whose work was feed_last_sampled
    expanded_backend(fake_worker& w, uint32_t replica, const std::vector<uint64_t>& placeholders)
        : w(w), replica(replica), placeholders(placeholders) {}
    step_result step(const step_plan& plan) override {
      w.kv.apply(replica, plan);
      step_result r;
      r.step_id = plan.step_id;
      for (const seq_work& x : plan.seqs) {
        EXPECT_FALSE(x.diff);
        seq_output o;
        o.seq_id = x.seq_id;
        // The history a worker gets must be the prompt plus exactly the tokens streamed.
        EXPECT_GE(static_cast<int32_t>(x.history.size()), x.start_pos + static_cast<int32_t>(x.tokens.size()));
        if (std::find(placeholders.begin(), placeholders.end(), x.seq_id) != placeholders.end()) {
          EXPECT_EQ(static_cast<int32_t>(x.history.size()), x.start_pos + 1) << "placeholder of request " << x.seq_id;
        }
        if (auto it = w.expected.find({plan.step_id, x.seq_id}); it != w.expected.end()) {
          EXPECT_EQ(x.history, it->second.history) << "step " << plan.step_id << ", request " << x.seq_id;
          EXPECT_EQ(x.block_table, it->second.table) << "step " << plan.step_id << ", request " << x.seq_id;
          EXPECT_EQ(x.n_prompt, it->second.n_prompt);
          w.expected.erase(it);
        }
        if (x.sample) o.token = token_at(x.seq_id, x.start_pos + static_cast<int32_t>(x.tokens.size()));
        r.outputs.push_back(o);
      }
      return r;
    }
    int64_t kv_blocks() const override { return 0; }
    int32_t block_size() const override { return 0; }
    std::string describe() const override { return "policy test worker"; }
    void copy_block(int32_t, int32_t) override {}
  };

  // Executes a plan as a worker would: placeholders (async scheduling) resolved from the
  // replica's previous step, which must have sampled exactly the token at that position,
  // then diffs expanded from what the replica's earlier plans sent.
  step_result run(const planned_step& planned) {
    planned_step ps = planned;
    step_resolver& res = resolvers[ps.replica];
    std::vector<uint64_t> placeholders;
    for (const seq_work& w : ps.plan.seqs)
      if (w.feed_last_sampled) {
        EXPECT_EQ(w.tokens, std::vector<int32_t>{-1});
        placeholders.push_back(w.seq_id);
      }
    res.resolve(ps.plan);
    for (const seq_work& w : planned.plan.seqs) {
      if (!w.feed_last_sampled) continue;
      const auto& rw = *std::find_if(ps.plan.seqs.begin(), ps.plan.seqs.end(),
                                     [&](const seq_work& x) { return x.seq_id == w.seq_id; });
      EXPECT_EQ(rw.tokens[0], token_at(w.seq_id, w.start_pos)) << "placeholder of request " << w.seq_id;
    }
    expanded_backend backend(*this, ps.replica, placeholders);
    step_result r = caches[ps.replica].step(backend, ps.plan);
    res.remember(r);
    return r;
  }

  void record(const std::vector<request_event>& evs) {
    for (const request_event& e : evs) {
      for (const token_logprob& t : e.tokens) streamed[e.id].push_back(t.id);
      if (e.finished != finish_reason::none) {
        EXPECT_FALSE(finished.count(e.id)) << "request " << e.id << " finished twice";
        finished[e.id] = e.finished;
      }
    }
  }

  // One schedule + result round on a replica; returns the plan (empty when none).
  std::optional<planned_step> step(policy& p, uint32_t replica, double now) {
    auto ps = p.schedule(replica, now);
    if (ps) record(p.on_result(replica, run(*ps), now));
    record(p.take_events());
    return ps;
  }
};

// The tokens request `id` with prompt length n_prompt must stream, in order.
inline std::vector<int32_t> expected_stream(uint64_t id, int32_t n_prompt, int32_t n) {
  std::vector<int32_t> v;
  for (int32_t i = 0; i < n; ++i) v.push_back(token_at(id, n_prompt + i));
  return v;
}

}  // namespace troupe::sched::test
