// What a simulation run says: the per-request records (JSONL), a summary (table and
// JSON), and a self-contained HTML report with inline SVG plots.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "sim/simulator.h"

namespace troupe::sim {

// Service-level objectives. Goodput counts the finished requests meeting both per
// request; capacity search asks the p90 of each to meet it.
struct slo {
  double ttft = 1.0;   // seconds to the first token
  double tpot = 0.10;  // seconds per output token after the first
};

struct latency_stats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

struct tenant_summary {
  std::string name;
  int64_t requests = 0, finished = 0, rejected = 0;
  latency_stats ttft, tpot;
  double output_tok_s = 0;
};

struct summary {
  int64_t requests = 0, finished = 0, rejected = 0, unfinished = 0;
  int32_t replicas = 0;
  double duration = 0;  // first arrival to last finish, seconds
  latency_stats ttft, tpot, e2e;
  double output_tok_s = 0, input_tok_s = 0, req_s = 0;
  slo target;
  double goodput_req_s = 0;
  double slo_attainment = 0;  // share of all requests meeting both objectives
  double kv_util_mean = 0, kv_util_max = 0;
  int64_t preemptions = 0, steps = 0;
  double mean_batch = 0;
  double replica_busy = 0;  // share of replica time spent in steps
  std::vector<int64_t> batch_hist;
  std::vector<tenant_summary> tenants;  // filled when the workload has more than one
  std::string cost_model;
};

summary summarize(const sim_result& r, const slo& target);
std::string summary_table(const summary& s);
std::string summary_json(const summary& s);  // one JSON object, pretty-printed

// One JSON object per request: id, tenant, status, arrival, first_token, finish, ttft,
// tpot, e2e, prompt_tokens, output_tokens, generated, preemptions, replica.
void write_request_jsonl(const std::string& path, const sim_result& r);

// Writes one JSON object per step record: start, duration, replica, seqs, tokens,
// prefill_tokens, context, kv_util, queued. The file's steps also form a step profile
// (tokens, context, seqs, and time_s = duration) for `--cost-model fitted`.
class step_log {
 public:
  explicit step_log(const std::string& path);
  ~step_log();
  step_log(const step_log&) = delete;
  step_log& operator=(const step_log&) = delete;
  void write(const step_record& s);

 private:
  std::FILE* f_;
};

// Latency CDFs, throughput, queue length and KV utilization over time, the summary
// table; no script, no external resource.
void write_html_report(const std::string& path, const sim_result& r, const summary& s, const std::string& title);

// Quantile q in [0, 1] of unsorted values (linear interpolation); 0 when empty.
double quantile(std::vector<double> values, double q);

}  // namespace troupe::sim
