// A fake worker for policy tests: checks each plan against the sequences it has seen and
// answers with deterministic tokens, so a test can tell a duplicated or missing token.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "src/sched/policy.h"
#include "src/step_resolver.h"

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

  void apply(const planned_step& ps) {
    auto it = replicas.find(ps.replica);
    if (it == replicas.end()) return;
    pools& r = it->second;
    for (const block_copy& c : ps.plan.swap_out) r.host[c.host_slot] = r.device[c.device_block];
    for (const block_copy& c : ps.plan.swap_in) r.device[c.device_block] = r.host[c.host_slot];
    const int32_t bs = r.block_size;
    for (const seq_work& w : ps.plan.seqs) {
      for (int32_t pos = 0; pos < w.start_pos; ++pos) {
        const block& b = r.device[w.block_table[pos / bs]];
        auto at = b.find(pos % bs);
        ASSERT_TRUE(at != b.end() && at->second == w.history[pos])
            << "step " << ps.plan.step_id << ": seq " << w.seq_id << " position " << pos << " in block "
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

  // Executes a plan as a worker would: placeholders (async scheduling) resolved from the
  // replica's previous step, which must have sampled exactly the token at that position.
  step_result run(const planned_step& planned) {
    planned_step ps = planned;
    step_resolver& res = resolvers[ps.replica];
    for (const seq_work& w : ps.plan.seqs)
      if (w.feed_last_sampled) {
        EXPECT_EQ(w.tokens, std::vector<int32_t>{-1});
      }
    res.resolve(ps.plan);
    for (const seq_work& w : planned.plan.seqs) {
      if (!w.feed_last_sampled) continue;
      const auto& rw = *std::find_if(ps.plan.seqs.begin(), ps.plan.seqs.end(),
                                     [&](const seq_work& x) { return x.seq_id == w.seq_id; });
      EXPECT_EQ(rw.tokens[0], token_at(w.seq_id, w.start_pos)) << "placeholder of request " << w.seq_id;
      EXPECT_EQ(static_cast<int32_t>(rw.history.size()), w.start_pos + 1);
    }
    kv.apply(ps);
    step_result r;
    r.step_id = ps.plan.step_id;
    for (const seq_work& w : ps.plan.seqs) {
      seq_output o;
      o.seq_id = w.seq_id;
      // The history a worker gets must be the prompt plus exactly the tokens streamed.
      EXPECT_GE(static_cast<int32_t>(w.history.size()), w.start_pos + static_cast<int32_t>(w.tokens.size()));
      if (w.sample) o.token = token_at(w.seq_id, w.start_pos + static_cast<int32_t>(w.tokens.size()));
      r.outputs.push_back(o);
    }
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
