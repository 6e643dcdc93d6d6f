// The sampler: greedy, penalties, filters, seeded draws and logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include <numeric>
#include <random>

#include "kernels/cpu/cpu.h"
#include "src/engine/sampler.h"
#include "troupe/kernel_registry.h"

namespace troupe {
namespace {

seq_work with(sampling_params p, std::vector<int32_t> history = {}, int32_t n_prompt = 0) {
  seq_work w;
  w.seq_id = 3;
  w.sampling = std::move(p);
  w.history = std::move(history);
  w.n_prompt = n_prompt;
  return w;
}

sampling_params temp(float t, uint64_t seed = 0) {
  sampling_params p;
  p.temperature = t;
  p.seed = seed;
  return p;
}

// logits whose softmax is exactly `probs`
std::vector<float> from_probs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back((float)std::log(p));
  return l;
}

TEST(Sampler, GreedyTakesTheArgmaxLowestIdOnTies) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  const seq_output o = sample_next(l, with(temp(0)));
  EXPECT_EQ(o.seq_id, 3u);
  EXPECT_EQ(o.token, 1);
  // logprob: log-softmax at temperature 1
  double z = 0;
  for (float x : l) z += std::exp(x);
  EXPECT_NEAR(o.logprob, 2.0 - std::log(z), 1e-5);
}

TEST(Sampler, TopKOneEqualsGreedy) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = (float)((i * 37) % 11);  // ties at the top
  sampling_params p = temp(1.5f);
  p.top_k = 1;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    p.seed = seed;
    EXPECT_EQ(sample_next(l, with(p)).token, sample_next(l, with(temp(0))).token);
  }
}

TEST(Sampler, SameSeedSameOutputDifferentSeedDiffers) {
  const std::vector<float> l(100, 0.0f);  // flat: every draw is the generator's
  auto run = [&](uint64_t seed) {
    std::vector<int32_t> history = {1, 2};  // a 2-token prompt, then what was generated
    for (int i = 0; i < 20; ++i) history.push_back(sample_next(l, with(temp(1.0f, seed), history, 2)).token);
    return history;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, DrawDependsOnlyOnSeedAndTokensGenerated) {
  const std::vector<float> l(100, 0.0f);
  // a resumed sequence: same seed, same count generated, different worker and history content
  const int32_t a = sample_next(l, with(temp(1.0f, 9), {5, 6, 7, 8}, 2)).token;
  const int32_t b = sample_next(l, with(temp(1.0f, 9), {1, 1, 1, 9, 9}, 3)).token;
  EXPECT_EQ(a, b);
  EXPECT_EQ(sampling_uniform(9, 2), sampling_uniform(9, 2));
  EXPECT_NE(sampling_uniform(9, 2), sampling_uniform(9, 3));
}

TEST(Sampler, DrawsFollowTheDistribution) {
  const auto l = from_probs({0.5, 0.3, 0.2});
  std::map<int32_t, int> n;
  for (uint64_t seed = 0; seed < 4000; ++seed) ++n[sample_next(l, with(temp(1.0f, seed))).token];
  EXPECT_NEAR(n[0] / 4000.0, 0.5, 0.03);
  EXPECT_NEAR(n[1] / 4000.0, 0.3, 0.03);
  EXPECT_NEAR(n[2] / 4000.0, 0.2, 0.03);
}

std::set<int32_t> drawn(const std::vector<float>& l, sampling_params p) {
  std::set<int32_t> s;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    p.seed = seed;
    s.insert(sample_next(l, with(p)).token);
  }
  return s;
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const auto l = from_probs({0.2, 0.5, 0.3});
  sampling_params p = temp(1.0f);
  p.top_p = 0.6f;
  EXPECT_EQ(drawn(l, p), (std::set<int32_t>{1, 2}));
  p.top_p = 0.5f;
  EXPECT_EQ(drawn(l, p), (std::set<int32_t>{1}));
  p.top_p = 1.0f;
  EXPECT_EQ(drawn(l, p), (std::set<int32_t>{0, 1, 2}));
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  const auto l = from_probs({0.2, 0.5, 0.3});
  sampling_params p = temp(1.0f);
  p.min_p = 0.5f;  // floor 0.25
  EXPECT_EQ(drawn(l, p), (std::set<int32_t>{1, 2}));
  p.min_p = 0.7f;  // floor 0.35
  EXPECT_EQ(drawn(l, p), (std::set<int32_t>{1}));
}

TEST(Sampler, TopKKeepsTheKBest) {
  const auto l = from_probs({0.1, 0.4, 0.15, 0.35});
  sampling_params p = temp(1.0f);
  p.top_k = 2;
  EXPECT_EQ(drawn(l, p), (std::set<int32_t>{1, 3}));
}

TEST(Sampler, RepetitionPenaltyOverTheWindow) {
  sampling_params p = temp(0);
  p.repetition_penalty = 1.1f;
  EXPECT_EQ(sample_next(std::vector<float>{2.0f, 1.9f}, with(p, {0})).token, 1);     // 2 / 1.1 < 1.9
  EXPECT_EQ(sample_next(std::vector<float>{-1.0f, -1.05f}, with(p, {0})).token, 1);  // -1 * 1.1 < -1.05
  p.repeat_window = 2;                                                               // 0 is out of the window
  EXPECT_EQ(sample_next(std::vector<float>{2.0f, 1.9f}, with(p, {0, 1, 1})).token, 0);
  // applied once per distinct token, however often it repeats
  p.repeat_window = 64;
  EXPECT_EQ(sample_next(std::vector<float>{2.0f, 1.9f, 1.85f}, with(p, {0, 0, 0, 0})).token, 1);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokensOnly) {
  const std::vector<float> l = {2.0f, 1.5f};
  sampling_params p = temp(0);
  p.frequency_penalty = 0.3f;
  EXPECT_EQ(sample_next(l, with(p, {0, 0, 0}, 3)).token, 0);  // all prompt: no penalty
  EXPECT_EQ(sample_next(l, with(p, {0, 0}, 1)).token, 0);     // once: 2 - 0.3 > 1.5
  EXPECT_EQ(sample_next(l, with(p, {1, 0, 0}, 1)).token, 1);  // twice: 2 - 0.6 < 1.5
  p.frequency_penalty = 0.0f;
  p.presence_penalty = 0.4f;
  EXPECT_EQ(sample_next(l, with(p, {1, 0, 0, 0}, 1)).token, 0);  // 2 - 0.4 > 1.5: presence counts once
  p.presence_penalty = 0.6f;
  EXPECT_EQ(sample_next(l, with(p, {1, 0}, 1)).token, 1);
  // the reported logprob is that of the penalized logits
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.3f;
  EXPECT_NEAR(sample_next(l, with(p, {1, 0, 0}, 1)).logprob, 1.5 - std::log(std::exp(1.4) + std::exp(1.5)), 1e-5);
}

TEST(Sampler, LogitBiasMovesTheChoiceAndMinTokensHoldsEndIdsBack) {
  const std::vector<float> l = {2.0f, 1.5f, 1.0f};
  sampling_params p = temp(0);
  p.logit_bias = {{1, 1.0f}};
  EXPECT_EQ(sample_next(l, with(p)).token, 1);  // 1.5 + 1 > 2
  p.logit_bias = {{0, -100.0f}, {7, 50.0f}};    // id 7 is outside this vocabulary: ignored
  EXPECT_EQ(sample_next(l, with(p)).token, 1);
  // Id 0 plays EOS: not drawn before two tokens are generated, then free again.
  p.logit_bias.clear();
  p.min_tokens = 2;
  p.end_ids = {0};
  EXPECT_EQ(sample_next(l, with(p, {2, 2}, 2)).token, 1);     // none generated yet
  EXPECT_EQ(sample_next(l, with(p, {2, 2, 1}, 2)).token, 1);  // one
  EXPECT_EQ(sample_next(l, with(p, {2, 2, 1, 1}, 2)).token, 0);
  // Sampling at a temperature never draws it either.
  p.temperature = 1.0f;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    p.seed = seed;
    EXPECT_NE(sample_next(l, with(p, {2}, 1)).token, 0) << "seed " << seed;
  }
}

TEST(Sampler, TopLogprobsAreSortedAndConsistent) {
  const auto l = from_probs({0.1, 0.4, 0.15, 0.35});
  sampling_params p = temp(0);
  p.top_logprobs = 3;
  const seq_output o = sample_next(l, with(p));
  ASSERT_EQ(o.top.size(), 3u);
  EXPECT_EQ(o.top[0].id, 1);
  EXPECT_EQ(o.top[1].id, 3);
  EXPECT_EQ(o.top[2].id, 2);
  EXPECT_NEAR(o.top[0].logprob, std::log(0.4), 1e-5);
  EXPECT_NEAR(o.logprob, o.top[0].logprob, 1e-6);
  EXPECT_NEAR(o.top[2].logprob, std::log(0.15), 1e-5);
}

TEST(Sampler, LowTemperatureConcentratesOnTheBest) {
  const auto l = from_probs({0.3, 0.4, 0.3});
  EXPECT_EQ(drawn(l, temp(0.01f)), (std::set<int32_t>{1}));
  EXPECT_EQ(drawn(l, temp(1.0f)).size(), 3u);
}

// top_p without top_k takes the nucleus from a partial selection grown 8-fold: over a peaked
// and a flat 32k vocabulary (nuclei of a few dozen and of thousands of tokens) every draw
// must be the one a full sort gives.
TEST(Sampler, NucleusFromAPartialSelectionEqualsAFullSort) {
  std::mt19937 rng(3);
  for (float spread : {6.0f, 0.05f}) {
    std::normal_distribution<float> d(0.0f, spread);
    std::vector<float> l(32000);
    for (float& x : l) x = d(rng);
    for (float top_p : {0.5f, 0.9f, 0.99f}) {
      for (uint64_t seed = 0; seed < 12; ++seed) {
        sampling_params p = temp(0.9f, seed);
        p.top_p = top_p;
        // the reference: every id sorted by logit (lowest id first on ties), then the
        // smallest prefix reaching top_p, then the seeded draw over it
        std::vector<int32_t> ids(l.size());
        std::iota(ids.begin(), ids.end(), 0);
        std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
        const float mx = l[ids[0]];
        double z = 0.0;
        for (int32_t id : ids) z += std::exp((l[id] - mx) / p.temperature);
        double cum = 0.0;
        size_t n = 0;
        while (n < ids.size() && cum < top_p) cum += std::exp((l[ids[n++]] - mx) / p.temperature) / z;
        double total = 0.0;
        for (size_t i = 0; i < n; ++i) total += std::exp((l[ids[i]] - mx) / p.temperature) / z;
        const double target = sampling_uniform(seed, 0) * total;
        double c = 0.0;
        int32_t want = ids[n - 1];
        for (size_t i = 0; i < n; ++i) {
          c += std::exp((l[ids[i]] - mx) / p.temperature) / z;
          if (target < c) {
            want = ids[i];
            break;
          }
        }
        EXPECT_EQ(sample_next(l, with(p)).token, want) << "spread " << spread << " top_p " << top_p << " seed " << seed;
      }
    }
  }
}

// Temperature without filters over a large vocabulary draws chunk by chunk from the argmax
// kernel's per-chunk masses: every draw must be the plain walk's, on a peaked and a flat
// 32k vocabulary with a tail that is not a whole chunk, at two temperatures.
TEST(Sampler, ChunkedDrawEqualsThePlainWalk) {
  kernel_registry reg;
  kern::cpu::register_all(reg);
  const sampler_kernels k{reg.get<troupe_argmax_fn>(TROUPE_OP_ARGMAX), nullptr};
  std::mt19937 rng(5);
  int differ = 0;
  for (float spread : {3.0f, 0.05f}) {
    std::normal_distribution<float> d(0.0f, spread);
    std::vector<float> l(32000 + 77);
    for (float& x : l) x = d(rng);
    for (float t : {0.7f, 1.3f})
      for (uint64_t seed = 0; seed < 60; ++seed) {
        const seq_work w = with(temp(t, seed));
        const seq_output plain = sample_next(l, w), chunked = sample_next(l, w, k);
        differ += plain.token != chunked.token;
        EXPECT_NEAR(chunked.logprob, plain.logprob, 1e-5);
      }
  }
  EXPECT_EQ(differ, 0) << "draws that differ between the chunked and the plain walk";
}

// The backends sample with the registry's argmax kernel: every CPU variant must choose what
// the scalar loop chooses and report the same log-probabilities, penalties and filters
// included, over a real vocabulary's width.
TEST(Sampler, ArgmaxKernelsSampleAsTheScalarLoopDoes) {
  kernel_registry reg;
  kern::cpu::register_all(reg);
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> l(32000);
  for (float& x : l) x = d(rng);
  l[17] = l[31000] = 14.0f;  // a tie for the best: the lowest id wins
  int checked = 0;
  for (const troupe_kernel_variant& v : reg.variants(TROUPE_OP_ARGMAX)) {
    const sampler_kernels k{reinterpret_cast<troupe_argmax_fn>(v.fn), nullptr};
    for (int filter = 0; filter < 3; ++filter) {  // greedy; top-k 40; top-p 0.9 (the nucleus's normalizer)
      const float t = filter == 0 ? 0.0f : 0.8f;
      sampling_params p = temp(t, 5);
      p.top_logprobs = 4;
      p.top_k = filter == 1 ? 40 : 0;
      p.top_p = filter == 2 ? 0.9f : 1.0f;
      for (float penalty : {1.0f, 1.3f}) {
        p.repetition_penalty = penalty;
        const seq_work w = with(p, {17, 5, 31000}, 1);
        const seq_output want = sample_next(l, w), got = sample_next(l, w, k);
        EXPECT_EQ(got.token, want.token) << v.name << " filter " << filter << " penalty=" << penalty;
        EXPECT_NEAR(got.logprob, want.logprob, 1e-5) << v.name;
        ASSERT_EQ(got.top.size(), want.top.size());
        for (size_t i = 0; i < want.top.size(); ++i) {
          EXPECT_EQ(got.top[i].id, want.top[i].id) << v.name;
          EXPECT_NEAR(got.top[i].logprob, want.top[i].logprob, 1e-5) << v.name;
        }
        if (t == 0 && penalty == 1.0f) EXPECT_EQ(got.token, 17);
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 6);  // the generic variant at least
}

}  // namespace
}  // namespace troupe
