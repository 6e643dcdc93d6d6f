#include "sim/capacity.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "troupe/error.h"

namespace troupe::sim {

bool meets_slo(const summary& s, const slo& target) {
  return s.rejected == 0 && s.unfinished == 0 && s.finished > 0 && s.ttft.p90 <= target.ttft &&
         s.tpot.p90 <= target.tpot;
}

namespace {

std::string describe_probe(const capacity_probe& p) {
  std::ostringstream o;
  o << "rate " << p.rate_per_replica << " req/s/replica: p90 TTFT " << p.result.ttft.p90 << " s, p90 TPOT "
    << p.result.tpot.p90 << " s, rejected " << p.result.rejected << " -> " << (p.meets ? "meets" : "misses");
  return o.str();
}

}  // namespace

capacity_result max_rate_per_replica(const cluster_spec& cluster, const cost_model& cost, const workload_spec& load,
                                     const sim_options& sim, const capacity_options& opts) {
  cluster.validate();
  const int32_t replicas = cluster.replicas();
  // Draws at 1 req/s per replica, rescaled to each probe's rate; a longer probe draws more
  // of the same sequence, so probes differ only in their rate and length.
  workload_spec unit = load;
  unit.arrivals.rate = double(replicas);
  unit.duration = 0;

  capacity_result out;
  auto probe = [&](double rate) {
    const double per_replica =
        std::max(double(std::max<int64_t>(1, opts.requests_per_replica)), std::ceil(rate * opts.probe_seconds));
    unit.n_requests = int64_t(per_replica) * replicas;
    workload w = generate(unit);
    scale_arrivals(w, 1.0 / rate);
    capacity_probe p;
    p.rate_per_replica = rate;
    p.result = summarize(simulate(cluster, cost, w, sim), opts.target);
    p.meets = meets_slo(p.result, opts.target);
    if (opts.log) opts.log(describe_probe(p));
    out.probes.push_back(p);
    return p.meets;
  };

  // Bracket [lo, hi] by doubling or halving from 1 req/s, then bisect geometrically.
  double lo = 0, hi = 0;
  if (probe(1.0)) {
    lo = 1.0;
    for (int i = 0; i < 40 && probe(lo * 2); ++i) lo *= 2;
    hi = lo * 2;
  } else {
    hi = 1.0;
    for (int i = 0; i < 30; ++i) {
      if (probe(hi / 2)) {
        lo = hi / 2;
        break;
      }
      hi /= 2;
    }
    if (lo == 0) return out;  // not even ~1e-9 req/s meets the SLOs
  }
  for (int i = 0; i < opts.iterations; ++i) {
    const double mid = std::sqrt(lo * hi);
    (probe(mid) ? lo : hi) = mid;
  }
  out.rate_per_replica = lo;
  return out;
}

// ---- the cheapest cluster --------------------------------------------------------------

std::vector<cluster_candidate> parse_candidates(const std::string& spec) {
  std::vector<cluster_candidate> out;
  std::istringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    cluster_candidate c;
    const auto a = item.find(':');
    const auto b = a == std::string::npos ? a : item.find(':', a + 1);
    try {
      if (b == std::string::npos) throw std::invalid_argument("form");
      c.device = item.substr(0, a);
      c.tp = std::stoi(item.substr(a + 1, b - a - 1));
      c.price_per_device_hour = std::stod(item.substr(b + 1));
    } catch (const std::exception&) {
      throw error(error_kind::failed, "candidates: expected DEVICE:TP:PRICE, got '" + item + "'", "candidates");
    }
    if (c.tp < 1 || c.price_per_device_hour < 0)
      throw error(error_kind::failed, "candidates: tp must be >= 1 and price >= 0 in '" + item + "'", "candidates");
    out.push_back(c);
  }
  if (out.empty()) throw error(error_kind::failed, "candidates: none given", "candidates");
  return out;
}

std::vector<cheapest_row> cheapest_cluster(const cluster_spec& base, const std::vector<cluster_candidate>& candidates,
                                           double target_rate, const workload_spec& load, const sim_options& sim,
                                           const capacity_options& opts, const cost_model_factory& make_cost) {
  if (!(target_rate > 0)) throw error(error_kind::failed, "target rate must be > 0", "target-rate");
  std::vector<cheapest_row> rows;
  for (const auto& c : candidates) {
    cheapest_row row;
    row.candidate = c;
    cluster_spec cl = base;
    try {
      // A profile's own device ("cpu") is already in base; presets come from the table.
      if (c.device != base.device.name) cl.device = device_preset(c.device);
      cl.tp = c.tp;
      cl.n_devices = c.tp;
      cl.validate();
    } catch (const error& e) {
      row.note = e.what();
      rows.push_back(row);
      continue;
    }
    const auto cost = make_cost(cl);
    if (opts.log) opts.log("candidate " + c.device + " tp " + std::to_string(c.tp) + ": searching capacity");
    row.rate_per_replica = max_rate_per_replica(cl, *cost, load, sim, opts).rate_per_replica;
    if (row.rate_per_replica <= 0) {
      row.note = "no rate meets the SLOs";
      rows.push_back(row);
      continue;
    }
    // Check the whole cluster at the target: routing is not perfect balance.
    int32_t n = int32_t(std::ceil(target_rate / row.rate_per_replica));
    for (int extra = 0;; ++extra) {
      cl.n_devices = n * c.tp;
      workload_spec w = load;
      w.arrivals.rate = target_rate;
      w.n_requests = int64_t(std::max(double(std::max<int64_t>(1, opts.requests_per_replica)),
                                      std::ceil(row.rate_per_replica * opts.probe_seconds))) *
                     n;
      w.duration = 0;
      const auto s = summarize(simulate(cl, *cost, generate(w), sim), opts.target);
      if (opts.log)
        opts.log("  " + std::to_string(n) + " replicas at " + std::to_string(target_rate) + " req/s: p90 TTFT " +
                 std::to_string(s.ttft.p90) + " s, p90 TPOT " + std::to_string(s.tpot.p90) + " s");
      if (meets_slo(s, opts.target)) {
        row.feasible = true;
        break;
      }
      if (extra == 4) break;
      ++n;
    }
    row.replicas = n;
    row.devices = n * c.tp;
    row.cost_per_hour = row.devices * c.price_per_device_hour;
    if (!row.feasible) row.note = "full-size runs missed the SLOs up to " + std::to_string(n) + " replicas";
    rows.push_back(row);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const cheapest_row& a, const cheapest_row& b) {
    if (a.feasible != b.feasible) return a.feasible;
    return a.cost_per_hour < b.cost_per_hour;
  });
  return rows;
}

}  // namespace troupe::sim
