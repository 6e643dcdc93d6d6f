// The simulator's clock: a discrete-event queue in virtual time. Events at the same
// time run in the order they were scheduled, so a run is deterministic under a seed.
#pragma once
#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace troupe::sim {

class event_queue {
 public:
  using action = std::function<void()>;

  double now() const { return now_; }
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }

  // Schedules `a` at absolute virtual time t (seconds); t earlier than now() runs at now().
  void at(double t, action a) { heap_.push({t < now_ ? now_ : t, next_seq_++, std::move(a)}); }
  void after(double dt, action a) { at(now_ + dt, std::move(a)); }

  // Runs the earliest event; returns false when none is left.
  bool run_one() {
    if (heap_.empty()) return false;
    entry e = std::move(const_cast<entry&>(heap_.top()));
    heap_.pop();
    now_ = e.t;
    e.a();
    return true;
  }
  // Runs events up to and including time `until`; returns how many ran.
  uint64_t run_until(double until) {
    uint64_t n = 0;
    while (!heap_.empty() && heap_.top().t <= until && run_one()) ++n;
    if (now_ < until) now_ = until;
    return n;
  }

 private:
  struct entry {
    double t;
    uint64_t seq;
    action a;
    bool operator>(const entry& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  std::priority_queue<entry, std::vector<entry>, std::greater<entry>> heap_;
  double now_ = 0.0;
  uint64_t next_seq_ = 0;
};

}  // namespace troupe::sim
