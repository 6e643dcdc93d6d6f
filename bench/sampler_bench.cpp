// The sampler per token: sample_next over a 32k and a 128k vocabulary, for greedy decoding
// (scalar and with the argmax kernel) and for the usual filters at temperature 0.8.
//   build/bench/bench_sampler [--benchmark_filter=...]
// Logits: normal with sd 10 ("sharp": a top-p 0.95 nucleus of a few tokens, as a trained
// model's confident steps give), sd 3 ("peaked": hundreds to thousands) or sd 0.05 ("flat":
// most of the vocabulary).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/make_registry.h"
#include "src/engine/sampler.h"
#include "troupe/kernel_registry.h"

namespace {

using namespace troupe;

std::vector<float> logits(int64_t vocab, float sd) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> l(vocab);
  for (float& x : l) x = d(rng);
  return l;
}

troupe_argmax_fn best_argmax() {
  static const auto reg = kern::make_kernel_registry({});
  return reg->get<troupe_argmax_fn>(TROUPE_OP_ARGMAX);
}

// args: vocab, sd * 100, mode (0 greedy scalar, 1 greedy kernel, 2 top_p 0.95, 3 top_k 40,
// 4 temperature only, 5 top_p 0.95 + repetition penalty)
void BM_sample(benchmark::State& state) {
  const auto l = logits(state.range(0), (float)state.range(1) / 100.0f);
  const int mode = (int)state.range(2);
  seq_work w;
  w.seq_id = 1;
  w.history = {1, 2, 3, 4, 5, 6, 7, 8};
  w.n_prompt = 4;
  sampling_params& p = w.sampling;
  if (mode >= 2) p.temperature = 0.8f;
  if (mode == 2 || mode == 5) p.top_p = 0.95f;
  if (mode == 3) p.top_k = 40;
  if (mode == 5) p.repetition_penalty = 1.1f;
  const sampler_kernels k{mode == 0 ? nullptr : best_argmax(), nullptr};
  uint64_t seed = 0;
  for (auto _ : state) {
    p.seed = seed++;
    benchmark::DoNotOptimize(sample_next(l, w, k));
  }
  static const char* names[] = {"greedy scalar", "greedy kernel", "top_p 0.95",
                                "top_k 40",      "temperature",   "top_p+penalty"};
  const int64_t sd = state.range(1);
  state.SetLabel(std::string(names[mode]) + (sd >= 1000 ? ", sharp" : sd >= 100 ? ", peaked" : ", flat"));
}

BENCHMARK(BM_sample)->ArgsProduct({{32000, 128256}, {1000, 300, 5}, {0, 1, 2, 3, 4, 5}})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
