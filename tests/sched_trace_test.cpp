// The JSONL step trace: what it records, and replaying it through a fresh policy.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "src/sched/policy.h"
#include "src/sched/policy_observer.h"
#include "src/sched/trace.h"
#include "tests/sched_test_support.h"

namespace troupe::sched::test {
namespace {

std::string record(const policy_config& cfg) {
  policy p(cfg);
  replica_info r;
  r.kv_blocks = 12;
  r.block_size = 4;
  r.max_batch = 3;
  p.add_replica(r, 0.0);
  fake_worker w;
  for (uint64_t id = 1; id <= 6; ++id) p.submit(make_request(id, 6 + static_cast<int32_t>(id), 10), 0.25 * id);
  for (int i = 0; i < 200 && p.running() + p.queued() > 0; ++i) {
    if (i == 3) p.cancel(2, 0.125 + 0.5 * i);
    w.step(p, 0, 0.5 * i);
  }
  return p.take_trace();
}

policy_config traced() {
  policy_config cfg;
  cfg.trace = true;
  cfg.max_step_tokens = 16;
  cfg.kv_watermark = 0;
  return cfg;
}

TEST(SchedTrace, RecordsEveryDecisionAsJsonLines) {
  const std::string t = record(traced());
  std::istringstream in(t);
  std::string line;
  std::map<std::string, int> kinds;
  while (std::getline(in, line)) {
    const auto at = line.find("\"ev\":\"");
    ASSERT_NE(at, std::string::npos) << line;
    kinds[line.substr(at + 6, line.find('"', at + 6) - at - 6)]++;
  }
  EXPECT_EQ(kinds["config"], 1);
  EXPECT_NE(t.substr(0, t.find('\n')).find("\"ev\":\"config\""), std::string::npos) << "the config line comes first";
  EXPECT_EQ(kinds["add_replica"], 1);
  EXPECT_EQ(kinds["submit"], 6);
  EXPECT_EQ(kinds["cancel"], 1);
  EXPECT_GT(kinds["step"], 10);
  EXPECT_EQ(kinds["step"], kinds["result"]);
  EXPECT_NE(t.find("\"preempted\":[6]"), std::string::npos);  // 12 blocks are too few
  EXPECT_NE(t.find("\"finished\":[[1,\"length\"]]"), std::string::npos);
  EXPECT_TRUE(record(policy_config{}).empty());  // tracing is off by default
}

TEST(SchedTrace, ReplayMakesTheSameDecisions) {
  std::istringstream in(record(traced()));
  const replay_report r = replay(in, traced());
  EXPECT_TRUE(r.same) << r.difference;
  EXPECT_GT(r.lines, 20u);
}

TEST(SchedTrace, ReplayUnderAnotherConfigDiffers) {
  std::istringstream in(record(traced()));
  policy_config other = traced();
  other.max_step_tokens = 8;
  const replay_report r = replay(in, other, /*use_recorded_config=*/false);
  EXPECT_FALSE(r.same);
  EXPECT_NE(r.difference.find("line "), std::string::npos);
}

// The trace says which policy decided: replaying it needs no flags, whatever the caller's
// config (steps in flight, budget, tenants), and a trace without the line still replays.
TEST(SchedTrace, ReplayUsesTheRecordedConfig) {
  policy_config cfg = traced();
  cfg.max_inflight_steps = 2;
  cfg.preemption = preemption_mode::swap;
  cfg.host_kv_blocks = 8;
  cfg.tenants = {{"a", 2.5, 3, 1000}};
  cfg.default_tenant.weight = 0.5;
  std::istringstream in(record(cfg));
  const replay_report r = replay(in, policy_config{});
  EXPECT_TRUE(r.recorded_config);
  EXPECT_TRUE(r.same) << r.difference;

  std::string t = record(traced());
  t.erase(0, t.find('\n') + 1);  // as an older trace: no config line
  std::istringstream old(t);
  const replay_report o = replay(old, traced());
  EXPECT_FALSE(o.recorded_config);
  EXPECT_TRUE(o.same) << o.difference;
}

// Models travel in submit and add_replica lines, and a replay routes by them: replaying with
// the model fields stripped (as an older trace) makes other decisions.
TEST(SchedTrace, ModelsAreRecordedAndReplayRoutesByThem) {
  policy p(traced());
  for (uint32_t id : {0u, 1u}) {
    replica_info r;
    r.id = id;
    r.kv_blocks = 40;
    r.block_size = 4;
    r.model = id == 0 ? "llama" : "mistral";
    p.add_replica(r, 0.0);
  }
  fake_worker w;
  for (uint64_t id = 1; id <= 6; ++id) {
    request q = make_request(id, 6, 4);
    q.model = id <= 5 ? "llama" : "mistral";  // most of the load on replica 0
    p.submit(q, 0.1 * id);
  }
  for (int i = 0; i < 100 && p.running() + p.queued() > 0; ++i)
    for (uint32_t r : {0u, 1u}) w.step(p, r, 1.0 + 0.5 * i);
  const std::string t = p.take_trace();
  EXPECT_NE(t.find("\"model\":\"mistral\""), std::string::npos);
  EXPECT_NE(
      t.find("\"ev\":\"add_replica\",\"host_kv_blocks\":-1,\"kv_blocks\":40,\"max_batch\":64,\"model\":\"llama\""),
      std::string::npos)
      << t.substr(0, 600);
  std::istringstream in(t);
  const replay_report r = replay(in, policy_config{});
  EXPECT_TRUE(r.same) << r.difference;

  std::string stripped;
  std::istringstream lines(t);
  for (std::string l; std::getline(lines, l);) {
    for (const std::string m : {",\"model\":\"llama\"", ",\"model\":\"mistral\""})
      if (auto at = l.find(m); at != std::string::npos) l.erase(at, m.size());
    stripped += l + "\n";
  }
  std::istringstream old(stripped);
  EXPECT_FALSE(replay(old, policy_config{}).same) << "without models, replica 1 takes llama requests";
}

TEST(SchedTrace, CompareNamesTheFirstDifferentLine) {
  std::istringstream a("{\"ev\":\"step\",\"n\":1}\n{\"ev\":\"step\",\"n\":2}\n");
  std::istringstream b("{\"n\":1, \"ev\":\"step\"}\n{\"ev\":\"step\",\"n\":3}\n");
  const std::string d = compare_traces(a, b);
  EXPECT_EQ(d.rfind("line 2", 0), 0u) << d;
  std::istringstream c("{\"a\":1}\n"), e("{\"a\":1}\n{\"a\":2}\n");
  EXPECT_NE(compare_traces(c, e), "");
}

TEST(SchedTrace, DecisionsOnlyIgnoresTimesAndInputs) {
  std::istringstream a("{\"ev\":\"submit\",\"t\":1}\n{\"ev\":\"step\",\"t\":2,\"seqs\":[1]}\n");
  std::istringstream b("{\"ev\":\"step\",\"t\":7,\"seqs\":[1]}\n");
  EXPECT_EQ(compare_traces(a, b, true), "");
  std::istringstream c("{\"ev\":\"step\",\"t\":2,\"seqs\":[1]}\n");
  std::istringstream d("{\"ev\":\"step\",\"t\":7,\"seqs\":[1]}\n");
  EXPECT_NE(compare_traces(c, d), "");
}

TEST(SchedTrace, ReadsArrivalsAndFinishes) {
  std::istringstream in(record(traced()));
  const trace_events ev = read_trace_events(in);
  ASSERT_EQ(ev.arrivals.size(), 6u);
  EXPECT_EQ(ev.arrivals[2].t, 0.75);
  EXPECT_EQ(ev.arrivals[2].req.id, 3u);
  EXPECT_EQ(ev.arrivals[2].req.prompt, make_request(3, 9, 10).prompt);
  EXPECT_EQ(ev.arrivals[2].req.sampling.max_tokens, 10);
  ASSERT_EQ(ev.finishes.size(), 6u);
  size_t cancelled = 0, length = 0;
  for (const auto& f : ev.finishes) {
    cancelled += f.reason == finish_reason::cancelled;
    length += f.reason == finish_reason::length;
  }
  EXPECT_EQ(cancelled, 1u);
  EXPECT_EQ(length, 5u);
  std::istringstream bad("{\"ev\":\"submit\"}\n");
  EXPECT_THROW(read_trace_events(bad), error);
}

}  // namespace
}  // namespace troupe::sched::test

namespace troupe::sched::test {
namespace {

// Tracing is one observer of the policy's decisions; any other sees the same decisions, and
// without tracing too.
struct counting_observer : policy_observer {
  int submits = 0, cancels = 0, steps = 0, results = 0, replicas = 0;
  std::vector<int32_t> allocated, freed;
  void on_add_replica(double, const replica_info&) override { ++replicas; }
  void on_submit(double, const request&, const admission&) override { ++submits; }
  void on_cancel(double, uint64_t, const std::vector<int32_t>& f) override {
    ++cancels;
    freed.insert(freed.end(), f.begin(), f.end());
  }
  void on_step(const step_decision& s) override {
    ++steps;
    for (const auto& q : s.seqs) allocated.insert(allocated.end(), q.alloc.begin(), q.alloc.end());
    freed.insert(freed.end(), s.freed.begin(), s.freed.end());
  }
  void on_result(double, uint32_t, const step_result&, const std::vector<std::pair<uint64_t, finish_reason>>&,
                 const std::vector<int32_t>& f) override {
    ++results;
    freed.insert(freed.end(), f.begin(), f.end());
  }
};

TEST(SchedTrace, AnObserverIsToldEveryDecision) {
  for (bool trace : {true, false}) {
    policy_config cfg = traced();
    cfg.trace = trace;
    cfg.prefix_caching = false;  // so that a block is freed once per allocation
    policy p(cfg);
    counting_observer o;
    p.add_observer(o);
    replica_info r;
    r.kv_blocks = 12;
    r.block_size = 4;
    r.max_batch = 3;
    p.add_replica(r, 0.0);
    fake_worker w;
    for (uint64_t id = 1; id <= 6; ++id) p.submit(make_request(id, 6 + static_cast<int32_t>(id), 10), 0.25 * id);
    int planned = 0;
    for (int i = 0; i < 200 && p.running() + p.queued() > 0; ++i) {
      if (i == 3) p.cancel(2, 0.125 + 0.5 * i);
      planned += w.step(p, 0, 0.5 * i).has_value();
    }
    EXPECT_EQ(o.replicas, 1);
    EXPECT_EQ(o.submits, 6);
    EXPECT_EQ(o.cancels, 1);
    EXPECT_GE(o.steps, planned);  // a step that only preempts is a decision too
    EXPECT_EQ(o.results, planned);
    // Every block handed out went back: the pool ends with nothing referenced.
    std::sort(o.allocated.begin(), o.allocated.end());
    std::sort(o.freed.begin(), o.freed.end());
    EXPECT_EQ(o.allocated, o.freed);
    EXPECT_EQ(p.take_trace().empty(), !trace);
  }
}

}  // namespace
}  // namespace troupe::sched::test
