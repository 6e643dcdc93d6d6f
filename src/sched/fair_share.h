// Weighted fair sharing of tokens served between tenants, by virtual token counters: a
// tenant's counter advances by tokens served / weight and the queue prefers the tenant
// with the lowest counter. Idle time is not banked as credit: a tenant that becomes active
// (its first unfinished job) starts at the lowest counter among the active tenants, and one
// that becomes backlogged (a job queued when it had none) starts no lower than the counter
// of the last admission, as in start-time fair queuing: a tenant whose jobs kept running
// while its queue was empty did not ask for the tokens the others were served meanwhile.
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/sched/policy.h"

namespace troupe::sched {

struct tenant_state {
  std::string name;
  double weight = 1.0;
  int64_t max_running = 0;
  int64_t max_queued_tokens = 0;
  double vtime = 0.0;          // tokens served / weight, since the policy started
  int64_t active = 0;          // jobs accepted and not finished
  int64_t queued_tokens = 0;   // tokens of its jobs waiting in the queue
  uint64_t served_tokens = 0;  // tokens planned for its jobs (prefill + decode)
};

class fair_share {
 public:
  // Throws troupe::error naming the field when a weight or limit is out of range.
  fair_share(const std::vector<tenant_config>& tenants, const tenant_config& defaults);

  tenant_state& get(const std::string& name);  // unknown tenants get the defaults
  // Why a new job of `tokens` prompt tokens exceeds the tenant's limits, or empty.
  std::string over_limit(const tenant_state& t, int64_t tokens) const;
  void activate(tenant_state& t);
  void deactivate(tenant_state& t) { --t.active; }
  // t's queue goes from empty to one job / a job of t leaves the queue for a replica.
  void backlogged(tenant_state& t) { t.vtime = std::max(t.vtime, admitted_vtime_); }
  void admitted(const tenant_state& t) { admitted_vtime_ = std::max(admitted_vtime_, t.vtime); }
  void charge(tenant_state& t, int64_t tokens) {
    t.vtime += static_cast<double>(tokens) / t.weight;
    t.served_tokens += static_cast<uint64_t>(tokens);
  }
  const std::map<std::string, tenant_state>& tenants() const { return tenants_; }

 private:
  tenant_config defaults_;
  std::map<std::string, tenant_state> tenants_;
  double admitted_vtime_ = 0.0;  // the counter of the latest admission (the system's virtual time)
};

}  // namespace troupe::sched
