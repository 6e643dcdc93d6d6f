// troupe bench: real load against a gateway, and step profiles of a local worker.
//
// Load mode (default): requests from a seeded workload (the simulator's generators: Poisson
// or Gamma arrivals at --rate, or --concurrency N jobs in flight, prompt and output length
// distributions, tenants) or from a recorded trace, sent as token-id prompts with
// ignore_eos so that each job generates exactly its output length. Reports TTFT, TPOT and
// end-to-end latency (p50/p90/p99, measured at the client), tokens/s, requests/s and
// goodput at an SLO, per tenant too; writes per-request JSONL and the arrivals actually
// sent as a trace the simulator replays (--record-trace).
//
// Profile mode (--profile OUT.jsonl --model F): measures the step time of a local CPU
// worker over a grid of step shapes (prefill chunks, decode batches, context lengths) and
// writes the step-profile format that `troupe sim --cost-model fitted` fits.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actors/client.h"
#include "actors/http_client.h"
#include "commands.h"
#include "kernels/make_registry.h"
#include "sim/report.h"
#include "sim/workload.h"
#include "src/engine/cpu_backend.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace troupe::cli {

namespace {

using clock_type = std::chrono::steady_clock;

struct bench_args {
  // load
  std::string gateway = "tcp://127.0.0.1:5555";
  std::string http;   // the OpenAI-compatible API instead (HOST:PORT): /v1/completions, streamed
  std::string model;  // the gateway's model name (empty: its default)
  double rate = 0;    // requests/s (open loop); 0 with --concurrency
  int concurrency = 0;
  std::string arrival = "poisson";
  double cv = 1.0;
  int64_t requests = 100;
  double duration = 0;
  std::string prompt_len = "fixed:64", output_len = "fixed:32";
  std::string tenants = "default";
  std::string trace;  // replay this workload instead of generating one
  uint64_t seed = 1;
  int32_t vocab = 256;  // prompt ids are drawn from [3, vocab)
  double slo_ttft_ms = 1000, slo_tpot_ms = 100;
  int timeout_s = 600;
  std::string out_jsonl, summary_json, report_html, record_trace;
  // profile
  std::string profile_out, profile_model;
  int threads = (int)std::max(1u, std::thread::hardware_concurrency());
  int profile_reps = 2;
};

double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

// ---- load mode -------------------------------------------------------------------------

sim::workload make_workload(const bench_args& a) {
  if (!a.trace.empty()) return sim::read_trace(a.trace);
  sim::workload_spec spec;
  spec.arrivals.type = a.arrival == "gamma" ? sim::arrival_spec::kind::gamma : sim::arrival_spec::kind::poisson;
  spec.arrivals.rate = a.rate > 0 ? a.rate : 1.0;  // closed loop ignores arrival times
  spec.arrivals.cv = a.cv;
  spec.prompt = sim::parse_length_dist(a.prompt_len, "prompt-len");
  spec.output = sim::parse_length_dist(a.output_len, "output-len");
  spec.tenants = sim::parse_tenants(a.tenants);
  spec.n_requests = a.requests;
  spec.duration = a.duration;
  spec.seed = a.seed;
  return sim::generate(spec);
}

struct in_flight {
  size_t index;  // into the workload
  actors::job_result result;
};

int run_load(const bench_args& a) {
  if ((a.rate > 0) == (a.concurrency > 0) && a.trace.empty())
    throw error(error_kind::failed, "troupe bench: give exactly one of --rate R (open loop) or --concurrency N",
                "rate");
  if (a.vocab < 4) throw error(error_kind::failed, "--vocab: expected at least 4", "vocab");
  sim::workload w = make_workload(a);
  const size_t n = w.requests.size();
  const std::string front = a.http.empty() ? a.gateway : "http://" + a.http + "/v1/completions";
  spdlog::info("bench: {} requests against {} ({})", n, front,
               a.concurrency > 0 ? std::to_string(a.concurrency) + " in flight"
                                 : "open loop at " + std::to_string(a.rate) + " req/s");

  // One front door or the other: the Cap'n Proto socket, or HTTP with SSE streams.
  std::unique_ptr<actors::gateway_client> zmq;
  std::unique_ptr<actors::http_load_client> web;
  if (a.http.empty())
    zmq = std::make_unique<actors::gateway_client>(a.gateway);
  else
    web = std::make_unique<actors::http_load_client>(a.http);
  std::mt19937_64 rng(a.seed ^ 0x9e3779b97f4a7c15ull);
  std::uniform_int_distribution<int32_t> tok(3, a.vocab - 1);

  sim::sim_result res;
  res.tenants = w.tenants;
  res.replicas = 1;
  res.requests.resize(n);
  std::map<std::string, in_flight> open;
  size_t next = 0, done = 0;
  const auto t0 = clock_type::now();
  auto last_progress = t0;

  auto submit = [&](size_t i) {
    const sim::sim_request& r = w.requests[i];
    const sim::tenant_spec& t = w.tenants[r.tenant];
    proto::job j;
    j.client_request_id = "bench-" + std::to_string(r.id);
    j.model = a.model;
    j.prompt_is_ids = true;
    j.prompt_ids.push_back(1);  // BOS of Llama-family vocabularies
    for (int32_t k = 1; k < r.prompt_tokens; ++k) j.prompt_ids.push_back(tok(rng));
    j.sampling.max_tokens = r.output_tokens;
    j.sampling.ignore_eos = true;
    j.priority = t.priority;
    j.api_key = t.name;  // the gateway maps an API key to its tenant
    auto& rec = res.requests[i];
    rec.id = r.id;
    rec.tenant = r.tenant;
    rec.prompt_tokens = r.prompt_tokens;
    rec.output_tokens = r.output_tokens;
    rec.arrival = since(t0);
    if (zmq) {
      zmq->submit(j);
    } else {
      nlohmann::json body = {{"prompt", j.prompt_ids}, {"max_tokens", j.sampling.max_tokens},
                             {"ignore_eos", true},     {"temperature", 0},
                             {"stream", true},         {"stream_options", {{"include_usage", true}}}};
      if (!a.model.empty()) body["model"] = a.model;
      web->submit(j.client_request_id, "/v1/completions", body.dump(), t.name);
    }
    open[j.client_request_id] = {i, actors::job_result{j.client_request_id}};
  };
  // A job's end, from either front door.
  auto finish = [&](std::map<std::string, in_flight>::iterator it, bool ok, int32_t generated, const std::string& why) {
    auto& rec = res.requests[it->second.index];
    rec.finish = since(t0);
    rec.generated = generated;
    rec.status = ok ? sim::request_status::finished : sim::request_status::rejected;
    if (!ok) spdlog::debug("bench: {} failed: {}", it->first, why);
    open.erase(it);
    ++done;
  };

  const double deadline = a.timeout_s;
  while (done < n) {
    // Submit what is due: by arrival time (open loop) or to keep N in flight.
    if (a.concurrency > 0) {
      while (next < n && open.size() < (size_t)a.concurrency) submit(next++);
    } else {
      while (next < n && w.requests[next].arrival <= since(t0)) submit(next++);
    }
    int wait_ms = 50;
    if (a.concurrency == 0 && next < n)
      wait_ms = std::clamp((int)((w.requests[next].arrival - since(t0)) * 1000), 0, 50);
    if (zmq) {
      if (auto msg = zmq->receive(wait_ms)) {
        const std::string id = std::visit([](const auto& m) { return m.client_request_id; }, *msg);
        auto it = open.find(id);
        if (it != open.end()) {
          auto& rec = res.requests[it->second.index];
          if (std::holds_alternative<proto::token_chunk>(*msg) && rec.first_token < 0) rec.first_token = since(t0);
          if (actors::apply_message(it->second.result, *msg)) {
            const auto& jr = it->second.result;
            if (jr.index_gap) spdlog::warn("bench: {} had a gap or duplicate in its token indices", id);
            finish(it, jr.ok, (int32_t)jr.ids.size(), std::string(to_string(jr.error.kind)) + ": " + jr.error.message);
          }
        }
      }
    } else if (auto ev = web->next(wait_ms)) {
      auto it = open.find(ev->id);
      if (it != open.end()) {
        auto& rec = res.requests[it->second.index];
        using kind = actors::http_load_client::event::kind;
        if (ev->what == kind::chunk && rec.first_token < 0) rec.first_token = since(t0);
        if (ev->what == kind::done) finish(it, true, (int32_t)ev->completion_tokens, "");
        if (ev->what == kind::error) finish(it, false, 0, "HTTP " + std::to_string(ev->status) + ": " + ev->message);
      }
    }
    if (since(last_progress) >= 1.0) {
      last_progress = clock_type::now();
      std::fprintf(stderr, "\rbench: %zu/%zu done, %zu in flight, %.0f s", done, n, open.size(), since(t0));
    }
    if (since(t0) > deadline)
      throw error(error_kind::disconnected, "troupe bench: " + std::to_string(n - done) +
                                                " requests still open after --timeout " + std::to_string(a.timeout_s) +
                                                " s");
  }
  std::fprintf(stderr, "\rbench: %zu/%zu done in %.1f s%20s\n", done, n, since(t0), "");
  res.end_time = since(t0);

  sim::slo target{a.slo_ttft_ms / 1000.0, a.slo_tpot_ms / 1000.0};
  const sim::summary s = sim::summarize(res, target);
  std::printf("requests   %lld (finished %lld, rejected %lld) in %.1f s against %s\n", (long long)s.requests,
              (long long)s.finished, (long long)s.rejected, s.duration, front.c_str());
  std::printf("latency (s)      mean       p50       p90       p99       max\n");
  auto row = [](const char* name, const sim::latency_stats& l) {
    std::printf("%s%10.4f%10.4f%10.4f%10.4f%10.4f\n", name, l.mean, l.p50, l.p90, l.p99, l.max);
  };
  row("TTFT       ", s.ttft);
  row("TPOT       ", s.tpot);
  row("end-to-end ", s.e2e);
  std::printf("throughput %.1f output tok/s, %.1f prompt tok/s, %.3f req/s\n", s.output_tok_s, s.input_tok_s, s.req_s);
  std::printf("goodput    %.3f req/s at TTFT <= %.3f s and TPOT <= %.3f s (%.1f%% of requests)\n", s.goodput_req_s,
              target.ttft, target.tpot, 100 * s.slo_attainment);
  if (s.tenants.size() > 1) {
    std::printf("tenant            requests  finished  rejected  TTFT p50  TPOT p90   out tok/s\n");
    for (const auto& t : s.tenants)
      std::printf("%-16s %9lld %9lld %9lld %9.4f %9.4f %11.1f\n", t.name.c_str(), (long long)t.requests,
                  (long long)t.finished, (long long)t.rejected, t.ttft.p50, t.tpot.p90, t.output_tok_s);
  }
  if (!a.summary_json.empty()) std::ofstream(a.summary_json) << sim::summary_json(s) << '\n';
  if (!a.out_jsonl.empty()) sim::write_request_jsonl(a.out_jsonl, res);
  if (!a.report_html.empty()) sim::write_html_report(a.report_html, res, s, "troupe bench against " + front);
  if (!a.record_trace.empty()) {
    // The arrivals as actually sent, for `troupe sim --trace` (fidelity checks).
    sim::workload sent = w;
    for (size_t i = 0; i < n; ++i) sent.requests[i].arrival = res.requests[i].arrival;
    sim::write_trace(a.record_trace, sent);
  }
  return s.finished == s.requests ? 0 : 1;
}

// ---- profile mode ----------------------------------------------------------------------

int run_profile(const bench_args& a) {
  if (a.profile_model.empty())
    throw error(error_kind::failed, "--profile needs --model-file F (the model to measure)", "model-file");
  auto model = open_model(a.profile_model);
  const auto reg = kern::make_kernel_registry({});
  const auto& cfg = model->config();
  const int32_t bs = 16;
  // The grid: decode batches x context lengths, and prefill chunks x context lengths.
  const std::vector<int> batches{1, 2, 4, 8, 16, 32};
  const std::vector<int> contexts{16, 128, 384};
  const std::vector<int> chunks{16, 64, 128, 256, 512};
  const int max_ctx = 384 + 512 + 1;
  const int blocks_per_seq = (max_ctx + bs - 1) / bs;
  const int max_seqs = 32;
  cpu_backend_options opt;
  opt.n_threads = a.threads;
  opt.block_size = bs;
  opt.max_batch_tokens = 512 + max_seqs;
  opt.kv_bytes = (int64_t)max_seqs * blocks_per_seq * bs * cfg.n_kv_heads * cfg.head_dim * 4 * 2 * cfg.n_layers;
  cpu_backend backend(*model, *reg, opt);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(3, (int32_t)cfg.vocab_size - 1);

  std::ofstream out(a.profile_out);
  if (!out) throw error(error_kind::failed, "--profile: cannot write " + a.profile_out, "profile");
  out << nlohmann::json{{"meta",
                         {{"device", "cpu"},
                          {"model", a.profile_model},
                          {"tp", 1},
                          {"threads", a.threads},
                          {"memory_bytes", (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE)}}}}
             .dump()
      << '\n';

  // A step of `seqs` sequences, each feeding `fed` tokens at position `ctx` (the KV before
  // it is whatever the pool holds: timing does not depend on its values).
  auto measure = [&](int seqs, int fed, int ctx) {
    step_plan plan;
    for (int s = 0; s < seqs; ++s) {
      seq_work w;
      w.seq_id = (uint64_t)s + 1;
      for (int i = 0; i < fed; ++i) w.tokens.push_back(tok(rng));
      w.start_pos = ctx;
      for (int b = 0; b < (ctx + fed + bs - 1) / bs; ++b) w.block_table.push_back(s * blocks_per_seq + b);
      plan.seqs.push_back(std::move(w));
    }
    double best = 1e30;
    for (int r = 0; r < a.profile_reps; ++r) {
      const auto t0 = clock_type::now();
      backend.step(plan);
      best = std::min(best, since(t0));
    }
    out << nlohmann::json{{"tokens", seqs * fed}, {"context", (int64_t)seqs * ctx}, {"seqs", seqs}, {"time_s", best}}
               .dump()
        << '\n';
  };
  const size_t total = batches.size() * contexts.size() + chunks.size() * contexts.size();
  size_t k = 0;
  for (int ctx : contexts) {
    for (int b : batches) {
      measure(b, 1, ctx);
      std::fprintf(stderr, "\rprofile: %zu/%zu step shapes", ++k, total);
    }
    for (int c : chunks) {
      measure(1, c, ctx);
      std::fprintf(stderr, "\rprofile: %zu/%zu step shapes", ++k, total);
    }
  }
  std::fprintf(stderr, "\rprofile: %zu step shapes written to %s\n", total, a.profile_out.c_str());
  return 0;
}

}  // namespace

void add_bench(CLI::App& app) {
  auto a = std::make_shared<bench_args>();
  auto* sub = app.add_subcommand("bench", "Real load against a gateway (or --profile: step times of a local worker)");
  sub->add_option("--gateway", a->gateway, "Gateway address")->capture_default_str();
  sub->add_option("--http", a->http,
                  "Load the OpenAI-compatible HTTP API at HOST:PORT instead (streamed /v1/completions, one "
                  "connection per job)");
  sub->add_option("--model", a->model, "Model name at the gateway (empty: its default)");
  sub->add_option("--rate", a->rate, "Open loop: requests per second");
  sub->add_option("--concurrency", a->concurrency, "Closed loop: jobs kept in flight");
  sub->add_option("--arrival", a->arrival, "poisson or gamma")
      ->check(CLI::IsMember({"poisson", "gamma"}))
      ->capture_default_str();
  sub->add_option("--cv", a->cv, "Gamma arrivals: coefficient of variation")->capture_default_str();
  sub->add_option("--requests", a->requests, "Requests to send (0: until --duration)")->capture_default_str();
  sub->add_option("--duration", a->duration, "Seconds of arrivals (0: until --requests)")->capture_default_str();
  sub->add_option("--prompt-len", a->prompt_len, "fixed:N, uniform:LO:HI, lognormal:MEAN:SIGMA, empirical:FILE")
      ->capture_default_str();
  sub->add_option("--output-len", a->output_len, "Same forms as --prompt-len")->capture_default_str();
  sub->add_option("--tenants", a->tenants, "name:weight:priority,...: share of arrivals per tenant (API key)")
      ->capture_default_str();
  sub->add_option("--trace", a->trace, "Replay this workload (CSV/JSONL trace) instead of generating one");
  sub->add_option("--seed", a->seed, "Workload seed")->capture_default_str();
  sub->add_option("--vocab", a->vocab, "Prompt token ids are drawn from [3, vocab)")->capture_default_str();
  sub->add_option("--slo-ttft-ms", a->slo_ttft_ms, "Goodput SLO: time to first token")->capture_default_str();
  sub->add_option("--slo-tpot-ms", a->slo_tpot_ms, "Goodput SLO: time per output token")->capture_default_str();
  sub->add_option("--timeout", a->timeout_s, "Seconds before open jobs count as lost")->capture_default_str();
  sub->add_option("--out-jsonl", a->out_jsonl, "Per-request records");
  sub->add_option("--summary-json", a->summary_json, "Summary as JSON");
  sub->add_option("--report-html", a->report_html, "Self-contained HTML report");
  sub->add_option("--record-trace", a->record_trace, "Write the arrivals as sent, for troupe sim --trace");
  sub->add_option("--profile", a->profile_out, "Profile mode: write a step profile (JSONL) of a local CPU worker");
  sub->add_option("--model-file", a->profile_model, "Profile mode: the model to measure");
  sub->add_option("--threads", a->threads, "Profile mode: kernel threads")->capture_default_str();
  sub->add_option("--reps", a->profile_reps, "Profile mode: repetitions per shape (best kept)")->capture_default_str();
  sub->callback([a] { set_runner([a] { return a->profile_out.empty() ? run_load(*a) : run_profile(*a); }); });
}

}  // namespace troupe::cli
