#include "sim/simulator.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <string>

#include "sim/event_queue.h"
#include "src/sched/driver.h"
#include "troupe/error.h"

namespace troupe::sim {

namespace {

// Token ids the fake workers "sample". They only need to be deterministic and never
// end a sequence: requests carry no EOS ids and ignore_eos, so they stop by max_tokens.
// Prompts get scattered ids too, so that no two requests share a prefix by accident.
int32_t fake_token(uint64_t id, uint64_t pos) {
  uint64_t x = id * 0x9E3779B97F4A7C15ull + pos + 0x632BE59BD9B4E019ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return 100 + static_cast<int32_t>(x % 30000);
}

// The driver's sink: plans start on the virtual replicas, events fill the records.
class run final : public sched::driver_sink {
 public:
  run(const cluster_spec& c, const cost_model& cost, const workload& load, const sim_options& opts)
      : cluster_(c), cost_(cost), load_(load), opts_(opts), driver_(with_tenants(opts.policy, load.tenants)) {
    res_.tenants = load.tenants;
    res_.replicas = c.replicas();
    res_.kv_blocks_per_replica = c.kv_blocks_per_replica();
    res_.cost_model = cost.describe();
    if (c.loop_latency > 0)
      res_.cost_model += " + control loop " + std::to_string(c.loop_latency * 1e3) + " ms per step (" +
                         (driver_.max_inflight_steps() > 1 ? "pipelined: max" : "synchronous: sum") + ")";
    res_.batch_hist.assign(size_t(c.max_batch) + 1, 0);
    res_.requests.resize(load.requests.size());
    next_pos_.assign(load.requests.size(), 0);
    for (const auto& r : load.requests) {
      if (r.id >= load.requests.size())
        throw error(error_kind::failed, "workload request ids must be 0..n-1 (use generate or read_trace)", "id");
      auto& rec = res_.requests[r.id];
      rec.id = r.id;
      rec.tenant = r.tenant;
      rec.arrival = r.arrival;
      rec.prompt_tokens = r.prompt_tokens;
      rec.output_tokens = r.output_tokens;
    }
    const double window = load.requests.empty() ? 1.0 : std::max(load.requests.back().arrival, 1e-3);
    res_.bucket_width = window / std::max(opts.series_buckets, 1);
    replicas_.resize(size_t(res_.replicas));
    for (int32_t i = 0; i < res_.replicas; ++i) {
      sched::replica_info info;
      info.id = uint32_t(i);
      info.kv_blocks = res_.kv_blocks_per_replica;
      info.block_size = c.block_size;
      info.max_batch = c.max_batch;
      driver_.add_replica(info, 0.0);
    }
  }

  sim_result go() {
    if (!load_.requests.empty()) q_.at(load_.requests[0].arrival, [this] { arrive(0); });
    while (q_.run_one()) {
    }
    res_.end_time = q_.now();
    if (opts_.policy.trace) res_.policy_trace = driver_.policy().take_trace();
    for (uint32_t id = 0; id < replicas_.size(); ++id)
      if (const auto st = driver_.policy().stats(id)) res_.preemptions += int64_t(st->preemptions);
    if (opts_.progress) opts_.progress(1.0);
    return std::move(res_);
  }

 private:
  struct replica_state {
    bool busy = false;            // plans.front() is running
    std::deque<step_plan> plans;  // planned and not finished, in order
  };

  time_bucket& bucket(double t) {
    const size_t i = size_t(std::max(t, 0.0) / res_.bucket_width);
    if (i >= res_.series.size()) res_.series.resize(i + 1);
    return res_.series[i];
  }

  void arrive(size_t i) {
    const sim_request& r = load_.requests[i];
    if (i + 1 < load_.requests.size()) q_.at(load_.requests[i + 1].arrival, [this, i] { arrive(i + 1); });
    sched::request req;
    req.id = r.id;
    req.tenant = load_.tenants[r.tenant].name;
    req.priority = load_.tenants[r.tenant].priority;
    req.prompt.resize(size_t(r.prompt_tokens));
    for (int32_t p = 0; p < r.prompt_tokens; ++p) req.prompt[size_t(p)] = fake_token(~r.id, uint64_t(p));
    req.sampling.max_tokens = r.output_tokens;
    req.sampling.ignore_eos = true;
    const auto adm = driver_.submit(std::move(req), q_.now());
    if (!adm.accepted) {
      auto& rec = res_.requests[r.id];
      rec.status = request_status::rejected;
      rec.finish = q_.now();
      note_done();
    }
    driver_.pump(q_.now(), *this);
  }

  // With async scheduling the plan for step N+1 is made as soon as step N starts, and it
  // starts when N ends.
  void on_plan(uint32_t id, step_plan&& plan, double) override {
    auto& rs = replicas_[id];
    rs.plans.push_back(std::move(plan));
    if (!rs.busy) start(id);
  }

  void on_events(std::vector<sched::request_event>& events, std::optional<uint32_t> from, double now) override {
    for (const auto& ev : events) apply(ev, from.value_or(0), now);
  }

  // Starts the oldest planned step of a replica.
  void start(uint32_t id) {
    auto& rs = replicas_[id];
    rs.busy = true;
    const step_plan& plan = rs.plans.front();
    ++res_.steps;

    // Shape for the cost model; a position going back means the sequence was preempted
    // and is being recomputed.
    shape_.seqs.clear();
    double prefill = 0;
    for (const auto& w : plan.seqs) {
      shape_.seqs.push_back({int32_t(w.tokens.size()), int64_t(w.start_pos)});
      if (w.seq_id < next_pos_.size()) {
        if (w.start_pos < next_pos_[w.seq_id]) ++res_.requests[w.seq_id].preemptions;
        next_pos_[w.seq_id] = int64_t(w.start_pos) + int64_t(w.tokens.size());
      }
      if (w.tokens.size() > 1 || !w.sample) prefill += double(w.tokens.size());
    }
    const size_t batch = plan.seqs.size();
    if (batch >= res_.batch_hist.size()) res_.batch_hist.resize(batch + 1, 0);
    ++res_.batch_hist[batch];
    // KV utilization: blocks referenced by sequences (cached prefix blocks count as free).
    double kv = 0;
    if (const auto st = driver_.policy().stats(id); st && st->total_blocks > 0)
      kv = double(st->used_blocks) / double(st->total_blocks);
    res_.kv_util_sum += kv;
    res_.kv_util_max = std::max(res_.kv_util_max, kv);
    auto& b = bucket(q_.now());
    b.tokens_in += prefill;
    b.queue_sum += double(driver_.policy().queued());
    b.kv_sum += kv;
    b.steps += 1;

    const double dt = cost_.step_time(shape_);
    const double period = cluster_.step_period(dt, driver_.max_inflight_steps());
    res_.busy_time += period;
    if (opts_.on_step) {
      step_record rec;
      rec.start = q_.now();
      rec.duration = dt;
      rec.period = period;
      rec.replica = id;
      rec.seqs = int32_t(batch);
      rec.tokens = shape_.tokens();
      rec.prefill_tokens = int64_t(prefill);
      rec.context = shape_.context_sum();
      rec.kv_util = kv;
      rec.queued = int64_t(driver_.policy().queued());
      opts_.on_step(rec);
    }
    q_.after(period, [this, id] { finish_step(id); });
  }

  void finish_step(uint32_t id) {
    auto& rs = replicas_[id];
    const step_plan& plan = rs.plans.front();
    step_result result;
    result.step_id = plan.step_id;
    result.outputs.reserve(plan.seqs.size());
    // Tokens depend on the position only, so a placeholder (feed_last_sampled) needs no
    // resolving here.
    for (const auto& w : plan.seqs) {
      seq_output o;
      o.seq_id = w.seq_id;
      if (w.sample) o.token = fake_token(w.seq_id, uint64_t(w.start_pos) + w.tokens.size());
      result.outputs.push_back(std::move(o));
    }
    rs.busy = false;
    rs.plans.pop_front();
    const double now = q_.now();
    driver_.on_result(id, result, now, *this);
    if (!rs.plans.empty()) start(id);
    driver_.pump(now, *this);
  }

  void apply(const sched::request_event& ev, uint32_t replica, double now) {
    if (ev.id >= res_.requests.size()) return;
    auto& rec = res_.requests[ev.id];
    if (!ev.tokens.empty()) {
      if (rec.first_token < 0) rec.first_token = now;
      rec.generated += int32_t(ev.tokens.size());
      rec.replica = replica;
      bucket(now).tokens_out += double(ev.tokens.size());
    }
    if (ev.finished != sched::finish_reason::none && rec.finish < 0) {
      rec.finish = now;
      rec.status = ev.finished == sched::finish_reason::length || ev.finished == sched::finish_reason::stop
                       ? request_status::finished
                       : request_status::unfinished;
      bucket(now).finished += 1;
      note_done();
    }
  }

  void note_done() {
    ++done_;
    if (opts_.progress && (done_ & 0x3FF) == 0) opts_.progress(double(done_) / double(res_.requests.size()));
  }

  const cluster_spec& cluster_;
  const cost_model& cost_;
  const workload& load_;
  const sim_options& opts_;
  sched::driver driver_;
  event_queue q_;
  std::vector<replica_state> replicas_;
  std::vector<int64_t> next_pos_;  // per request: position after its last planned work
  step_shape shape_;               // reused to spare an allocation per step
  sim_result res_;
  uint64_t done_ = 0;
};

}  // namespace

sched::policy_config with_tenants(sched::policy_config cfg, const std::vector<tenant_spec>& tenants) {
  for (const auto& t : tenants) {
    const bool listed = std::any_of(cfg.tenants.begin(), cfg.tenants.end(),
                                    [&t](const sched::tenant_config& c) { return c.name == t.name; });
    if (listed) continue;
    sched::tenant_config tc;
    tc.name = t.name;
    tc.weight = t.share;
    cfg.tenants.push_back(tc);
  }
  return cfg;
}

sim_result simulate(const cluster_spec& cluster, const cost_model& cost, const workload& load,
                    const sim_options& opts) {
  cluster.validate();
  return run(cluster, cost, load, opts).go();
}

}  // namespace troupe::sim
