// How long one step takes. Two models behind one interface: a roofline from a device's
// published figures, and a linear model fitted to step times measured on real workers
// (`troupe bench --profile`). The file format of measured steps is in docs/SIM.md.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sim/cluster.h"

namespace troupe::sim {

// One sequence's share of a step: `new_tokens` fed (a prefill chunk, or 1 to decode)
// on top of `context` tokens already in its KV cache.
struct seq_step {
  int32_t new_tokens = 0;
  int64_t context = 0;
};

struct step_shape {
  std::vector<seq_step> seqs;

  int64_t tokens() const;
  int64_t context_sum() const;
};

class cost_model {
 public:
  virtual ~cost_model() = default;
  // Seconds the replica is busy with this step (always > 0).
  virtual double step_time(const step_shape& s) const = 0;
  virtual std::string describe() const = 0;
};

// ---- roofline ----------------------------------------------------------------------
//   t = max(flops / (tp * peak * eff_compute), bytes / (tp * bw * eff_mem))
//       + 2 * n_layers * allreduce(tokens * dim * act_bytes) + step_overhead
//   allreduce(b) = 2 (tp-1)/tp * b / link_bw + link_latency       (ring; 0 when tp = 1)
//   flops = 2 * matmul_params * tokens + 4 * n_layers * n_heads * head_dim * sum_i n_i (c_i + (n_i+1)/2)
//   bytes = matmul_params * weight_bytes + kv_bytes_per_token * sum_i (c_i + n_i)

struct roofline_params {
  // Large BF16 GEMMs reach about 60-75% of the dense peak on Hopper; 0.6 is conservative.
  double eff_compute = 0.6;
  // Decode GEMVs and paged attention stream at about 75-85% of HBM bandwidth.
  double eff_mem = 0.8;
  // Scheduling, sampling, kernel launches and host-device copies per step (CUDA graphs on).
  double step_overhead = 1e-3;
  double act_bytes = 2.0;  // all-reduce payload element size (bf16 activations)
};

class roofline_model final : public cost_model {
 public:
  roofline_model(cluster_spec cluster, roofline_params p = {});
  double step_time(const step_shape& s) const override;
  std::string describe() const override;

  // The two sides of the roofline, for tests and reports.
  double flops(const step_shape& s) const;
  double bytes(const step_shape& s) const;

 private:
  cluster_spec c_;
  roofline_params p_;
  double matmul_params_;
  double attn_flops_per_pair_;  // 4 * n_layers * n_heads * head_dim
};

// ---- fitted ------------------------------------------------------------------------
//   t = c[0] + c[1] * tokens + c[2] * context_sum + c[3] * seqs      (least squares)

struct measured_step {
  int64_t tokens = 0;
  int64_t context = 0;  // sum over the step's sequences
  int64_t seqs = 0;
  double time_s = 0;
  // From a serving worker's step log (optional): seconds from this worker's previous
  // result sent to this plan received (-1: unknown, e.g. its first step), and how many of
  // this step's sequences were in the worker's previous step (> 0: work was waiting, so
  // the gap is the control loop's latency, not idleness).
  double gap_s = -1;
  int64_t carried = 0;
};

// What a profile file says about where it was measured (all optional).
struct profile_meta {
  std::string device = "cpu";
  std::string model;
  int32_t tp = 1;
  double memory_bytes = 0;  // per device; gives the "cpu" device its KV capacity
};

struct step_profile {
  profile_meta meta;
  std::vector<measured_step> steps;
};

// Reads a profile: JSONL (".jsonl"/".json") or CSV (anything else); see docs/SIM.md.
// Throws troupe::error naming the file, line and field on malformed input.
step_profile read_step_profile(const std::string& path);
void write_step_profile(const std::string& path, const step_profile& p);  // JSONL

// What the least squares minimize. `absolute`: each step's error in seconds, so the fit
// gets the total busy time of that very step mix right (a serving worker's step log: the
// mix the simulator replays). `relative`: each step's error as a share of its time (a grid
// of shapes from `troupe bench --profile`, whose many long prefills would otherwise decide).
enum class fit_error : unsigned char { absolute, relative };

// The profile's kind decides: a serving step log (its steps carry gap_s) fits absolute
// errors, anything else relative ones.
fit_error default_fit_error(const std::vector<measured_step>& steps);

class fitted_model final : public cost_model {
 public:
  explicit fitted_model(std::array<double, 4> coef) : c_(coef) {}
  // Least squares over the steps, then scaled so that the predicted times add up to the
  // measured total; throws when there are fewer than 4 or all are alike.
  static fitted_model fit(const std::vector<measured_step>& steps, fit_error e = fit_error::relative);

  double step_time(const step_shape& s) const override;
  std::string describe() const override;
  const std::array<double, 4>& coefficients() const { return c_; }
  // Root-mean-square relative error over the steps (how well the line fits them).
  double rms_relative_error(const std::vector<measured_step>& steps) const;

 private:
  std::array<double, 4> c_;  // intercept, per token, per context token, per sequence
};

// ---- the control loop -----------------------------------------------------------------
// The loop latency a step log shows: the mean gap between a result sent and the next plan
// received, over the steps that carried a sequence from the step before (work was waiting).

struct loop_fit {
  double mean_s = 0;  // 0 when there are no samples
  double median_s = 0;
  size_t samples = 0;
};
loop_fit fit_loop_latency(const std::vector<measured_step>& steps);

// The "cpu" device of a profile: only its memory matters (the fitted model gives time).
device_spec profile_device(const profile_meta& m);

}  // namespace troupe::sim
