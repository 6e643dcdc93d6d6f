#include "sim/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "troupe/error.h"

namespace troupe::sim {

// ---- summary -------------------------------------------------------------------------

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(q, 0.0, 1.0) * double(v.size() - 1);
  const size_t lo = size_t(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

namespace {

latency_stats stats_of(std::vector<double> v) {
  latency_stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  s.p50 = quantile(v, 0.50);
  s.p90 = quantile(v, 0.90);
  s.p99 = quantile(v, 0.99);
  s.max = v.back();
  return s;
}

const char* status_name(request_status s) {
  switch (s) {
    case request_status::finished:
      return "finished";
    case request_status::rejected:
      return "rejected";
    case request_status::unfinished:
      return "unfinished";
  }
  return "unknown";
}

}  // namespace

summary summarize(const sim_result& r, const slo& target) {
  summary s;
  s.requests = int64_t(r.requests.size());
  s.replicas = r.replicas;
  s.target = target;
  s.cost_model = r.cost_model;
  std::vector<double> ttft, tpot, e2e;
  const size_t n_tenants = r.tenants.size() > 1 ? r.tenants.size() : 0;
  std::vector<std::vector<double>> t_ttft(n_tenants), t_tpot(n_tenants);
  std::vector<double> t_tokens(n_tenants, 0.0);
  s.tenants.resize(n_tenants);
  for (size_t t = 0; t < n_tenants; ++t) s.tenants[t].name = r.tenants[t].name;
  double first_arrival = INFINITY, last_finish = 0, out_tokens = 0, in_tokens = 0;
  int64_t good = 0;
  for (const auto& q : r.requests) {
    first_arrival = std::min(first_arrival, q.arrival);
    tenant_summary* ts = q.tenant < n_tenants ? &s.tenants[q.tenant] : nullptr;
    if (ts) ++ts->requests;
    if (q.status == request_status::rejected) {
      ++s.rejected;
      if (ts) ++ts->rejected;
      continue;
    }
    if (q.status != request_status::finished) {
      ++s.unfinished;
      continue;
    }
    ++s.finished;
    last_finish = std::max(last_finish, q.finish);
    out_tokens += q.generated;
    in_tokens += q.prompt_tokens;
    ttft.push_back(q.ttft());
    e2e.push_back(q.e2e());
    if (q.generated > 1) tpot.push_back(q.tpot());
    if (q.ttft() <= target.ttft && q.tpot() <= target.tpot) ++good;
    if (ts) {
      ++ts->finished;
      t_ttft[q.tenant].push_back(q.ttft());
      if (q.generated > 1) t_tpot[q.tenant].push_back(q.tpot());
      t_tokens[q.tenant] += q.generated;
    }
  }
  s.duration = s.finished > 0 ? last_finish - first_arrival : 0;
  for (size_t t = 0; t < n_tenants; ++t) {
    s.tenants[t].ttft = stats_of(std::move(t_ttft[t]));
    s.tenants[t].tpot = stats_of(std::move(t_tpot[t]));
    s.tenants[t].output_tok_s = s.duration > 0 ? t_tokens[t] / s.duration : 0;
  }
  s.ttft = stats_of(std::move(ttft));
  s.tpot = stats_of(std::move(tpot));
  s.e2e = stats_of(std::move(e2e));
  if (s.duration > 0) {
    s.output_tok_s = out_tokens / s.duration;
    s.input_tok_s = in_tokens / s.duration;
    s.req_s = double(s.finished) / s.duration;
    s.goodput_req_s = double(good) / s.duration;
  }
  s.slo_attainment = s.requests > 0 ? double(good) / double(s.requests) : 0;
  s.steps = r.steps;
  s.preemptions = r.preemptions;
  s.kv_util_mean = r.steps > 0 ? r.kv_util_sum / double(r.steps) : 0;
  s.kv_util_max = r.kv_util_max;
  s.batch_hist = r.batch_hist;
  double seqs = 0;
  for (size_t b = 0; b < r.batch_hist.size(); ++b) seqs += double(b) * double(r.batch_hist[b]);
  s.mean_batch = r.steps > 0 ? seqs / double(r.steps) : 0;
  s.replica_busy = r.end_time > 0 && r.replicas > 0 ? r.busy_time / (r.end_time * r.replicas) : 0;
  return s;
}

namespace {

// Batch sizes in power-of-two bins: "1", "2-3", "4-7", ...
std::vector<std::pair<std::string, int64_t>> batch_bins(const std::vector<int64_t>& hist) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (size_t lo = 1; lo < hist.size(); lo *= 2) {
    const size_t hi = std::min(hist.size() - 1, lo * 2 - 1);
    int64_t n = 0;
    for (size_t b = lo; b <= hi; ++b) n += hist[b];
    out.emplace_back(lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi), n);
  }
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::string summary_table(const summary& s) {
  std::ostringstream o;
  o << "requests   " << s.requests << " (finished " << s.finished << ", rejected " << s.rejected << ", unfinished "
    << s.unfinished << ") on " << s.replicas << " replica(s), " << fmt("%.1f", s.duration) << " s simulated\n";
  o << "cost model " << s.cost_model << "\n\n";
  o << "latency (s)      mean       p50       p90       p99       max\n";
  auto row = [&](const char* name, const latency_stats& l) {
    o << name << fmt("%10.4f", l.mean) << fmt("%10.4f", l.p50) << fmt("%10.4f", l.p90) << fmt("%10.4f", l.p99)
      << fmt("%10.4f", l.max) << '\n';
  };
  row("TTFT       ", s.ttft);
  row("TPOT       ", s.tpot);
  row("end-to-end ", s.e2e);
  o << '\n';
  o << "throughput " << fmt("%.1f", s.output_tok_s) << " output tok/s, " << fmt("%.1f", s.input_tok_s)
    << " prompt tok/s, " << fmt("%.3f", s.req_s) << " req/s\n";
  o << "goodput    " << fmt("%.3f", s.goodput_req_s) << " req/s at TTFT <= " << s.target.ttft
    << " s and TPOT <= " << s.target.tpot << " s (" << fmt("%.1f", 100 * s.slo_attainment) << "% of requests)\n";
  o << "KV cache   mean " << fmt("%.1f", 100 * s.kv_util_mean) << "%, max " << fmt("%.1f", 100 * s.kv_util_max)
    << "%; preemptions " << s.preemptions << "\n";
  o << "steps      " << s.steps << ", mean batch " << fmt("%.1f", s.mean_batch) << ", replicas busy "
    << fmt("%.1f", 100 * s.replica_busy) << "%\n";
  if (!s.tenants.empty()) {
    o << "tenant            requests  finished  rejected  TTFT p50  TTFT p90  TPOT p90   out tok/s\n";
    for (const auto& t : s.tenants) {
      char line[256];
      std::snprintf(line, sizeof line, "%-16s %9lld %9lld %9lld %9.4f %9.4f %9.4f %11.1f\n", t.name.c_str(),
                    (long long)t.requests, (long long)t.finished, (long long)t.rejected, t.ttft.p50, t.ttft.p90,
                    t.tpot.p90, t.output_tok_s);
      o << line;
    }
  }
  o << "batch size";
  for (const auto& [label, n] : batch_bins(s.batch_hist))
    if (n > 0) o << "  " << label << ":" << n;
  o << '\n';
  return o.str();
}

std::string summary_json(const summary& s) {
  auto lat = [](const latency_stats& l) {
    return nlohmann::json{{"mean", l.mean}, {"p50", l.p50}, {"p90", l.p90}, {"p99", l.p99}, {"max", l.max}};
  };
  nlohmann::json hist = nlohmann::json::object();
  for (size_t b = 1; b < s.batch_hist.size(); ++b)
    if (s.batch_hist[b] > 0) hist[std::to_string(b)] = s.batch_hist[b];
  nlohmann::json tenants = nlohmann::json::array();
  for (const auto& t : s.tenants)
    tenants.push_back({{"name", t.name},
                       {"requests", t.requests},
                       {"finished", t.finished},
                       {"rejected", t.rejected},
                       {"ttft_s", lat(t.ttft)},
                       {"tpot_s", lat(t.tpot)},
                       {"output_tok_s", t.output_tok_s}});
  nlohmann::json j = {
      {"requests", s.requests},
      {"finished", s.finished},
      {"rejected", s.rejected},
      {"unfinished", s.unfinished},
      {"replicas", s.replicas},
      {"duration_s", s.duration},
      {"ttft_s", lat(s.ttft)},
      {"tpot_s", lat(s.tpot)},
      {"e2e_s", lat(s.e2e)},
      {"throughput", {{"output_tok_s", s.output_tok_s}, {"input_tok_s", s.input_tok_s}, {"req_s", s.req_s}}},
      {"goodput",
       {{"req_s", s.goodput_req_s},
        {"slo_ttft_s", s.target.ttft},
        {"slo_tpot_s", s.target.tpot},
        {"attainment", s.slo_attainment}}},
      {"kv_util", {{"mean", s.kv_util_mean}, {"max", s.kv_util_max}}},
      {"preemptions", s.preemptions},
      {"steps", s.steps},
      {"mean_batch", s.mean_batch},
      {"replica_busy", s.replica_busy},
      {"batch_size_hist", hist},
      {"tenants", tenants},
      {"cost_model", s.cost_model},
  };
  return j.dump(2);
}

void write_request_jsonl(const std::string& path, const sim_result& r) {
  std::ofstream out(path);
  if (!out) throw error(error_kind::failed, "cannot write " + path, "out-jsonl");
  // Written by hand rather than through nlohmann: a million lines should take a second.
  std::vector<std::string> tenant;  // JSON strings, quotes included
  for (const auto& t : r.tenants) tenant.push_back(nlohmann::json(t.name).dump());
  char buf[1024];
  for (const auto& q : r.requests) {
    const bool ok = q.status == request_status::finished;
    std::snprintf(buf, sizeof buf,
                  "{\"id\":%llu,\"tenant\":%s,\"status\":\"%s\",\"arrival\":%.9g,\"first_token\":%.9g,"
                  "\"finish\":%.9g,\"ttft\":%.9g,\"tpot\":%.9g,\"e2e\":%.9g,\"prompt_tokens\":%d,"
                  "\"output_tokens\":%d,\"generated\":%d,\"preemptions\":%d,\"replica\":%u}\n",
                  (unsigned long long)q.id, tenant[q.tenant].c_str(), status_name(q.status), q.arrival, q.first_token,
                  q.finish, q.first_token >= 0 ? q.ttft() : -1.0, ok ? q.tpot() : -1.0, ok ? q.e2e() : -1.0,
                  q.prompt_tokens, q.output_tokens, q.generated, q.preemptions, q.replica);
    out << buf;
  }
}

step_log::step_log(const std::string& path) : f_(std::fopen(path.c_str(), "w")) {
  if (!f_) throw error(error_kind::failed, "cannot write " + path, "steps-jsonl");
}

step_log::~step_log() { std::fclose(f_); }

void step_log::write(const step_record& s) {
  std::fprintf(
      f_,
      "{\"start\":%.9g,\"duration\":%.9g,\"time_s\":%.9g,\"period\":%.9g,\"replica\":%u,\"seqs\":%d,\"tokens\":%lld,"
      "\"prefill_tokens\":%lld,\"context\":%lld,\"kv_util\":%.6g,\"queued\":%lld}\n",
      s.start, s.duration, s.duration, s.period, s.replica, s.seqs, (long long)s.tokens, (long long)s.prefill_tokens,
      (long long)s.context, s.kv_util, (long long)s.queued);
}

}  // namespace troupe::sim
