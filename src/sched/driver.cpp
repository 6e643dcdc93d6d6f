#include "src/sched/driver.h"

#include <utility>

namespace troupe::sched {

driver::driver(policy_config cfg) : policy_(cfg), limit_(cfg.max_inflight_steps) {}

// ---- replicas and requests ------------------------------------------------------------------

void driver::add_replica(const replica_info& r, double now) {
  policy_.add_replica(r, now);
  flights_[r.id].clear();  // an id used again starts with nothing in flight
}

void driver::remove_replica(uint32_t id, double now, driver_sink& sink) {
  flights_.erase(id);
  policy_.remove_replica(id, now);
  take_events(now, std::nullopt, sink);
}

void driver::cancel(uint64_t id, double now, driver_sink& sink) {
  policy_.cancel(id, now);
  take_events(now, std::nullopt, sink);
}

// ---- steps ------------------------------------------------------------------------------------

bool driver::schedule(uint32_t replica, double now, driver_sink& sink) {
  auto it = flights_.find(replica);
  if (it == flights_.end() || it->second.size() >= static_cast<size_t>(limit_)) return false;
  auto planned = policy_.schedule(replica, now);
  if (!planned) return false;
  it->second.push_back(planned->plan.step_id);
  sink.on_plan(replica, std::move(planned->plan), now);
  return true;
}

size_t driver::pump(double now, driver_sink& sink) {
  size_t planned = 0;
  // With async scheduling the next plan is made right after this one is handed over: the
  // replica finds it queued when it finishes. The sink may remove replicas: ids are looked
  // up again on every call.
  for (auto it = flights_.begin(); it != flights_.end();) {
    const uint32_t id = it->first;
    while (schedule(id, now, sink)) ++planned;
    it = flights_.upper_bound(id);
  }
  return planned;
}

bool driver::on_result(uint32_t replica, const step_result& result, double now, driver_sink& sink) {
  auto it = flights_.find(replica);
  if (it == flights_.end() || it->second.empty() || it->second.front() != result.step_id) return false;
  auto events = policy_.on_result(replica, result, now);  // throws for a malformed result
  it->second.pop_front();
  if (!events.empty()) sink.on_events(events, replica, now);
  take_events(now, replica, sink);
  return true;
}

bool driver::on_step_failed(uint32_t replica, uint64_t step_id) {
  auto it = flights_.find(replica);
  if (it == flights_.end() || it->second.empty() || it->second.front() != step_id) return false;
  it->second.pop_front();
  return true;
}

size_t driver::in_flight(uint32_t replica) const {
  auto it = flights_.find(replica);
  return it == flights_.end() ? 0 : it->second.size();
}

size_t driver::in_flight() const {
  size_t n = 0;
  for (const auto& [id, f] : flights_) n += f.size();
  return n;
}

void driver::take_events(double now, std::optional<uint32_t> from, driver_sink& sink) {
  // A local: the sink may call back into the driver (a cancel) while it reads them.
  auto events = policy_.take_events();
  if (!events.empty()) sink.on_events(events, from, now);
}

}  // namespace troupe::sched
