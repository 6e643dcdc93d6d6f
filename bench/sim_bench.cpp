// The simulator's speed: simulated requests per second of host time, single-threaded,
// for an 8-replica cluster (8 x H100, Llama-3-8B in bf16, roofline costs) under a
// Poisson load near its capacity. The target: 1 million requests in under a minute.
//   bench_sim --benchmark_filter=Million     (the one-off 1M run)
#include <benchmark/benchmark.h>

#include "sim/cost_model.h"
#include "sim/simulator.h"
#include "sim/workload.h"

namespace {

using namespace troupe::sim;

cluster_spec eight_h100() {
  cluster_spec c;
  c.device = device_preset("h100");
  c.model = model_preset("llama-3-8b");
  c.n_devices = 8;
  c.tp = 1;
  return c;
}

workload_spec load(int64_t n) {
  workload_spec s;
  s.arrivals.rate = 400;  // ~50 req/s per replica: busy, not overloaded
  s.n_requests = n;
  s.prompt = parse_length_dist("lognormal:256:0.6", "prompt-len");
  s.output = parse_length_dist("lognormal:64:0.6", "output-len");
  return s;
}

void run(benchmark::State& state, bool prefix_caching) {
  const auto c = eight_h100();
  const roofline_model cost(c);
  const auto w = generate(load(state.range(0)));
  sim_options o;
  o.policy.max_queued = 1 << 30;
  o.policy.prefix_caching = prefix_caching;
  int64_t steps = 0, finished = 0;
  for (auto _ : state) {
    const auto r = simulate(c, cost, w, o);
    steps = r.steps;
    finished = 0;
    for (const auto& q : r.requests) finished += q.status == request_status::finished;
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["steps"] = double(steps);
  state.counters["finished"] = double(finished);
}

void BM_Simulate(benchmark::State& state) { run(state, true); }
void BM_SimulateNoPrefixCache(benchmark::State& state) { run(state, false); }
void BM_SimulateMillion(benchmark::State& state) { run(state, true); }

}  // namespace

BENCHMARK(BM_Simulate)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SimulateNoPrefixCache)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SimulateMillion)->Arg(1000000)->Iterations(1)->Unit(benchmark::kSecond);

BENCHMARK_MAIN();
