// Scheduling throughput on one core: sequence-steps planned and applied per second with
// 256 sequences running on one replica (schedule() + on_result(), a trivial fake worker).
// Finished requests are replaced so the batch stays full; prompts are 128 tokens and
// outputs 512, so contexts range over 128..640 tokens as in a busy chat server.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "src/sched/policy.h"

namespace {

using namespace troupe;
using namespace troupe::sched;

request make(uint64_t id) {
  request r;
  r.id = id;
  r.tenant = id % 2 ? "a" : "b";
  for (int32_t i = 0; i < 128; ++i) r.prompt.push_back(static_cast<int32_t>((id * 131 + i) % 30000));
  r.sampling.max_tokens = 512;
  r.eos_ids = {2};
  return r;
}

void bm_schedule_256(benchmark::State& st) {
  policy_config cfg;
  cfg.max_step_tokens = 2048;
  cfg.max_queued = 100000;
  cfg.chunked_prefill = st.range(0) != 0;
  policy p(cfg);
  replica_info ri;
  ri.kv_blocks = 256 * (640 / 16) + 1024;
  ri.block_size = 16;
  ri.max_batch = 256;
  p.add_replica(ri, 0.0);
  uint64_t next_id = 1;
  double now = 0;
  step_result res;
  int64_t seq_steps = 0;
  for (auto _ : st) {
    while (p.running() + p.queued() < 256) p.submit(make(next_id++), now);
    auto ps = p.schedule(0, now);
    if (!ps) st.SkipWithError("nothing scheduled");
    res.step_id = ps->plan.step_id;
    res.outputs.resize(ps->plan.seqs.size());
    for (size_t i = 0; i < ps->plan.seqs.size(); ++i) {
      const seq_work& w = ps->plan.seqs[i];
      res.outputs[i].seq_id = w.seq_id;
      res.outputs[i].token = w.sample ? 100 + static_cast<int32_t>((w.seq_id + w.start_pos) % 1000) : -1;
    }
    auto evs = p.on_result(0, res, now);
    benchmark::DoNotOptimize(evs.data());
    seq_steps += static_cast<int64_t>(ps->plan.seqs.size());
    now += 0.02;
  }
  st.counters["seq_steps_per_s"] = benchmark::Counter(static_cast<double>(seq_steps), benchmark::Counter::kIsRate);
  st.counters["seqs_per_step"] = static_cast<double>(seq_steps) / static_cast<double>(st.iterations());
}
BENCHMARK(bm_schedule_256)->ArgName("chunked")->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
