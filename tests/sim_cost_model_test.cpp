#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "sim/cluster.h"
#include "sim/cost_model.h"
#include "test_support.h"
#include "troupe/error.h"

using namespace troupe::sim;

namespace {

cluster_spec h100_llama3_8b(int tp = 1) {
  cluster_spec c;
  c.device = device_preset("h100");
  c.model = model_preset("llama-3-8b");
  c.n_devices = tp;
  c.tp = tp;
  return c;
}

step_shape decode_batch(int n, int64_t context) {
  step_shape s;
  for (int i = 0; i < n; ++i) s.seqs.push_back({1, context});
  return s;
}

std::filesystem::path temp_file(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("troupe_sim_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir / name;
}

}  // namespace

// ---- cluster ----------------------------------------------------------------------------

TEST(SimCluster, PresetsCarryThePublishedFigures) {
  EXPECT_DOUBLE_EQ(device_preset("h100").mem_bw, 3.35e12);
  EXPECT_DOUBLE_EQ(device_preset("H200").mem_bw, 4.8e12);
  EXPECT_DOUBLE_EQ(device_preset("a100").peak_flops, 312e12);
  EXPECT_DOUBLE_EQ(device_preset("l4").link_bw, 32e9);
  EXPECT_THROW(device_preset("cpu"), troupe::error);
  EXPECT_THROW(device_preset("tpu"), troupe::error);
}

TEST(SimCluster, ModelParameterCountsMatchTheirNames) {
  EXPECT_NEAR(model_preset("llama-3-8b").total_params(), 8.03e9, 0.05e9);
  EXPECT_NEAR(model_preset("llama-3-70b").total_params(), 70.6e9, 0.5e9);
  EXPECT_NEAR(model_preset("llama-3.2-1b").total_params(), 1.24e9, 0.03e9);
  EXPECT_NEAR(model_preset("llama-2-7b").total_params(), 6.74e9, 0.05e9);
}

TEST(SimCluster, KvCapacityIsMemoryLeftAfterWeights) {
  auto c = h100_llama3_8b();
  // 80 GB * 0.9 - 2 GB reserve - 16.06 GB weights = ~53.9 GB; 128 KiB per token in bf16.
  EXPECT_DOUBLE_EQ(c.kv_bytes_per_token(), 2.0 * 32 * 8 * 128 * 2);
  EXPECT_NEAR(double(c.kv_tokens_per_replica()), 53.9e9 / 131072, 2000);
  auto fp8 = c;
  fp8.kv_bytes = dtype_bytes("fp8");
  EXPECT_NEAR(double(fp8.kv_tokens_per_replica()), 2.0 * c.kv_tokens_per_replica(), 2);
  // Two devices hold one copy of the weights between them: more than twice the KV.
  auto tp2 = h100_llama3_8b(2);
  EXPECT_GT(tp2.kv_tokens_per_replica(), 2 * c.kv_tokens_per_replica());
}

TEST(SimCluster, ValidateNamesWhatIsWrong) {
  auto c = h100_llama3_8b();
  c.model = model_preset("llama-3-70b");
  try {
    c.validate();
    FAIL() << "70B in bf16 fits on one H100?";
  } catch (const troupe::error& e) {
    EXPECT_EQ(e.field(), "tp");
  }
  c.tp = 4;
  c.n_devices = 6;
  EXPECT_THROW(c.validate(), troupe::error);
  c.n_devices = 8;
  EXPECT_NO_THROW(c.validate());  // 141 GB of weights over 4 x 80 GB
  EXPECT_EQ(c.replicas(), 2);
  EXPECT_THROW(dtype_bytes("f12"), troupe::error);
}

// ---- roofline ---------------------------------------------------------------------------

TEST(SimRoofline, SingleStreamDecodeStaysUnderTheBandwidthBound) {
  roofline_model m(h100_llama3_8b());
  const auto one = decode_batch(1, 512);
  // Reading ~16 GB of bf16 weights per token at 3.35 TB/s: at most ~209 tokens/s.
  EXPECT_GT(m.bytes(one), 15e9);
  const double bound = 3.35e12 / 16.06e9;
  const double tok_s = 1.0 / m.step_time(one);
  EXPECT_LT(tok_s, bound);
  EXPECT_GT(tok_s, 0.5 * bound);  // eff_mem 0.8 and 1 ms overhead: ~150 tok/s
}

TEST(SimRoofline, BatchingAmortizesWeightsUntilComputeBound) {
  roofline_model m(h100_llama3_8b());
  const double t1 = m.step_time(decode_batch(1, 512));
  const double t64 = m.step_time(decode_batch(64, 512));
  EXPECT_LT(t64, 2 * t1);  // 64x the tokens for less than twice the time
  EXPECT_GT(t64, t1);      // more KV to read
  // A 4096-token prefill is compute bound: no faster than its FLOPs at the dense peak.
  step_shape prefill;
  prefill.seqs.push_back({4096, 0});
  const double t = m.step_time(prefill);
  EXPECT_GT(t, m.flops(prefill) / 989e12);
  EXPECT_GT(m.flops(prefill) / (989e12 * 0.6), m.bytes(prefill) / (3.35e12 * 0.8));
}

TEST(SimRoofline, TensorParallelSplitsWorkButPaysAllReduces) {
  roofline_model m1(h100_llama3_8b(1)), m2(h100_llama3_8b(2));
  const auto s = decode_batch(8, 1024);
  const double t1 = m1.step_time(s), t2 = m2.step_time(s);
  EXPECT_LT(t2, t1);
  EXPECT_GT(t2, 0.5 * (t1 - 1e-3));  // all-reduces and the fixed overhead do not shrink
}

// ---- fitted -----------------------------------------------------------------------------

namespace {

const std::array<double, 4> kTrue = {2e-3, 4e-5, 3e-8, 1.5e-4};

std::vector<measured_step> synthetic_steps(size_t n, double noise, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> seqs(1, 64), chunk(0, 512), ctx(0, 4000);
  std::normal_distribution<double> eps(0.0, noise);
  std::vector<measured_step> out;
  for (size_t i = 0; i < n; ++i) {
    measured_step m;
    m.seqs = seqs(rng);
    m.tokens = m.seqs + chunk(rng);
    m.context = m.seqs * ctx(rng);
    const double t = kTrue[0] + kTrue[1] * m.tokens + kTrue[2] * m.context + kTrue[3] * m.seqs;
    m.time_s = t * (1 + eps(rng));
    out.push_back(m);
  }
  return out;
}

}  // namespace

TEST(SimFitted, RecoversKnownCoefficients) {
  const auto exact = fitted_model::fit(synthetic_steps(500, 0.0, 7));
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(exact.coefficients()[i], kTrue[i], 1e-6 * kTrue[i]) << "coefficient " << i;
  EXPECT_LT(exact.rms_relative_error(synthetic_steps(100, 0.0, 8)), 1e-6);

  const auto noisy = fitted_model::fit(synthetic_steps(5000, 0.02, 9));
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(noisy.coefficients()[i], kTrue[i], 0.05 * kTrue[i]) << "coefficient " << i;
  step_shape s;
  s.seqs = {{1, 100}, {1, 200}, {128, 0}};
  EXPECT_NEAR(noisy.step_time(s), kTrue[0] + kTrue[1] * 130 + kTrue[2] * 300 + kTrue[3] * 3, 1e-4);
}

TEST(SimFitted, DecodeOnlyDataStillPredicts) {
  // tokens == seqs in every step: the two columns cannot be told apart, yet predictions hold.
  std::vector<measured_step> steps;
  for (int b = 1; b <= 32; ++b) steps.push_back({b, b * 700, b, 0.01 + 0.0005 * b + 1e-8 * b * 700});
  const auto m = fitted_model::fit(steps);
  EXPECT_LT(m.rms_relative_error(steps), 1e-4);
  EXPECT_THROW(fitted_model::fit({steps.begin(), steps.begin() + 3}), troupe::error);
}

TEST(SimFitted, ProfileFilesRoundTripInBothFormats) {
  step_profile p;
  p.meta.device = "cpu";
  p.meta.model = "llama-3.2-1b";
  p.meta.memory_bytes = 64e9;
  p.steps = synthetic_steps(20, 0.0, 3);
  const auto jsonl = temp_file("steps.jsonl");
  write_step_profile(jsonl.string(), p);
  const auto back = read_step_profile(jsonl.string());
  EXPECT_EQ(back.meta.model, "llama-3.2-1b");
  EXPECT_DOUBLE_EQ(back.meta.memory_bytes, 64e9);
  ASSERT_EQ(back.steps.size(), p.steps.size());
  EXPECT_EQ(back.steps[5].context, p.steps[5].context);
  EXPECT_DOUBLE_EQ(back.steps[5].time_s, p.steps[5].time_s);
  EXPECT_DOUBLE_EQ(profile_device(back.meta).memory_bytes, 64e9);

  const auto csv = temp_file("steps.csv");
  {
    std::ofstream out(csv);
    out << "# measured by hand\ntime_s,seqs,tokens,context,note\n0.01,1,1,100,a\n0.02,4,4,800,b\n";
  }
  const auto c = read_step_profile(csv.string());
  ASSERT_EQ(c.steps.size(), 2u);
  EXPECT_EQ(c.steps[1].tokens, 4);
  EXPECT_EQ(c.steps[1].context, 800);
  EXPECT_DOUBLE_EQ(c.steps[1].time_s, 0.02);
  EXPECT_THROW(profile_device(c.meta), troupe::error);  // a CSV carries no memory size

  {
    std::ofstream out(csv);
    out << "tokens,context,seqs,time_s\n1,100,1,fast\n";
  }
  try {
    read_step_profile(csv.string());
    FAIL() << "a non-number parsed";
  } catch (const troupe::error& e) {
    EXPECT_EQ(e.field(), "time_s");
    EXPECT_NE(std::string(e.what()).find(":2:"), std::string::npos) << e.what();
  }
}

TEST(SimCluster, ModelFilesGiveTheirShape) {
  TROUPE_REQUIRE_MODELS();
  const auto f = read_model_file((troupe::test::models_dir() / "stories260K" / "stories260K.gguf").string());
  EXPECT_EQ(f.shape.vocab_size, 512);
  EXPECT_GT(f.shape.n_layers, 0);
  EXPECT_EQ(f.shape.head_dim * f.shape.n_heads, f.shape.dim);
  EXPECT_NEAR(f.shape.total_params(), 260e3, 60e3);
  EXPECT_GT(f.weight_bytes, 0.0);
  EXPECT_THROW(read_model_file((troupe::test::models_dir() / "no-such-model.gguf").string()), troupe::error);
}

// ---- the control loop ---------------------------------------------------------------------

namespace {

// A synthetic serving step log: steps of a few sequences, each separated from the previous
// by `loop_s` (+ noise) when it carries a sequence over, by a long idle gap otherwise.
std::vector<measured_step> steps_with_loop(double loop_s, int n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> jitter(-0.5e-3, 0.5e-3);
  std::bernoulli_distribution idle(0.2);
  std::vector<measured_step> out;
  for (int i = 0; i < n; ++i) {
    measured_step m{4, 400, 4, 0.02};
    if (i == 0) {
      m.gap_s = -1;  // the first step has no previous result
    } else if (idle(rng)) {
      m.gap_s = 0.5 + jitter(rng);  // the replica was idle: nothing carried over
      m.carried = 0;
    } else {
      m.gap_s = loop_s + jitter(rng);
      m.carried = 3;
    }
    out.push_back(m);
  }
  return out;
}

}  // namespace

TEST(SimLoop, FitRecoversTheLoopLatencyAndIgnoresIdleGaps) {
  const auto f = fit_loop_latency(steps_with_loop(0.006, 2000, 5));
  EXPECT_GT(f.samples, 1400u);
  EXPECT_LT(f.samples, 1800u);
  EXPECT_NEAR(f.mean_s, 0.006, 0.1e-3);
  EXPECT_NEAR(f.median_s, 0.006, 0.2e-3);

  const auto none = fit_loop_latency(synthetic_steps(20, 0.0, 3));  // no gap fields: a bench profile
  EXPECT_EQ(none.samples, 0u);
  EXPECT_EQ(none.mean_s, 0.0);
}

TEST(SimLoop, StepLogFieldsRoundTripAndAreOptional) {
  step_profile p;
  p.meta.memory_bytes = 1e9;
  p.steps = steps_with_loop(0.004, 50, 6);
  const auto jsonl = temp_file("loop.jsonl");
  write_step_profile(jsonl.string(), p);
  const auto back = read_step_profile(jsonl.string());
  ASSERT_EQ(back.steps.size(), 50u);
  EXPECT_EQ(back.steps[0].gap_s, -1.0);
  EXPECT_DOUBLE_EQ(back.steps[7].gap_s, p.steps[7].gap_s);
  EXPECT_EQ(back.steps[7].carried, p.steps[7].carried);
  EXPECT_DOUBLE_EQ(fit_loop_latency(back.steps).mean_s, fit_loop_latency(p.steps).mean_s);
}

TEST(SimLoop, PeriodAddsTheLoopWhenSynchronousAndOverlapsItWhenPipelined) {
  cluster_spec c;
  EXPECT_DOUBLE_EQ(c.step_period(0.010, 1), 0.010);  // default: no loop
  c.loop_latency = 0.004;
  EXPECT_DOUBLE_EQ(c.step_period(0.010, 1), 0.014);
  EXPECT_DOUBLE_EQ(c.step_period(0.010, 2), 0.010);  // the policy's max_inflight_steps
  EXPECT_DOUBLE_EQ(c.step_period(0.003, 2), 0.004);
}

TEST(SimFitted, NoisyStepsStillAddUpToTheMeasuredTotal) {
  // Step times stretched by 0.6x..1.8x at random (a CPU shared with other processes): the
  // relative-error fit alone would predict well under the measured total.
  auto steps = synthetic_steps(3000, 0.0, 11);
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> stretch(0.6, 1.8);
  for (auto& s : steps) s.time_s *= stretch(rng);
  const auto c = fitted_model::fit(steps).coefficients();
  double measured = 0, predicted = 0;
  for (const auto& s : steps) {
    measured += s.time_s;
    predicted += c[0] + c[1] * double(s.tokens) + c[2] * double(s.context) + c[3] * double(s.seqs);
  }
  EXPECT_NEAR(predicted / measured, 1.0, 1e-9);
  // The shape is kept: per-token cost over intercept near the true ratio (noise aside).
  EXPECT_NEAR(c[1] / c[0], kTrue[1] / kTrue[0], 0.3 * kTrue[1] / kTrue[0]);
}

TEST(SimFitted, ServingLogsFitAbsoluteErrorsAndBothRecoverExactData) {
  auto steps = synthetic_steps(400, 0.0, 13);
  EXPECT_EQ(default_fit_error(steps), fit_error::relative);  // a profile grid: no gaps
  const auto abs = fitted_model::fit(steps, fit_error::absolute);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(abs.coefficients()[i], kTrue[i], 1e-6 * kTrue[i]) << "coefficient " << i;
  steps[3].gap_s = 0.001;  // one step from a serving worker's log
  EXPECT_EQ(default_fit_error(steps), fit_error::absolute);
}

TEST(SimFitted, CoefficientsStayNonNegative) {
  // t = 1 ms per token minus 2 ms: the unconstrained line has a negative intercept, which
  // would predict a small step to take no time at all.
  std::vector<measured_step> steps;
  for (int n = 10; n <= 100; n += 5) steps.push_back({n, 0, 1, 1e-3 * n - 2e-3});
  for (auto e : {fit_error::absolute, fit_error::relative}) {
    const auto m = fitted_model::fit(steps, e);
    for (int i = 0; i < 4; ++i) EXPECT_GE(m.coefficients()[i], 0.0) << "coefficient " << i;
    step_shape small;
    small.seqs = {{10, 0}};
    EXPECT_GT(m.step_time(small), 5e-3);  // ~8 ms measured; never ~0
  }
}
