#include "sim/cost_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sim/record_file.h"
#include "troupe/error.h"

namespace troupe::sim {

int64_t step_shape::tokens() const {
  int64_t n = 0;
  for (const auto& s : seqs) n += s.new_tokens;
  return n;
}

int64_t step_shape::context_sum() const {
  int64_t n = 0;
  for (const auto& s : seqs) n += s.context;
  return n;
}

// ---- roofline ----------------------------------------------------------------------

roofline_model::roofline_model(cluster_spec cluster, roofline_params p) : c_(std::move(cluster)), p_(p) {
  if (c_.device.peak_flops <= 0 || c_.device.mem_bw <= 0)
    throw error(error_kind::failed, "device '" + c_.device.name + "' has no peak FLOP/s or bandwidth for a roofline",
                "device");
  if (p_.eff_compute <= 0 || p_.eff_compute > 1 || p_.eff_mem <= 0 || p_.eff_mem > 1)
    throw error(error_kind::failed, "roofline efficiencies must be in (0, 1]", "eff");
  matmul_params_ = c_.model.matmul_params();
  attn_flops_per_pair_ = 4.0 * c_.model.n_layers * c_.model.n_heads * c_.model.head_dim;
}

double roofline_model::flops(const step_shape& s) const {
  double pairs = 0;  // (query, key) pairs attended, causal within the new tokens
  double tokens = 0;
  for (const auto& q : s.seqs) {
    tokens += q.new_tokens;
    pairs += double(q.new_tokens) * (double(q.context) + (q.new_tokens + 1) * 0.5);
  }
  return 2.0 * matmul_params_ * tokens + attn_flops_per_pair_ * pairs;
}

double roofline_model::bytes(const step_shape& s) const {
  double kv_tokens = 0;  // read (context) plus written (new)
  for (const auto& q : s.seqs) kv_tokens += double(q.context) + q.new_tokens;
  return matmul_params_ * c_.weight_bytes + c_.kv_bytes_per_token() * kv_tokens;
}

double roofline_model::step_time(const step_shape& s) const {
  const double tp = c_.tp;
  const double t_compute = flops(s) / (tp * c_.device.peak_flops * p_.eff_compute);
  const double t_mem = bytes(s) / (tp * c_.device.mem_bw * p_.eff_mem);
  double t_comm = 0;
  if (c_.tp > 1) {
    const double msg = double(s.tokens()) * c_.model.dim * p_.act_bytes;
    const double one = 2.0 * (tp - 1) / tp * msg / c_.device.link_bw + c_.device.link_latency;
    t_comm = 2.0 * c_.model.n_layers * one;
  }
  return std::max(t_compute, t_mem) + t_comm + p_.step_overhead;
}

std::string roofline_model::describe() const {
  std::ostringstream o;
  o << "roofline(" << c_.device.name << ", eff_compute " << p_.eff_compute << ", eff_mem " << p_.eff_mem
    << ", overhead " << p_.step_overhead * 1e3 << " ms)";
  return o.str();
}

// ---- profile files -------------------------------------------------------------------

step_profile read_step_profile(const std::string& path) {
  step_profile p;
  if (is_jsonl_path(path)) {  // the optional meta line
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("\"meta\"") == std::string::npos) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("meta") || !j["meta"].is_object()) continue;
      const auto& m = j["meta"];
      p.meta.device = m.value("device", p.meta.device);
      p.meta.model = m.value("model", p.meta.model);
      p.meta.tp = m.value("tp", p.meta.tp);
      p.meta.memory_bytes = m.value("memory_bytes", p.meta.memory_bytes);
      break;
    }
  }
  const std::vector<std::string> fields = {"tokens", "context", "seqs", "time_s", "gap_s", "carried"};
  for_each_record(path, fields, [&](const std::vector<std::string>& v, size_t line) {
    measured_step s;
    s.tokens = static_cast<int64_t>(record_number(v[0], path, line, fields[0]));
    s.context = static_cast<int64_t>(record_number(v[1], path, line, fields[1]));
    s.seqs = static_cast<int64_t>(record_number(v[2], path, line, fields[2]));
    s.time_s = record_number(v[3], path, line, fields[3]);
    if (!v[4].empty()) s.gap_s = record_number(v[4], path, line, fields[4]);
    if (!v[5].empty()) s.carried = static_cast<int64_t>(record_number(v[5], path, line, fields[5]));
    if (s.tokens < 1 || s.seqs < 1 || s.context < 0 || !(s.time_s > 0))
      throw error(error_kind::failed,
                  path + ":" + std::to_string(line) + ": expected tokens >= 1, seqs >= 1, context >= 0, time_s > 0",
                  "time_s");
    p.steps.push_back(s);
  });
  return p;
}

void write_step_profile(const std::string& path, const step_profile& p) {
  std::ofstream out(path);
  if (!out) throw error(error_kind::failed, "cannot write " + path, "file");
  nlohmann::json meta = {
      {"device", p.meta.device}, {"model", p.meta.model}, {"tp", p.meta.tp}, {"memory_bytes", p.meta.memory_bytes}};
  out << nlohmann::json{{"meta", meta}}.dump() << '\n';
  for (const auto& s : p.steps) {
    nlohmann::json j = {{"tokens", s.tokens}, {"context", s.context}, {"seqs", s.seqs}, {"time_s", s.time_s}};
    if (s.gap_s >= 0) {
      j["gap_s"] = s.gap_s;
      j["carried"] = s.carried;
    }
    out << j.dump() << '\n';
  }
}

loop_fit fit_loop_latency(const std::vector<measured_step>& steps) {
  std::vector<double> gaps;
  for (const auto& s : steps)
    if (s.carried > 0 && s.gap_s >= 0) gaps.push_back(s.gap_s);
  loop_fit f;
  f.samples = gaps.size();
  if (gaps.empty()) return f;
  double sum = 0;
  for (double g : gaps) sum += g;
  f.mean_s = sum / double(gaps.size());
  std::nth_element(gaps.begin(), gaps.begin() + gaps.size() / 2, gaps.end());
  f.median_s = gaps[gaps.size() / 2];
  return f;
}

device_spec profile_device(const profile_meta& m) {
  if (m.memory_bytes <= 0)
    throw error(error_kind::failed, "the profile's meta line gives no memory_bytes for device '" + m.device + "'",
                "memory_bytes");
  device_spec d;
  d.name = m.device;
  d.memory_bytes = m.memory_bytes;
  return d;
}

// ---- fitted ------------------------------------------------------------------------

namespace {

std::array<double, 4> features(double tokens, double context, double seqs) { return {1.0, tokens, context, seqs}; }

// Solves the normal equations `a` ((4, 4) matrix | right-hand side) restricted to the
// features in `mask`, the others held at 0; false when that system is singular.
bool solve_subset(const double a[4][5], unsigned mask, std::array<double, 4>& c) {
  int idx[4], n = 0;
  for (int i = 0; i < 4; ++i)
    if (mask >> i & 1u) idx[n++] = i;
  double m[4][5];  // (n, n) | rhs
  for (int r = 0; r < n; ++r) {
    for (int k = 0; k < n; ++k) m[r][k] = a[idx[r]][idx[k]];
    m[r][n] = a[idx[r]][4];
  }
  for (int col = 0; col < n; ++col) {  // Gaussian elimination, partial pivoting
    int piv = col;
    for (int r = col + 1; r < n; ++r)
      if (std::abs(m[r][col]) > std::abs(m[piv][col])) piv = r;
    if (std::abs(m[piv][col]) < 1e-300) return false;
    for (int k = 0; k <= n; ++k) std::swap(m[col][k], m[piv][k]);
    for (int r = 0; r < n; ++r) {
      if (r == col) continue;
      const double f = m[r][col] / m[col][col];
      for (int k = col; k <= n; ++k) m[r][k] -= f * m[col][k];
    }
  }
  c = {};
  for (int r = 0; r < n; ++r) c[idx[r]] = m[r][n] / m[r][r];
  return true;
}

}  // namespace

fit_error default_fit_error(const std::vector<measured_step>& steps) {
  for (const auto& s : steps)
    if (s.gap_s >= 0) return fit_error::absolute;
  return fit_error::relative;
}

fitted_model fitted_model::fit(const std::vector<measured_step>& steps, fit_error e) {
  if (steps.size() < 4)
    throw error(error_kind::failed,
                "a fitted cost model needs at least 4 measured steps, got " + std::to_string(steps.size()), "steps");
  // Normal equations on scaled columns: context sums are ~1e5 while the intercept is 1,
  // so scaling keeps the 4x4 system well conditioned.
  std::array<double, 4> scale = {1, 0, 0, 0};
  for (const auto& s : steps) {
    scale[1] = std::max(scale[1], double(s.tokens));
    scale[2] = std::max(scale[2], double(s.context));
    scale[3] = std::max(scale[3], double(s.seqs));
  }
  for (auto& v : scale) v = v > 0 ? v : 1.0;
  // Relative: weighted by 1 / time^2, so the many short decode steps (which set TPOT) count
  // as much as the rare long prefills of a profile grid; plain least squares let the
  // prefills decide and mispredicted decode steps several-fold. Absolute (a serving log):
  // unweighted; the step mix is the real one, and on noisy CPU steps the relative weights
  // skewed the per-sequence cost (simulated TPOT +24..+37% on three fidelity logs).
  double a[4][5] = {};  // (4, 4) normal matrix | right-hand side
  double yy = 0;        // weighted sum of squared times, for the residual of a solution
  for (const auto& s : steps) {
    if (!(s.time_s > 0))
      throw error(error_kind::failed, "a measured step has time_s " + std::to_string(s.time_s) + ", expected > 0",
                  "time_s");
    auto x = features(s.tokens, s.context, s.seqs);
    const double w = e == fit_error::relative ? 1.0 / (s.time_s * s.time_s) : 1.0;
    for (int i = 0; i < 4; ++i) x[i] /= scale[i];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) a[i][j] += w * x[i] * x[j];
      a[i][4] += w * x[i] * s.time_s;
    }
    yy += w * s.time_s * s.time_s;
  }
  // A tiny ridge so that a feature without variation (decode-only data has tokens ==
  // seqs) splits its weight instead of making the system singular.
  double trace = 0;
  for (int i = 0; i < 4; ++i) trace += a[i][i];
  for (int i = 0; i < 4; ++i) a[i][i] += 1e-10 * trace;
  // Every term is a cost, so no coefficient may be negative: least squares under c >= 0,
  // exactly, by trying every subset of features (16) and keeping the best solution with no
  // negative coefficient. Noisy serving steps otherwise gave a negative intercept or
  // per-context cost, and a lone decode step a predicted time of ~0.
  std::array<double, 4> c{};
  double best = 0;
  bool found = false;
  for (unsigned mask = 1; mask < 16; ++mask) {
    std::array<double, 4> t{};
    if (!solve_subset(a, mask, t) || *std::min_element(t.begin(), t.end()) < 0) continue;
    double sse = yy;  // sum w (x.t - y)^2 = yy - 2 t.b + t.A.t
    for (int i = 0; i < 4; ++i) {
      sse -= 2 * t[i] * a[i][4];
      for (int j = 0; j < 4; ++j) sse += t[i] * a[i][j] * t[j];
    }
    if (!found || sse < best) c = t, best = sse, found = true;
  }
  if (!found) throw error(error_kind::failed, "measured steps are all alike", "steps");
  for (int i = 0; i < 4; ++i) c[i] /= scale[i];
  // The relative-error fit is biased low when step times are noisy (minimizing
  // sum ((p - y) / y)^2 pulls p under the mean of y: with a CPU shared by other processes it
  // predicted 21% less busy time than the steps took). The simulator's latencies hang on the
  // replica's total busy time, so the shape stays and the scale makes the predictions add
  // up to the measured total.
  double measured = 0, predicted = 0;
  for (const auto& s : steps) {
    const auto x = features(s.tokens, s.context, s.seqs);
    measured += s.time_s;
    for (int i = 0; i < 4; ++i) predicted += c[i] * x[i];
  }
  if (predicted > 0)
    for (auto& v : c) v *= measured / predicted;
  return fitted_model(c);
}

double fitted_model::step_time(const step_shape& s) const {
  const auto x = features(double(s.tokens()), double(s.context_sum()), double(s.seqs.size()));
  double t = 0;
  for (int i = 0; i < 4; ++i) t += c_[i] * x[i];
  return std::max(t, 1e-6);  // a fit with a negative intercept must not stop the clock
}

double fitted_model::rms_relative_error(const std::vector<measured_step>& steps) const {
  if (steps.empty()) return 0;
  double sum = 0;
  for (const auto& s : steps) {
    const auto x = features(s.tokens, s.context, s.seqs);
    double t = 0;
    for (int i = 0; i < 4; ++i) t += c_[i] * x[i];
    const double rel = (t - s.time_s) / s.time_s;
    sum += rel * rel;
  }
  return std::sqrt(sum / steps.size());
}

std::string fitted_model::describe() const {
  std::ostringstream o;
  o << "fitted(t = " << c_[0] * 1e3 << " ms + " << c_[1] * 1e6 << " us/token + " << c_[2] * 1e9
    << " ns/context token + " << c_[3] * 1e6 << " us/seq)";
  return o.str();
}

}  // namespace troupe::sim
