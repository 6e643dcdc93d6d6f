// Capacity questions answered by repeated simulation: the highest arrival rate a replica
// carries within SLOs (bisection), and the cheapest cluster that carries a target load.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sim/cluster.h"
#include "sim/cost_model.h"
#include "sim/report.h"
#include "sim/simulator.h"
#include "sim/workload.h"

namespace troupe::sim {

// Builds the cost model for a cluster (a roofline of its device, or one fitted model).
using cost_model_factory = std::function<std::unique_ptr<cost_model>(const cluster_spec&)>;

struct capacity_options {
  slo target;  // p90 TTFT and p90 TPOT must meet it
  // A probe runs max(requests_per_replica, rate * probe_seconds) requests per replica (the
  // workload's own count is replaced): an overload must last long enough to show, or a
  // short burst at any rate would pass.
  int64_t requests_per_replica = 1000;
  double probe_seconds = 30;
  int32_t iterations = 12;                      // bisection steps after bracketing
  std::function<void(const std::string&)> log;  // one line per probe, when set
};

struct capacity_probe {
  double rate_per_replica = 0;
  bool meets = false;
  summary result;
};

struct capacity_result {
  double rate_per_replica = 0;         // highest rate found that meets the SLOs (0 if none)
  std::vector<capacity_probe> probes;  // in the order run
};

// The same draws are used at every rate (arrival times are scaled), so a probe differs
// from the next only in its rate. Meeting means: no rejection, every request finished,
// p90 TTFT <= target.ttft and p90 TPOT <= target.tpot.
capacity_result max_rate_per_replica(const cluster_spec& cluster, const cost_model& cost, const workload_spec& load,
                                     const sim_options& sim, const capacity_options& opts);

bool meets_slo(const summary& s, const slo& target);

// ---- the cheapest cluster --------------------------------------------------------------

struct cluster_candidate {
  std::string device;
  int32_t tp = 1;
  double price_per_device_hour = 0;
};

// "DEVICE:TP:PRICE,..." e.g. "h100:1:2.99,h100:2:2.99,a100:1:1.79".
std::vector<cluster_candidate> parse_candidates(const std::string& spec);

struct cheapest_row {
  cluster_candidate candidate;
  double rate_per_replica = 0;  // from the bisection
  int32_t replicas = 0;         // needed for the target, checked by a full-size run
  int32_t devices = 0;
  double cost_per_hour = 0;
  bool feasible = false;  // false when the model does not fit or the SLOs cannot be met
  std::string note;
};

// Every candidate with its count and price, cheapest feasible first. `base` gives the
// model, dtypes and memory settings; each candidate sets device and tp. The count is
// ceil(target / capacity per replica), then raised (up to 4 more replicas) until a
// full-size run at the target rate meets the SLOs.
std::vector<cheapest_row> cheapest_cluster(const cluster_spec& base, const std::vector<cluster_candidate>& candidates,
                                           double target_rate, const workload_spec& load, const sim_options& sim,
                                           const capacity_options& opts, const cost_model_factory& make_cost);

}  // namespace troupe::sim
