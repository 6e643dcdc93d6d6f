#include "sim/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "sim/record_file.h"
#include "troupe/error.h"

namespace troupe::sim {

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  return out;
}

double number(const std::string& text, const std::string& field, const std::string& spec) {
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw error(error_kind::failed, field + ": expected a number in '" + spec + "', got '" + text + "'", field);
}

// Independent streams per purpose, so that changing the length distribution does not
// move the arrival times (and capacity runs compare like with like).
std::mt19937_64 stream(uint64_t seed, uint64_t purpose) {
  std::seed_seq s{uint32_t(seed), uint32_t(seed >> 32), uint32_t(purpose)};
  return std::mt19937_64(s);
}

}  // namespace

// ---- lengths -----------------------------------------------------------------------

int32_t length_dist::sample(std::mt19937_64& rng) const {
  double v = a;
  switch (type) {
    case kind::fixed:
      break;
    case kind::uniform:
      v = double(std::uniform_int_distribution<int64_t>(int64_t(a), int64_t(b))(rng));
      break;
    case kind::lognormal: {
      // `a` is the mean of the lengths: mean = exp(mu + sigma^2 / 2).
      const double mu = std::log(a) - 0.5 * b * b;
      v = std::round(std::lognormal_distribution<double>(mu, b)(rng));
      break;
    }
    case kind::empirical:
      v = values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng)];
      break;
  }
  return static_cast<int32_t>(std::clamp(v, 1.0, 1e9));
}

double length_dist::mean() const {
  switch (type) {
    case kind::fixed:
    case kind::lognormal:
      return a;
    case kind::uniform:
      return 0.5 * (a + b);
    case kind::empirical: {
      double s = 0;
      for (auto v : values) s += v;
      return values.empty() ? 0 : s / values.size();
    }
  }
  return a;
}

length_dist parse_length_dist(const std::string& spec, const std::string& field) {
  length_dist d;
  auto parts = split(spec, ':');
  if (parts.empty()) throw error(error_kind::failed, field + ": empty length distribution", field);
  const std::string& k = parts[0];
  auto need = [&](size_t n, const char* form) {
    if (parts.size() != n)
      throw error(error_kind::failed, field + ": expected " + form + ", got '" + spec + "'", field);
  };
  if (k == "fixed") {
    need(2, "fixed:N");
    d.a = number(parts[1], field, spec);
  } else if (k == "uniform") {
    need(3, "uniform:LO:HI");
    d.type = length_dist::kind::uniform;
    d.a = number(parts[1], field, spec);
    d.b = number(parts[2], field, spec);
    if (d.b < d.a) throw error(error_kind::failed, field + ": uniform needs LO <= HI in '" + spec + "'", field);
  } else if (k == "lognormal") {
    need(3, "lognormal:MEAN:SIGMA");
    d.type = length_dist::kind::lognormal;
    d.a = number(parts[1], field, spec);
    d.b = number(parts[2], field, spec);
    if (d.b < 0) throw error(error_kind::failed, field + ": lognormal sigma must be >= 0", field);
  } else if (k == "empirical") {
    if (parts.size() < 2) throw error(error_kind::failed, field + ": expected empirical:FILE", field);
    d.type = length_dist::kind::empirical;
    const std::string path = spec.substr(std::string("empirical:").size());
    if (is_jsonl_path(path)) {
      for_each_record(path, {"tokens"}, [&](const std::vector<std::string>& v, size_t line) {
        d.values.push_back(int32_t(record_number(v[0], path, line, "tokens")));
      });
    } else {
      std::ifstream in(path);
      if (!in) throw error(error_kind::failed, field + ": cannot open " + path, field);
      std::string line;
      size_t n = 0;
      while (std::getline(in, line)) {
        ++n;
        if (line.empty() || line[0] == '#') continue;
        d.values.push_back(int32_t(record_number(line, path, n, "tokens")));
      }
    }
    if (d.values.empty()) throw error(error_kind::failed, field + ": " + path + " holds no lengths", field);
  } else if (parts.size() == 1) {
    d.a = number(k, field, spec);
  } else {
    throw error(error_kind::failed, field + ": unknown distribution '" + k + "' (fixed, uniform, lognormal, empirical)",
                field);
  }
  if (d.type != length_dist::kind::empirical && d.a < 1)
    throw error(error_kind::failed, field + ": lengths must be >= 1 in '" + spec + "'", field);
  return d;
}

// ---- tenants and arrivals ------------------------------------------------------------

std::vector<tenant_spec> parse_tenants(const std::string& spec) {
  std::vector<tenant_spec> out;
  for (const auto& item : split(spec, ',')) {
    if (item.empty()) continue;
    auto p = split(item, ':');
    tenant_spec t;
    t.name = p[0];
    if (p.size() > 1) t.weight = number(p[1], "tenants", spec);
    if (p.size() > 2) t.priority = int32_t(number(p[2], "tenants", spec));
    if (p.size() > 3) t.share = number(p[3], "tenants", spec);
    if (p.size() > 4 || t.name.empty() || t.weight < 0 || !(t.share > 0))
      throw error(error_kind::failed, "tenants: expected name:weight:priority:share,..., got '" + spec + "'",
                  "tenants");
    out.push_back(t);
  }
  if (out.empty()) throw error(error_kind::failed, "tenants: no tenant in '" + spec + "'", "tenants");
  return out;
}

double sample_interarrival(const arrival_spec& a, std::mt19937_64& rng) {
  if (a.type == arrival_spec::kind::poisson) return std::exponential_distribution<double>(a.rate)(rng);
  // Gamma with shape k = 1/cv^2 and mean 1/rate: scale = 1 / (rate k).
  const double k = 1.0 / (a.cv * a.cv);
  return std::gamma_distribution<double>(k, 1.0 / (a.rate * k))(rng);
}

workload generate(const workload_spec& spec) {
  const auto& a = spec.arrivals;
  if (!(a.rate > 0)) throw error(error_kind::failed, "rate must be > 0", "rate");
  if (a.type == arrival_spec::kind::gamma && !(a.cv > 0)) throw error(error_kind::failed, "cv must be > 0", "cv");
  if (spec.n_requests <= 0 && spec.duration <= 0)
    throw error(error_kind::failed, "a workload needs a request count or a duration", "requests");
  double total_weight = 0;
  for (const auto& t : spec.tenants) total_weight += t.weight;
  if (spec.tenants.empty() || !(total_weight > 0))
    throw error(error_kind::failed, "tenants need a positive total weight", "tenants");

  workload w;
  w.tenants = spec.tenants;
  auto arrivals_rng = stream(spec.seed, 1);
  auto prompt_rng = stream(spec.seed, 2);
  auto output_rng = stream(spec.seed, 3);
  auto tenant_rng = stream(spec.seed, 4);
  std::vector<double> weights;
  for (const auto& t : spec.tenants) weights.push_back(t.weight);
  std::discrete_distribution<uint32_t> pick_tenant(weights.begin(), weights.end());

  auto add = [&](double t) {
    sim_request r;
    r.arrival = t;
    r.prompt_tokens = spec.prompt.sample(prompt_rng);
    r.output_tokens = spec.output.sample(output_rng);
    r.tenant = pick_tenant(tenant_rng);
    w.requests.push_back(r);
  };
  const auto full = [&] { return spec.n_requests > 0 && int64_t(w.requests.size()) >= spec.n_requests; };
  const bool bursts = a.burst_period > 0 && a.burst_size > 0;
  double t = 0;
  double next_burst = bursts ? a.burst_period : INFINITY;
  while (!full()) {
    t += sample_interarrival(a, arrivals_rng);
    // Bursts due before this arrival come first, keeping the list sorted.
    while (next_burst <= t && !full() && (spec.duration <= 0 || next_burst <= spec.duration)) {
      for (int32_t i = 0; i < a.burst_size && !full(); ++i) add(next_burst);
      next_burst += a.burst_period;
    }
    if (full() || (spec.duration > 0 && t > spec.duration)) break;
    add(t);
  }
  for (size_t i = 0; i < w.requests.size(); ++i) w.requests[i].id = i;
  return w;
}

// ---- traces --------------------------------------------------------------------------

namespace {

// A policy trace (src/sched/trace.h) recorded by a real scheduler: the arrivals are its
// submit lines, the output lengths what its result lines delivered before each finished
// (max_tokens for requests that never finished in the trace).
bool is_policy_trace(const std::string& path) {
  if (!is_jsonl_path(path)) return false;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#') return line.find("\"ev\"") != std::string::npos;
  return false;
}

workload read_policy_trace(const std::string& path) {
  std::ifstream in(path);
  workload w;
  std::vector<uint64_t> ids;       // the trace's request id per request
  std::vector<int32_t> delivered;  // tokens seen in results
  std::vector<bool> finished;
  std::unordered_map<uint64_t, size_t> index;
  std::string line;
  size_t line_no = 0;
  double t0 = -1;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw error(error_kind::failed, path + ":" + std::to_string(line_no) + ": not a JSON object", "trace");
    const std::string ev = j.value("ev", "");
    try {
      if (ev == "submit") {
        const double t = j.at("t").get<double>();
        if (t0 < 0) t0 = t;
        sim_request r;
        r.arrival = t - t0;
        r.prompt_tokens = int32_t(j.at("prompt").size());
        r.output_tokens = j.at("max_tokens").get<int32_t>();
        const std::string name = j.value("tenant", "default");
        auto it =
            std::find_if(w.tenants.begin(), w.tenants.end(), [&](const tenant_spec& x) { return x.name == name; });
        if (it == w.tenants.end()) it = w.tenants.insert(w.tenants.end(), {name, 1.0, j.value("priority", 0)});
        r.tenant = uint32_t(it - w.tenants.begin());
        index[j.at("id").get<uint64_t>()] = w.requests.size();
        w.requests.push_back(r);
        delivered.push_back(0);
        finished.push_back(false);
      } else if (ev == "result") {
        for (const auto& o : j.at("out")) {
          auto it = index.find(o.at(0).get<uint64_t>());
          if (it != index.end() && o.at(1).get<int32_t>() >= 0) ++delivered[it->second];
        }
        for (const auto& f : j.at("finished")) {
          auto it = index.find(f.at(0).get<uint64_t>());
          if (it != index.end()) finished[it->second] = true;
        }
      }
    } catch (const nlohmann::json::exception& e) {
      throw error(error_kind::failed,
                  path + ":" + std::to_string(line_no) + ": malformed '" + ev + "' line: " + e.what(), "trace");
    }
  }
  for (size_t i = 0; i < w.requests.size(); ++i)
    if (finished[i] && delivered[i] > 0) w.requests[i].output_tokens = delivered[i];
  return w;
}

}  // namespace

workload read_trace(const std::string& path) {
  if (is_policy_trace(path)) {
    workload w = read_policy_trace(path);
    if (w.requests.empty()) throw error(error_kind::failed, path + ": the trace holds no submit line", "trace");
    std::stable_sort(w.requests.begin(), w.requests.end(),
                     [](const sim_request& x, const sim_request& y) { return x.arrival < y.arrival; });
    for (size_t i = 0; i < w.requests.size(); ++i) w.requests[i].id = i;
    return w;
  }
  workload w;
  const std::vector<std::string> fields = {"arrival_s", "prompt_tokens", "output_tokens", "tenant", "priority"};
  for_each_record(path, fields, [&](const std::vector<std::string>& v, size_t line) {
    sim_request r;
    r.arrival = record_number(v[0], path, line, fields[0]);
    r.prompt_tokens = int32_t(record_number(v[1], path, line, fields[1]));
    r.output_tokens = int32_t(record_number(v[2], path, line, fields[2]));
    if (r.arrival < 0 || r.prompt_tokens < 1 || r.output_tokens < 1)
      throw error(error_kind::failed,
                  path + ":" + std::to_string(line) + ": expected arrival_s >= 0 and token counts >= 1", "trace");
    const std::string name = v[3].empty() ? "default" : v[3];
    const int32_t prio = v[4].empty() ? 0 : int32_t(record_number(v[4], path, line, fields[4]));
    auto it = std::find_if(w.tenants.begin(), w.tenants.end(), [&](const tenant_spec& t) { return t.name == name; });
    if (it == w.tenants.end()) {
      w.tenants.push_back({name, 1.0, prio});
      it = w.tenants.end() - 1;
    }
    r.tenant = uint32_t(it - w.tenants.begin());
    w.requests.push_back(r);
  });
  if (w.requests.empty()) throw error(error_kind::failed, path + ": the trace holds no request", "trace");
  std::stable_sort(w.requests.begin(), w.requests.end(),
                   [](const sim_request& x, const sim_request& y) { return x.arrival < y.arrival; });
  for (size_t i = 0; i < w.requests.size(); ++i) w.requests[i].id = i;
  return w;
}

void write_trace(const std::string& path, const workload& w) {
  std::ofstream out(path);
  if (!out) throw error(error_kind::failed, "cannot write " + path, "file");
  const bool jsonl = is_jsonl_path(path);
  if (!jsonl) out << "arrival_s,prompt_tokens,output_tokens,tenant,priority\n";
  char buf[64];
  for (const auto& r : w.requests) {
    const auto& t = w.tenants[r.tenant];
    std::snprintf(buf, sizeof buf, "%.9g", r.arrival);
    if (jsonl)
      out << nlohmann::json{{"arrival_s", r.arrival},
                            {"prompt_tokens", r.prompt_tokens},
                            {"output_tokens", r.output_tokens},
                            {"tenant", t.name},
                            {"priority", t.priority}}
                 .dump()
          << '\n';
    else
      out << buf << ',' << r.prompt_tokens << ',' << r.output_tokens << ',' << t.name << ',' << t.priority << '\n';
  }
}

void scale_arrivals(workload& w, double factor) {
  for (auto& r : w.requests) r.arrival *= factor;
}

}  // namespace troupe::sim
