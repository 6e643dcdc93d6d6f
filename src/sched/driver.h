// The policy driver: the one loop around sched::policy that every clock shares. It owns the
// policy and, per replica, the steps planned and not answered (at most
// policy_config::max_inflight_steps, the one place that limit is set), plans steps for
// replicas below that limit, feeds results back in plan order, and hands plans and request
// events to a sink. The scheduler core (real time, plans go to workers), the simulator
// (virtual time, a cost model plays the workers), trace replay and `troupe generate` (one
// local backend) are its four drivers-of-the-driver; what is theirs alone (heartbeats and
// gateway routing; the virtual clock and records; the backend call) stays with them.
//
// Like the policy it has no threads, no I/O and no clock: every call takes `now`.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "src/sched/policy.h"

namespace troupe::sched {

// Where a driver's decisions go. Both calls happen inside the driver call that made them.
class driver_sink {
 public:
  // A step for `replica`. The replica must execute its plans in the order given and answer
  // each with driver::on_result.
  virtual void on_plan(uint32_t replica, step_plan&& plan, double now) = 0;
  // Request events, in order. `from`: the replica whose step result produced them, or
  // nullopt for events made outside a step (cancellation, requests failed by a removal).
  virtual void on_events(std::vector<request_event>& events, std::optional<uint32_t> from, double now) = 0;

 protected:
  ~driver_sink() = default;
};

// A sink that drops everything: for calls whose plans or events nobody reads.
class null_sink final : public driver_sink {
 public:
  void on_plan(uint32_t, step_plan&&, double) override {}
  void on_events(std::vector<request_event>&, std::optional<uint32_t>, double) override {}
};

class driver {
 public:
  explicit driver(policy_config cfg);

  // The policy, for queries (stats, queued, check_invariants, take_trace) and for the few
  // calls a driver's owner makes on its own behalf.
  sched::policy& policy() { return policy_; }
  const sched::policy& policy() const { return policy_; }
  int32_t max_inflight_steps() const { return limit_; }

  // ---- replicas and requests ---------------------------------------------------------------
  void add_replica(const replica_info& r, double now);
  // Forgets the replica's steps in flight (a result still coming from it is stale) and
  // routes the events of requests its removal failed.
  void remove_replica(uint32_t id, double now, driver_sink& sink);
  void drain_replica(uint32_t id, double now) { policy_.drain_replica(id, now); }
  admission submit(request r, double now) { return policy_.submit(std::move(r), now); }
  void cancel(uint64_t id, double now, driver_sink& sink);

  // ---- steps ---------------------------------------------------------------------------------
  // One schedule() on one replica, when it is below its in-flight limit: events it made go
  // to the sink, then its plan, if any. Returns whether it planned a step. (A recorded
  // trace's step lines are such calls.)
  bool schedule(uint32_t replica, double now, driver_sink& sink);
  // Plans steps on every replica, in id order, until each is at its limit or has nothing to
  // run. Call it after anything changed (a submit, a result, a cancel, a replica added or
  // removed). Returns the number of steps planned.
  size_t pump(double now, driver_sink& sink);
  // The result of `replica`'s oldest step in flight: the policy's events, then those made
  // outside the step, go to the sink. A result that is not for that step (a replica that was
  // removed or registered again since) is stale: ignored, false. Plans nothing: pump after.
  bool on_result(uint32_t replica, const step_result& result, double now, driver_sink& sink);
  // The oldest step in flight failed without a result: it stops counting. The caller decides
  // what becomes of the replica (the scheduler removes it). False when `step_id` is stale.
  bool on_step_failed(uint32_t replica, uint64_t step_id);

  size_t in_flight(uint32_t replica) const;
  size_t in_flight() const;  // over all replicas

 private:
  void take_events(double now, std::optional<uint32_t> from, driver_sink& sink);

  sched::policy policy_;
  int32_t limit_;
  std::map<uint32_t, std::deque<uint64_t>> flights_;  // replica -> step ids sent, oldest first
};

}  // namespace troupe::sched
