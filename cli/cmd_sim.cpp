// troupe sim: the load simulator. Modes: run (one simulation), capacity (highest rate per
// replica within SLOs), cheapest (cheapest cluster for a target load), fit (fit a cost
// model to measured steps and say how well it fits). Every option can come from a TOML
// file given with --config (keys as the long option names, e.g. `rate = 12`).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/policy_flags.h"
#include "commands.h"
#include "src/sched/trace.h"
#include "sim/capacity.h"
#include "sim/cluster.h"
#include "sim/cost_model.h"
#include "sim/report.h"
#include "sim/simulator.h"
#include "sim/workload.h"
#include "troupe/error.h"

namespace troupe::cli {

namespace {

struct sim_args {
  std::string mode = "run";
  bool replay_with_flags = false;  // replay: the policy flags, not the trace's config line
  // cluster
  std::string device = "h100";
  int32_t count = 1;
  int32_t tp = 1;
  std::string model = "llama-3-8b";
  std::string model_file;
  std::string weight_dtype;  // empty: the model file's, else bf16
  std::string kv_dtype = "bf16";
  double mem_util = 0.90;
  double reserve_gb = 2.0;
  int32_t block_size = 16;
  int32_t max_batch = 256;
  std::string fit_error = "auto";  // auto: absolute for a serving step log (gap_s), else relative
  double loop_latency_ms = -1;     // < 0: the fitted profile's (mean gap while work waited), else 0
  sched::policy_config policy;     // the policy flags (cli/policy_flags.h)
  std::string policy_trace;
  // workload
  double rate = 10;
  std::string arrival = "poisson";
  double cv = 1.0;
  double burst_period = 0;
  int32_t burst_size = 0;
  std::string prompt_len = "lognormal:512:0.8";
  std::string output_len = "lognormal:128:0.8";
  std::string tenants = "default:1:0";
  int64_t requests = 0;  // 0: bounded by duration, or 1000 when neither is given
  double duration = 0;
  uint64_t seed = 1;
  std::string trace;
  std::string write_trace;
  // cost model
  std::vector<std::string> cost_model{"roofline"};
  double eff_compute = sim::roofline_params{}.eff_compute;
  double eff_mem = sim::roofline_params{}.eff_mem;
  double step_overhead_ms = sim::roofline_params{}.step_overhead * 1e3;
  // objectives and searches
  double slo_ttft = sim::slo{}.ttft;
  double slo_tpot = sim::slo{}.tpot;
  int64_t probe_requests = 1000;
  double probe_seconds = 30;
  int32_t iterations = 12;
  std::string candidates = "h100:1:2.99,h100:2:2.99,h200:1:3.79,a100:1:1.79,l4:1:0.80";
  double target_rate = 50;
  // outputs
  std::string out_jsonl;
  std::string steps_jsonl;
  std::string report_html;
  std::string summary_json;
  bool progress = false;
  bool no_progress = false;
};

// ---- building the pieces from the flags -----------------------------------------------

struct cost_choice {
  bool fitted = false;
  sim::step_profile profile;
  std::unique_ptr<sim::fitted_model> model;
  sim::fit_error error = sim::fit_error::relative;
  sim::roofline_params roofline;
};

cost_choice choose_cost(const sim_args& a) {
  cost_choice c;
  c.roofline.eff_compute = a.eff_compute;
  c.roofline.eff_mem = a.eff_mem;
  c.roofline.step_overhead = a.step_overhead_ms * 1e-3;
  const auto& m = a.cost_model;
  if (m.size() == 1 && m[0] == "roofline") return c;
  if (m.size() == 2 && m[0] == "fitted") {
    c.fitted = true;
    c.profile = sim::read_step_profile(m[1]);
    sim::fit_error e = sim::default_fit_error(c.profile.steps);
    if (a.fit_error == "absolute") e = sim::fit_error::absolute;
    if (a.fit_error == "relative") e = sim::fit_error::relative;
    c.error = e;
    c.model = std::make_unique<sim::fitted_model>(sim::fitted_model::fit(c.profile.steps, e));
    return c;
  }
  throw error(error_kind::failed, "--cost-model: expected 'roofline' or 'fitted FILE'", "cost-model");
}

sim::cluster_spec build_cluster(const sim_args& a, const cost_choice& cost, bool check = true) {
  sim::cluster_spec c;
  if (a.device == "cpu" || (cost.fitted && a.device == cost.profile.meta.device))
    c.device = sim::profile_device(cost.profile.meta);
  else
    c.device = sim::device_preset(a.device);
  c.n_devices = a.count;
  c.tp = a.tp;
  if (!a.model_file.empty()) {
    const auto f = sim::read_model_file(a.model_file);
    c.model = f.shape;
    c.weight_bytes = a.weight_dtype.empty() ? f.weight_bytes : sim::dtype_bytes(a.weight_dtype);
  } else {
    c.model = sim::model_preset(a.model);
    c.weight_bytes = sim::dtype_bytes(a.weight_dtype.empty() ? "bf16" : a.weight_dtype);
  }
  c.kv_bytes = sim::dtype_bytes(a.kv_dtype);
  c.mem_utilization = a.mem_util;
  c.reserve_bytes = a.reserve_gb * 1e9;
  c.block_size = a.block_size;
  c.max_batch = a.max_batch;
  if (a.loop_latency_ms >= 0)
    c.loop_latency = a.loop_latency_ms * 1e-3;
  else if (cost.fitted)
    c.loop_latency = sim::fit_loop_latency(cost.profile.steps).mean_s;
  if (check) c.validate();
  return c;
}

sim::cost_model_factory cost_factory(const cost_choice& cost) {
  if (cost.fitted) {
    const auto coef = cost.model->coefficients();
    return [coef](const sim::cluster_spec&) { return std::make_unique<sim::fitted_model>(coef); };
  }
  const auto p = cost.roofline;
  return [p](const sim::cluster_spec& c) { return std::make_unique<sim::roofline_model>(c, p); };
}

sim::workload_spec build_workload(const sim_args& a) {
  sim::workload_spec w;
  w.arrivals.type = a.arrival == "gamma" ? sim::arrival_spec::kind::gamma : sim::arrival_spec::kind::poisson;
  w.arrivals.rate = a.rate;
  w.arrivals.cv = a.cv;
  w.arrivals.burst_period = a.burst_period;
  w.arrivals.burst_size = a.burst_size;
  w.prompt = sim::parse_length_dist(a.prompt_len, "prompt-len");
  w.output = sim::parse_length_dist(a.output_len, "output-len");
  w.tenants = sim::parse_tenants(a.tenants);
  w.n_requests = a.requests == 0 && a.duration <= 0 ? 1000 : a.requests;
  w.duration = a.duration;
  w.seed = a.seed;
  return w;
}

sim::sim_options build_options(const sim_args& a) {
  sim::sim_options o;
  o.policy = a.policy;
  return o;
}

// A progress bar on stderr, redrawn when the shown percentage changes.
std::function<void(double)> progress_bar(const sim_args& a) {
  const bool show = a.progress || (!a.no_progress && isatty(STDERR_FILENO));
  if (!show) return {};
  auto last = std::make_shared<int>(-1);
  return [last](double f) {
    const int pct = int(f * 100);
    if (pct == *last) return;
    *last = pct;
    const int width = 40, fill = pct * width / 100;
    std::fprintf(stderr, "\rsimulating [%s%s] %3d%%", std::string(size_t(fill), '#').c_str(),
                 std::string(size_t(width - fill), ' ').c_str(), pct);
    if (pct >= 100) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
}

void write_text(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::cout << text << '\n';
    return;
  }
  std::ofstream out(path);
  if (!out) throw error(error_kind::failed, "cannot write " + path, "summary-json");
  out << text << '\n';
}

// ---- the modes ---------------------------------------------------------------------------

int run_once(const sim_args& a) {
  const auto cost = choose_cost(a);
  const auto cluster = build_cluster(a, cost);
  const auto make = cost_factory(cost);
  const auto model = make(cluster);
  const sim::workload load = a.trace.empty() ? sim::generate(build_workload(a)) : sim::read_trace(a.trace);
  if (!a.write_trace.empty()) sim::write_trace(a.write_trace, load);
  auto opts = build_options(a);
  opts.progress = progress_bar(a);
  opts.policy.trace = !a.policy_trace.empty();
  std::unique_ptr<sim::step_log> steps;
  if (!a.steps_jsonl.empty()) {
    steps = std::make_unique<sim::step_log>(a.steps_jsonl);
    opts.on_step = [&steps](const sim::step_record& r) { steps->write(r); };
  }
  std::fprintf(stderr, "troupe sim: %zu requests on %d x %s (tp %d, %d replica(s), %lld KV blocks each), %s\n",
               load.requests.size(), cluster.n_devices, cluster.device.name.c_str(), cluster.tp, cluster.replicas(),
               (long long)cluster.kv_blocks_per_replica(), model->describe().c_str());
  const auto result = sim::simulate(cluster, *model, load, opts);
  const auto s = sim::summarize(result, {a.slo_ttft, a.slo_tpot});
  std::cout << sim::summary_table(s);
  if (!a.out_jsonl.empty()) sim::write_request_jsonl(a.out_jsonl, result);
  if (!a.policy_trace.empty()) {
    std::ofstream out(a.policy_trace);
    if (!out) throw error(error_kind::failed, "cannot write " + a.policy_trace, "policy-trace");
    out << result.policy_trace;
  }
  if (!a.summary_json.empty()) write_text(a.summary_json, sim::summary_json(s));
  if (!a.report_html.empty())
    sim::write_html_report(a.report_html, result, s,
                           "troupe sim: " + cluster.model.name + " on " + std::to_string(cluster.n_devices) + " x " +
                               cluster.device.name + " (tp " + std::to_string(cluster.tp) + ")");
  return 0;
}

sim::capacity_options capacity_opts(const sim_args& a) {
  sim::capacity_options o;
  o.target = {a.slo_ttft, a.slo_tpot};
  o.requests_per_replica = a.probe_requests;
  o.probe_seconds = a.probe_seconds;
  o.iterations = a.iterations;
  o.log = [](const std::string& line) { std::fprintf(stderr, "  %s\n", line.c_str()); };
  return o;
}

int run_capacity(const sim_args& a) {
  const auto cost = choose_cost(a);
  const auto cluster = build_cluster(a, cost);
  const auto model = cost_factory(cost)(cluster);
  const auto r = sim::max_rate_per_replica(cluster, *model, build_workload(a), build_options(a), capacity_opts(a));
  std::printf("capacity: %.4g req/s per replica (%.4g req/s for %d replica(s)) at p90 TTFT <= %g s, p90 TPOT <= %g s\n",
              r.rate_per_replica, r.rate_per_replica * cluster.replicas(), cluster.replicas(), a.slo_ttft, a.slo_tpot);
  if (!a.summary_json.empty()) {
    nlohmann::json probes = nlohmann::json::array();
    for (const auto& p : r.probes)
      probes.push_back({{"rate_per_replica", p.rate_per_replica},
                        {"meets", p.meets},
                        {"ttft_p90_s", p.result.ttft.p90},
                        {"tpot_p90_s", p.result.tpot.p90}});
    write_text(a.summary_json, nlohmann::json{{"rate_per_replica", r.rate_per_replica},
                                              {"replicas", cluster.replicas()},
                                              {"slo_ttft_s", a.slo_ttft},
                                              {"slo_tpot_s", a.slo_tpot},
                                              {"probes", probes}}
                                   .dump(2));
  }
  return r.rate_per_replica > 0 ? 0 : 1;
}

int run_cheapest(const sim_args& a) {
  const auto cost = choose_cost(a);
  // The base cluster only carries the model, dtypes and memory settings: each candidate
  // sets device, tp and count (and is checked then).
  const auto base = build_cluster(a, cost, false);
  const auto rows = sim::cheapest_cluster(base, sim::parse_candidates(a.candidates), a.target_rate, build_workload(a),
                                          build_options(a), capacity_opts(a), cost_factory(cost));
  std::printf("target %g req/s at p90 TTFT <= %g s, p90 TPOT <= %g s\n", a.target_rate, a.slo_ttft, a.slo_tpot);
  std::printf("%-8s %3s %12s %9s %8s %10s  %s\n", "device", "tp", "req/s/repl", "replicas", "devices", "$/hour",
              "note");
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows) {
    std::printf("%-8s %3d %12.4g %9d %8d %10.2f  %s\n", r.candidate.device.c_str(), r.candidate.tp, r.rate_per_replica,
                r.replicas, r.devices, r.cost_per_hour, r.feasible ? "" : r.note.c_str());
    out.push_back({{"device", r.candidate.device},
                   {"tp", r.candidate.tp},
                   {"price_per_device_hour", r.candidate.price_per_device_hour},
                   {"rate_per_replica", r.rate_per_replica},
                   {"replicas", r.replicas},
                   {"devices", r.devices},
                   {"cost_per_hour", r.cost_per_hour},
                   {"feasible", r.feasible},
                   {"note", r.note}});
  }
  if (!a.summary_json.empty()) write_text(a.summary_json, out.dump(2));
  if (rows.empty() || !rows.front().feasible) return 1;
  std::printf("cheapest: %d x %s (tp %d), $%.2f/hour\n", rows.front().devices, rows.front().candidate.device.c_str(),
              rows.front().candidate.tp, rows.front().cost_per_hour);
  return 0;
}

int run_fit(const sim_args& a) {
  const auto cost = choose_cost(a);
  if (!cost.fitted) throw error(error_kind::failed, "troupe sim fit needs --cost-model fitted FILE", "cost-model");
  const auto& c = cost.model->coefficients();
  std::printf("%zu steps from %s (device %s, model %s, tp %d)\n", cost.profile.steps.size(), a.cost_model[1].c_str(),
              cost.profile.meta.device.c_str(), cost.profile.meta.model.c_str(), cost.profile.meta.tp);
  std::printf("%s (least squares on the %s error)\nrms relative error %.2f%%\n", cost.model->describe().c_str(),
              cost.error == sim::fit_error::absolute ? "absolute" : "relative",
              100 * cost.model->rms_relative_error(cost.profile.steps));
  const auto loop = sim::fit_loop_latency(cost.profile.steps);
  if (loop.samples > 0)
    std::printf(
        "control loop: %.3f ms mean (median %.3f ms) between a result and the next plan, over %zu steps "
        "that carried work\n",
        loop.mean_s * 1e3, loop.median_s * 1e3, loop.samples);
  else
    std::printf("control loop: no steps with gap_s and carried work in the profile; loop latency 0\n");
  if (!a.summary_json.empty())
    write_text(a.summary_json,
               nlohmann::json{{"intercept_s", c[0]},
                              {"per_token_s", c[1]},
                              {"per_context_token_s", c[2]},
                              {"per_seq_s", c[3]},
                              {"rms_relative_error", cost.model->rms_relative_error(cost.profile.steps)},
                              {"loop_latency_s", loop.mean_s},
                              {"loop_latency_median_s", loop.median_s},
                              {"loop_samples", loop.samples}}
                   .dump(2));
  return 0;
}

// A policy trace recorded by a real scheduler (troupe scheduler/serve --trace), replayed
// through a fresh policy built from the configuration the trace records (traces older than
// that line: from the policy flags, which must match the recorded run's): the same inputs
// at the same times must give the same decisions.
int run_replay(const sim_args& a) {
  if (a.trace.empty()) throw error(error_kind::failed, "replay needs --trace FILE (a recorded policy trace)", "trace");
  std::ifstream in(a.trace);
  if (!in) throw error(error_kind::failed, "cannot read " + a.trace, "trace");
  const auto report = sched::replay(in, build_options(a).policy, !a.replay_with_flags);
  if (!report.same) {
    std::printf("replay of %s: decisions differ after %zu lines: %s\n", a.trace.c_str(), report.lines,
                report.difference.c_str());
    return 1;
  }
  std::printf("replay of %s: %zu lines, the same decisions (policy configuration %s)\n", a.trace.c_str(), report.lines,
              report.recorded_config ? "recorded in the trace" : "from the flags");
  return 0;
}

}  // namespace

void add_sim(CLI::App& app) {
  auto a = std::make_shared<sim_args>();
  auto* s = app.add_subcommand("sim", "Load simulator on a virtual clock (the real scheduling policy, modelled steps)");
  add_config_flag(*s);  // expanded into flags before parsing (cli/common_flags.cpp)
  s->add_option("mode", a->mode, "run | capacity | cheapest | fit | replay")
      ->check(CLI::IsMember({"run", "capacity", "cheapest", "fit", "replay"}))
      ->capture_default_str();

  const char* cl = "Cluster";
  s->add_option("--device", a->device, "h100, h200, a100, l4, or cpu (from a fitted profile)")
      ->group(cl)
      ->capture_default_str();
  s->add_option("--count", a->count, "devices in the cluster")->group(cl)->capture_default_str();
  s->add_option("--tp", a->tp, "tensor-parallel size (devices per replica)")->group(cl)->capture_default_str();
  s->add_option("--model", a->model, "llama-3-8b, llama-3-70b, llama-3.2-1b, llama-2-7b")
      ->group(cl)
      ->capture_default_str();
  s->add_option("--model-file", a->model_file, "a GGUF file, HF directory or llama2.c checkpoint: its shape")
      ->group(cl);
  s->add_option("--weight-dtype", a->weight_dtype,
                "f32, bf16, fp8, int8, q8_0, q4_0, q4_k (default: the model file's, else bf16)")
      ->group(cl);
  s->add_option("--kv-dtype", a->kv_dtype, "KV cache element type")->group(cl)->capture_default_str();
  s->add_option("--mem-util", a->mem_util, "share of device memory for weights + KV")->group(cl)->capture_default_str();
  s->add_option("--reserve-gb", a->reserve_gb, "per-device memory kept for activations")
      ->group(cl)
      ->capture_default_str();
  s->add_option("--block-size", a->block_size, "tokens per KV block")->group(cl)->capture_default_str();
  s->add_option("--max-batch", a->max_batch, "sequences per step")->group(cl)->capture_default_str();
  s->add_option("--loop-latency-ms", a->loop_latency_ms,
                "control loop per step, result out to next plan in (default: the fitted profile's, else 0)")
      ->group(cl);

  // The step period follows --max-inflight-steps: 1 = synchronous (compute + loop), >= 2 =
  // pipelined (max(compute, loop)).
  add_policy_flags(*s, a->policy);

  const char* wl = "Workload";
  s->add_option("--rate", a->rate, "arrivals per second, whole cluster")->group(wl)->capture_default_str();
  s->add_option("--arrival", a->arrival, "poisson | gamma")
      ->check(CLI::IsMember({"poisson", "gamma"}))
      ->group(wl)
      ->capture_default_str();
  s->add_option("--cv", a->cv, "gamma: coefficient of variation of inter-arrival times")
      ->group(wl)
      ->capture_default_str();
  s->add_option("--burst-period", a->burst_period, "seconds between bursts (0 = none)")->group(wl);
  s->add_option("--burst-size", a->burst_size, "requests arriving at once in a burst")->group(wl);
  s->add_option("--prompt-len", a->prompt_len, "fixed:N | uniform:LO:HI | lognormal:MEAN:SIGMA | empirical:FILE")
      ->group(wl)
      ->capture_default_str();
  s->add_option("--output-len", a->output_len, "same forms as --prompt-len")->group(wl)->capture_default_str();
  s->add_option("--tenants", a->tenants, "name:weight:priority:share,... (share of arrivals, priority, fair share)")
      ->group(wl)
      ->capture_default_str();
  s->add_option("--requests", a->requests, "request count (default: 1000 unless --duration bounds the run)")->group(wl);
  s->add_option("--duration", a->duration, "seconds of arrivals (0 = bounded by --requests)")->group(wl);
  s->add_option("--seed", a->seed, "seed of every draw")->group(wl)->capture_default_str();
  s->add_option("--trace", a->trace, "replay a trace (CSV or JSONL) instead of generating")->group(wl);
  s->add_option("--write-trace", a->write_trace, "save the workload as a trace")->group(wl);

  const char* cm = "Cost model";
  s->add_option("--cost-model", a->cost_model, "roofline | fitted FILE")
      ->expected(1, 2)
      ->group(cm)
      ->capture_default_str();
  s->add_option("--fit-error", a->fit_error,
                "fitted: what least squares minimize: absolute (seconds; default for a serving step log) or "
                "relative (share of each step; default for a bench --profile grid)")
      ->check(CLI::IsMember({"auto", "absolute", "relative"}))
      ->group(cm)
      ->capture_default_str();
  s->add_option("--eff-compute", a->eff_compute, "roofline: share of peak FLOP/s reached")
      ->group(cm)
      ->capture_default_str();
  s->add_option("--eff-mem", a->eff_mem, "roofline: share of memory bandwidth reached")
      ->group(cm)
      ->capture_default_str();
  s->add_option("--step-overhead-ms", a->step_overhead_ms, "roofline: fixed cost per step")
      ->group(cm)
      ->capture_default_str();

  const char* sl = "Objectives and searches";
  s->add_option("--slo-ttft", a->slo_ttft, "seconds to first token")->group(sl)->capture_default_str();
  s->add_option("--slo-tpot", a->slo_tpot, "seconds per output token")->group(sl)->capture_default_str();
  s->add_option("--probe-requests", a->probe_requests, "capacity: requests per replica per probe")
      ->group(sl)
      ->capture_default_str();
  s->add_option("--probe-seconds", a->probe_seconds, "capacity: seconds of arrivals per probe at least")
      ->group(sl)
      ->capture_default_str();
  s->add_option("--iterations", a->iterations, "capacity: bisection steps")->group(sl)->capture_default_str();
  s->add_option("--candidates", a->candidates,
                "cheapest: DEVICE:TP:PRICE_PER_DEVICE_HOUR,... (the default prices are placeholders)")
      ->group(sl)
      ->capture_default_str();
  s->add_option("--target-rate", a->target_rate, "cheapest: req/s the cluster must carry")
      ->group(sl)
      ->capture_default_str();

  const char* out = "Outputs";
  s->add_option("--out-jsonl", a->out_jsonl, "per-request records")->group(out);
  s->add_option("--steps-jsonl", a->steps_jsonl, "one record per step (also a step profile)")->group(out);
  s->add_option("--report-html", a->report_html, "self-contained HTML report")->group(out);
  s->add_option("--summary-json", a->summary_json, "summary as JSON ('-' = stdout)")->group(out);
  s->add_option("--policy-trace", a->policy_trace, "the policy's decision trace (JSONL; replayable)")->group(out);
  s->add_flag("--with-flags", a->replay_with_flags,
              "replay: build the policy from the policy flags instead of the configuration the trace records "
              "(does the trace still replay under other settings?)");
  s->add_flag("--progress", a->progress, "progress bar on stderr even when it is not a terminal")->group(out);
  s->add_flag("--no-progress", a->no_progress, "no progress bar")->group(out);

  s->callback([a, s] {
    set_runner([a, s]() -> int {
      if (a->mode == "capacity") return run_capacity(*a);
      if (a->mode == "cheapest") return run_cheapest(*a);
      if (a->mode == "fit") return run_fit(*a);
      if (a->mode == "replay") return run_replay(*a);
      return run_once(*a);
    });
  });
}

}  // namespace troupe::cli
