// Scheduling throughput on one core: sequence-steps planned and applied per second with
// 256 sequences running on one replica (schedule() + on_result(), a trivial fake worker).
// Finished requests are replaced so the batch stays full; prompts are 128 tokens and
// outputs 512, so contexts range over 128..640 tokens as in a busy chat server.
// bm_decode_plan_bytes: the encoded size of a decode step's plan at long contexts.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>

#include "src/cluster/codec.h"
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

// What the scheduler sends a worker per decode step: `batch` sequences at `context` tokens
// each on one replica, after their prefill. Each timed iteration is one decode step:
// schedule(), the plan's encoding (its bytes are what crosses ZeroMQ) and on_result().
// plan_bytes is the first decode step's encoded size (every sequence at exactly `context`
// positions); the timed steps then grow each context by one token per step.
void bm_decode_plan_bytes(benchmark::State& st) {
  const auto context = static_cast<int32_t>(st.range(0));
  const auto batch = static_cast<int32_t>(st.range(1));
  constexpr int32_t kMaxTokens = 1024;
  policy_config cfg;
  cfg.max_step_tokens = 8192;
  cfg.max_queued = batch;
  policy p(cfg);
  replica_info ri;
  ri.block_size = 16;
  ri.kv_blocks = int64_t{batch} * ((context + kMaxTokens) / 16 + 1) + 64;
  ri.max_batch = batch;
  p.add_replica(ri, 0.0);
  for (int32_t i = 0; i < batch; ++i) {
    request r;
    r.id = static_cast<uint64_t>(i + 1);
    for (int32_t t = 0; t < context; ++t) r.prompt.push_back((i * 7919 + t * 31) % 30000 + 3);
    r.sampling.max_tokens = kMaxTokens;
    p.submit(std::move(r), 0.0);
  }
  double now = 0;
  step_result res;
  // One step planned and answered; returns the plan's encoded size and whether every
  // sequence of it was a decode.
  auto step = [&](bool& all_decode) {
    auto ps = p.schedule(0, now);
    if (!ps) return size_t{0};
    const size_t bytes = codec::encode(proto::control_message{ps->plan}).size();
    all_decode = static_cast<int32_t>(ps->plan.seqs.size()) == batch;
    res.step_id = ps->plan.step_id;
    res.outputs.resize(ps->plan.seqs.size());
    for (size_t i = 0; i < ps->plan.seqs.size(); ++i) {
      const seq_work& w = ps->plan.seqs[i];
      all_decode = all_decode && w.tokens.size() == 1;
      res.outputs[i].seq_id = w.seq_id;
      res.outputs[i].token = w.sample ? 100 + static_cast<int32_t>((w.seq_id + w.start_pos) % 1000) : -1;
    }
    p.on_result(0, res, now);
    now += 0.02;
    return bytes;
  };
  bool decoding = false;
  while (!decoding)  // the prefill chunks (their plans carry the prompts)
    if (step(decoding) == 0) {
      st.SkipWithError("nothing scheduled");
      return;
    }
  size_t first = 0, total = 0;
  int64_t steps = 0;
  for (auto _ : st) {
    bool all = false;
    const size_t bytes = step(all);
    if (!all) st.SkipWithError("a step that is not all decodes");
    if (steps == 0) first = bytes;
    total += bytes;
    ++steps;
  }
  st.counters["plan_bytes"] = static_cast<double>(first);
  st.counters["mean_plan_bytes"] = static_cast<double>(total) / static_cast<double>(std::max<int64_t>(steps, 1));
}
BENCHMARK(bm_decode_plan_bytes)
    ->ArgNames({"context", "batch"})
    ->Args({128, 1})
    ->Args({4096, 1})
    ->Args({32768, 1})
    ->Args({128, 32})
    ->Args({4096, 32})
    ->Args({32768, 32})
    ->Iterations(64)
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
