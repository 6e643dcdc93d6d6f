// The load a simulation runs: arrival processes (Poisson, Gamma, bursts), length
// distributions, tenants with weights and priorities, or a recorded trace. Every
// generator is seeded; the same spec gives the same requests.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace troupe::sim {

// ---- lengths -----------------------------------------------------------------------

struct length_dist {
  enum class kind { fixed, uniform, lognormal, empirical } type = kind::fixed;
  double a = 128;               // fixed: the value; uniform: low; lognormal: mean
  double b = 0;                 // uniform: high (inclusive); lognormal: sigma of the underlying normal
  std::vector<int32_t> values;  // empirical: samples drawn uniformly

  int32_t sample(std::mt19937_64& rng) const;  // always >= 1
  double mean() const;
};

// "fixed:N", "uniform:LO:HI", "lognormal:MEAN:SIGMA", "empirical:FILE" (one length per
// line, or a JSONL file of {"tokens": N}); a bare number means fixed. Throws
// troupe::error naming `field` on a malformed spec.
length_dist parse_length_dist(const std::string& spec, const std::string& field);

// ---- tenants and arrivals ------------------------------------------------------------

struct tenant_spec {
  std::string name = "default";
  double weight = 1.0;   // share of arrivals
  int32_t priority = 0;  // higher runs first (passed to the policy)
  double share = 1.0;    // fair-share weight in the policy (share of tokens served)
};

// "name:weight:priority:share,..." (weight, priority and share optional).
std::vector<tenant_spec> parse_tenants(const std::string& spec);

struct arrival_spec {
  enum class kind { poisson, gamma } type = kind::poisson;
  double rate = 1.0;        // requests/s, whole cluster
  double cv = 1.0;          // gamma: coefficient of variation of inter-arrival times (1 = Poisson)
  double burst_period = 0;  // > 0: every burst_period seconds, burst_size extra requests at once
  int32_t burst_size = 0;
};

struct workload_spec {
  arrival_spec arrivals;
  length_dist prompt{length_dist::kind::fixed, 512};
  length_dist output{length_dist::kind::fixed, 128};
  std::vector<tenant_spec> tenants{tenant_spec{}};
  int64_t n_requests = 1000;  // stop after this many (0 = no bound)
  double duration = 0;        // stop at this arrival time, seconds (0 = no bound)
  uint64_t seed = 1;
};

struct sim_request {
  uint64_t id = 0;
  double arrival = 0;  // seconds
  int32_t prompt_tokens = 0;
  int32_t output_tokens = 0;
  uint32_t tenant = 0;  // index into workload::tenants
};

struct workload {
  std::vector<tenant_spec> tenants;
  std::vector<sim_request> requests;  // sorted by arrival, ids 0..n-1 in that order
};

// Throws troupe::error naming the field when the spec cannot generate (rate <= 0, no
// bound on the count or duration, tenants with zero total weight).
workload generate(const workload_spec& spec);

// Trace replay: CSV (header row) or JSONL with fields arrival_s, prompt_tokens,
// output_tokens, and optional tenant and priority; or a policy trace recorded by a real
// scheduler (src/sched/trace.h, JSONL with "ev" fields), whose submit lines give the
// arrivals and whose results give each request's output length. Requests are sorted by
// arrival.
workload read_trace(const std::string& path);
void write_trace(const std::string& path, const workload& w);

// Multiplies every arrival time by `factor` (factor < 1 compresses: a higher rate with
// the very same draws, which keeps a capacity search's comparisons fair).
void scale_arrivals(workload& w, double factor);

// Inter-arrival samplers, exposed for the statistics tests.
double sample_interarrival(const arrival_spec& a, std::mt19937_64& rng);

}  // namespace troupe::sim
