#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "sim/capacity.h"
#include "sim/report.h"
#include "sim/simulator.h"
#include "src/sched/trace.h"

#include <nlohmann/json.hpp>

using namespace troupe::sim;

namespace {

cluster_spec small_cluster(const std::string& device = "h100", int devices = 1) {
  cluster_spec c;
  c.device = device_preset(device);
  c.model = model_preset("llama-3-8b");
  c.n_devices = devices;
  c.tp = 1;
  c.max_batch = 64;
  return c;
}

workload_spec light_load(double rate, int64_t n) {
  workload_spec s;
  s.arrivals.rate = rate;
  s.n_requests = n;
  s.prompt = parse_length_dist("lognormal:256:0.6", "p");
  s.output = parse_length_dist("lognormal:48:0.6", "o");
  return s;
}

std::string file_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::filesystem::path temp_file(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("troupe_sim_run_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir / name;
}

}  // namespace

TEST(Simulator, EveryRequestFinishesWithItsTokensInOrder) {
  const auto c = small_cluster("h100", 2);
  roofline_model cost(c);
  const auto w = generate(light_load(20, 300));
  const auto r = simulate(c, cost, w);
  ASSERT_EQ(r.requests.size(), 300u);
  int64_t asked = 0, got = 0;
  for (const auto& q : r.requests) {
    ASSERT_EQ(q.status, request_status::finished) << "request " << q.id;
    EXPECT_EQ(q.generated, q.output_tokens);
    EXPECT_GT(q.first_token, q.arrival);
    EXPECT_GE(q.finish, q.first_token);
    EXPECT_LT(q.replica, 2u);
    asked += q.output_tokens;
    got += q.generated;
  }
  EXPECT_EQ(asked, got);
  EXPECT_GT(r.steps, 0);
  EXPECT_GE(r.end_time, w.requests.back().arrival);
  EXPECT_GT(r.kv_util_max, 0.0);
  EXPECT_LE(r.kv_util_max, 1.0);
  // A step takes at least the time to stream the weights once: no TTFT can beat it.
  step_shape one;
  one.seqs.push_back({1, 0});
  for (const auto& q : r.requests) ASSERT_GE(q.ttft(), 0.99 * cost.step_time(one));
}

TEST(Simulator, SameSeedGivesIdenticalRecords) {
  const auto c = small_cluster("h100", 2);
  roofline_model cost(c);
  auto spec = light_load(40, 400);
  spec.tenants = parse_tenants("a:1:0,b:2:1");
  const auto p1 = temp_file("a.jsonl"), p2 = temp_file("b.jsonl"), p3 = temp_file("c.jsonl");
  write_request_jsonl(p1.string(), simulate(c, cost, generate(spec)));
  write_request_jsonl(p2.string(), simulate(c, cost, generate(spec)));
  spec.seed = 99;
  write_request_jsonl(p3.string(), simulate(c, cost, generate(spec)));
  const auto a = file_text(p1);
  EXPECT_GT(a.size(), 400u * 100);
  EXPECT_EQ(a, file_text(p2));
  EXPECT_NE(a, file_text(p3));
}

TEST(Simulator, LatencyGrowsWithLoad) {
  const auto c = small_cluster();
  roofline_model cost(c);
  const auto base = generate(light_load(1, 400));
  double prev = 0;
  for (double rate : {2.0, 20.0, 80.0}) {
    auto w = base;
    scale_arrivals(w, 1.0 / rate);
    const auto s = summarize(simulate(c, cost, w), {});
    EXPECT_EQ(s.finished, 400);
    EXPECT_GE(s.e2e.p90, prev) << "rate " << rate;
    prev = s.e2e.p90;
  }
}

TEST(Simulator, QueueBoundRejectsUnderOverload) {
  const auto c = small_cluster();
  roofline_model cost(c);
  auto spec = light_load(1, 300);
  spec.arrivals.burst_period = 0.5;
  spec.arrivals.burst_size = 200;
  sim_options o;
  o.policy.max_queued = 50;
  const auto s = summarize(simulate(c, cost, generate(spec), o), {});
  EXPECT_GT(s.rejected, 0);
  EXPECT_EQ(s.rejected + s.finished + s.unfinished, 300);
}

TEST(SimReport, SummaryTableJsonAndHtml) {
  const auto c = small_cluster();
  roofline_model cost(c);
  const auto r = simulate(c, cost, generate(light_load(10, 200)));
  const auto s = summarize(r, {0.5, 0.05});
  EXPECT_EQ(s.finished, 200);
  EXPECT_LE(s.ttft.p50, s.ttft.p90);
  EXPECT_LE(s.ttft.p90, s.ttft.p99);
  EXPECT_GT(s.output_tok_s, 0);
  EXPECT_LE(s.goodput_req_s, s.req_s + 1e-12);
  EXPECT_NE(summary_table(s).find("TTFT"), std::string::npos);
  EXPECT_NE(summary_json(s).find("\"goodput\""), std::string::npos);
  const auto html = temp_file("r.html");
  write_html_report(html.string(), r, s, "test <run>");
  const auto text = file_text(html);
  EXPECT_NE(text.find("<svg"), std::string::npos);
  EXPECT_NE(text.find("test &lt;run&gt;"), std::string::npos);
  EXPECT_EQ(text.find("<script"), std::string::npos);
  EXPECT_EQ(text.find("http://www.w3.org/2000/svg"), text.find("http"));  // no other URL
  EXPECT_DOUBLE_EQ(quantile({3, 1, 2}, 0.5), 2.0);
  EXPECT_DOUBLE_EQ(quantile({1, 2}, 0.9), 1.9);
}

// ---- capacity -----------------------------------------------------------------------------

namespace {

capacity_options quick(slo target) {
  capacity_options o;
  o.target = target;
  o.requests_per_replica = 200;
  o.probe_seconds = 5;
  o.iterations = 6;
  return o;
}

}  // namespace

TEST(SimCapacity, MonotonicInSloAndDevice) {
  const auto load = light_load(1, 1);
  const auto h100 = small_cluster("h100");
  roofline_model cost100(h100);
  const auto strict = max_rate_per_replica(h100, cost100, load, {}, quick({0.2, 0.02}));
  const auto loose = max_rate_per_replica(h100, cost100, load, {}, quick({2.0, 0.2}));
  EXPECT_GT(strict.rate_per_replica, 0);
  EXPECT_GE(loose.rate_per_replica, strict.rate_per_replica);
  // Every probe that met the SLOs ran at a lower rate than every probe that missed.
  double max_met = 0, min_missed = 1e300;
  for (const auto& p : strict.probes)
    (p.meets ? max_met : min_missed) =
        p.meets ? std::max(max_met, p.rate_per_replica) : std::min(min_missed, p.rate_per_replica);
  EXPECT_LT(max_met, min_missed);
  EXPECT_DOUBLE_EQ(strict.rate_per_replica, max_met);

  auto h200 = h100;
  h200.device = device_preset("h200");
  roofline_model cost200(h200);
  EXPECT_GE(max_rate_per_replica(h200, cost200, load, {}, quick({0.2, 0.02})).rate_per_replica,
            strict.rate_per_replica);
}

TEST(SimCapacity, CheapestPicksAFeasibleCandidateAndSkipsMisfits) {
  auto base = small_cluster();
  base.weight_bytes = dtype_bytes("f32");  // 32 GB of weights: too much for an L4's 24 GB
  const auto rows =
      cheapest_cluster(base, parse_candidates("l4:1:0.8,h100:2:3.0,h100:1:3.0"), 10.0, light_load(1, 1), {},
                       quick({1.0, 0.1}), [](const cluster_spec& c) { return std::make_unique<roofline_model>(c); });
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_TRUE(rows[0].feasible);
  EXPECT_TRUE(rows[1].feasible);
  EXPECT_LE(rows[0].cost_per_hour, rows[1].cost_per_hour);
  EXPECT_EQ(rows[0].devices, rows[0].replicas * rows[0].candidate.tp);
  EXPECT_GE(rows[0].rate_per_replica * rows[0].replicas, 10.0 * 0.999);
  EXPECT_EQ(rows[2].candidate.device, "l4");
  EXPECT_FALSE(rows[2].feasible);
  EXPECT_NE(rows[2].note.find("does not fit"), std::string::npos) << rows[2].note;
  EXPECT_THROW(parse_candidates("h100:x:3"), troupe::error);
}

// ---- the policy's own trace ---------------------------------------------------------------

TEST(Simulator, PolicyTraceReplaysAndYieldsTheWorkload) {
  const auto c = small_cluster("h100", 2);
  roofline_model cost(c);
  const auto w = generate(light_load(30, 120));
  sim_options o;
  o.policy.trace = true;
  const auto r = simulate(c, cost, w, o);
  ASSERT_FALSE(r.policy_trace.empty());
  // The simulator's decisions are the policy's: a fresh policy fed the recorded inputs
  // decides the same, step by step.
  std::istringstream in(r.policy_trace);
  const auto rep = troupe::sched::replay(in, o.policy);
  EXPECT_TRUE(rep.same) << rep.difference;
  EXPECT_GT(rep.lines, 120u);
  // A trace recorded by a scheduler is also a workload to replay through sim/.
  const auto path = temp_file("policy.trace.jsonl");
  std::ofstream(path) << r.policy_trace;
  const auto back = read_trace(path.string());
  ASSERT_EQ(back.requests.size(), w.requests.size());
  for (size_t i = 0; i < w.requests.size(); ++i) {
    EXPECT_EQ(back.requests[i].prompt_tokens, w.requests[i].prompt_tokens);
    EXPECT_EQ(back.requests[i].output_tokens, w.requests[i].output_tokens);
    EXPECT_NEAR(back.requests[i].arrival, w.requests[i].arrival - w.requests[0].arrival, 1e-9);
  }
}

TEST(Simulator, ScarceKvForcesPreemptionsYetEveryRequestFinishes) {
  auto c = small_cluster();
  // Leave room for ~4,000 tokens of KV: 250 blocks of 16.
  c.reserve_bytes = c.device.memory_bytes * c.mem_utilization - c.weight_bytes_per_device() - 4000 * 131072.0;
  ASSERT_NEAR(double(c.kv_blocks_per_replica()), 250, 2);
  roofline_model cost(c);
  auto spec = light_load(50, 200);
  spec.output = parse_length_dist("fixed:200", "o");
  for (auto mode : {troupe::sched::preemption_mode::recompute, troupe::sched::preemption_mode::swap}) {
    sim_options o;
    o.policy.preemption = mode;
    o.policy.host_kv_blocks = 10000;
    const auto r = simulate(c, cost, generate(spec), o);
    const auto s = summarize(r, {});
    EXPECT_EQ(s.finished, 200);
    EXPECT_GT(s.preemptions, 0);
    EXPECT_GT(s.kv_util_max, 0.9);
    EXPECT_LE(s.kv_util_max, 1.0);
    if (mode == troupe::sched::preemption_mode::recompute) {
      int64_t per_request = 0;
      for (const auto& q : r.requests) per_request += q.preemptions;
      EXPECT_GT(per_request, 0);  // positions went back: KV recomputed
    }
  }
}

TEST(SimReport, TenantsGetTheirOwnRowsAndPriorityReachesThePolicy) {
  const auto c = small_cluster();
  roofline_model cost(c);
  auto spec = light_load(1, 600);
  spec.tenants = parse_tenants("gold:1:5,free:1:0");
  auto w = generate(spec);
  scale_arrivals(w, 1.0 / 120);  // far beyond one replica's capacity: a queue builds
  sim_options o;
  o.policy.aging_s = 0;
  const auto s = summarize(simulate(c, cost, w, o), {});
  ASSERT_EQ(s.tenants.size(), 2u);
  EXPECT_EQ(s.tenants[0].name, "gold");
  EXPECT_EQ(s.tenants[0].requests + s.tenants[1].requests, 600);
  EXPECT_EQ(s.tenants[0].finished + s.tenants[1].finished, s.finished);
  EXPECT_LT(s.tenants[0].ttft.p90, s.tenants[1].ttft.p90);  // the higher priority waits less
  EXPECT_NE(summary_table(s).find("gold"), std::string::npos);
  EXPECT_NE(summary_json(s).find("\"tenants\""), std::string::npos);
}

TEST(Simulator, EventsReachThePolicyInTimeOrderAndBurstsInIdOrder) {
  const auto c = small_cluster("h100", 2);
  roofline_model cost(c);
  auto spec = light_load(5, 150);
  spec.arrivals.burst_period = 2.0;
  spec.arrivals.burst_size = 20;  // 20 arrivals at the very same instant, every 2 s
  sim_options o;
  o.policy.trace = true;
  const auto r = simulate(c, cost, generate(spec), o);
  std::istringstream in(r.policy_trace);
  std::string line;
  double last_t = 0;
  int64_t last_submit = -1;
  size_t submits = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("ev") == "config") continue;  // the policy's settings, no time
    const double t = j.at("t").get<double>();
    ASSERT_GE(t, last_t) << line;  // the virtual clock never runs backwards
    last_t = t;
    if (j.at("ev") == "submit") {
      const auto id = j.at("id").get<int64_t>();
      ASSERT_EQ(id, last_submit + 1) << "arrivals at one instant keep their order";
      last_submit = id;
      ++submits;
    }
  }
  EXPECT_EQ(submits, 150u);
}

// Async scheduling in the simulator: step N+1 is planned when N starts and starts when N
// ends. Every request still gets exactly its tokens, the steps of a replica never overlap,
// and the trace replays through a policy with the same setting.
TEST(Simulator, TwoStepsInFlightFinishEveryRequestAndReplay) {
  const auto c = small_cluster("h100", 2);
  roofline_model cost(c);
  const auto w = generate(light_load(30, 120));
  sim_options o;
  o.policy.max_inflight_steps = 2;
  o.policy.trace = true;
  std::map<uint32_t, double> replica_free;  // when each replica's last step ends
  o.on_step = [&](const step_record& s) {
    EXPECT_GE(s.start + 1e-12, replica_free[s.replica]) << "steps overlap on replica " << s.replica;
    replica_free[s.replica] = s.start + s.duration;
  };
  const auto r = simulate(c, cost, w, o);
  for (const auto& q : r.requests) {
    ASSERT_EQ(q.status, request_status::finished) << "request " << q.id;
    EXPECT_EQ(q.generated, q.output_tokens);
  }
  std::istringstream in(r.policy_trace);
  const auto rep = troupe::sched::replay(in, o.policy);
  EXPECT_TRUE(rep.same) << rep.difference;
  std::istringstream again(r.policy_trace);
  auto one = o.policy;
  one.max_inflight_steps = 1;
  EXPECT_FALSE(troupe::sched::replay(again, one, /*use_recorded_config=*/false).same);  // it decides
}

namespace {

// Every step takes the same time, whatever its shape.
class constant_cost final : public cost_model {
 public:
  explicit constant_cost(double t) : t_(t) {}
  double step_time(const step_shape&) const override { return t_; }
  std::string describe() const override { return "constant"; }

 private:
  double t_;
};

// One request at t = 0: a 16-token prompt (one prefill step that samples the first
// token) and 5 output tokens (four decode steps after it).
request_record lone_request(double loop_s, int32_t inflight) {
  auto c = small_cluster();
  c.loop_latency = loop_s;
  sim_options o;
  o.policy.max_inflight_steps = inflight;  // the period follows it (cluster_spec::step_period)
  workload w;
  w.tenants = {tenant_spec{}};
  w.requests = {sim_request{0, 0.0, 16, 5, 0}};
  const auto r = simulate(c, constant_cost(0.010), w, o);
  return r.requests.at(0);
}

}  // namespace

TEST(SimLoop, EveryStepPaysTheLoopWhenSynchronous) {
  const auto none = lone_request(0, 1);
  EXPECT_NEAR(none.first_token, 0.010, 1e-12);
  EXPECT_NEAR(none.finish, 0.050, 1e-12);

  const auto sync = lone_request(0.004, 1);  // period 10 + 4 ms
  EXPECT_EQ(sync.generated, 5);
  EXPECT_NEAR(sync.first_token, 0.014, 1e-12);
  EXPECT_NEAR(sync.finish, 0.070, 1e-12);
  EXPECT_NEAR(sync.tpot(), 0.014, 1e-12);
}

TEST(SimLoop, PipelinedStepsHideALoopShorterThanTheCompute) {
  const auto hidden = lone_request(0.004, 2);  // period max(10, 4) ms
  EXPECT_NEAR(hidden.first_token, 0.010, 1e-12);
  EXPECT_NEAR(hidden.finish, 0.050, 1e-12);

  const auto bound = lone_request(0.025, 2);  // the loop is the longer: period 25 ms
  EXPECT_NEAR(bound.first_token, 0.025, 1e-12);
  EXPECT_NEAR(bound.finish, 0.125, 1e-12);
}
