// The scheduling policy: admission, continuous batching with chunked prefill, preemption,
// tenant fair share and routing. See policy.h for the shape of one step; this file reads in
// the order of a request's life. It decides; each replica's kv_cache_manager keeps the block
// bookkeeping (tables, growth, prefix hashing, swap slots), and observers (the trace writer)
// are told each decision.
#include "src/sched/policy.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>

#include "src/sched/fair_share.h"
#include "src/sched/kv_cache_manager.h"
#include "src/sched/policy_observer.h"
#include "src/sched/trace.h"

namespace troupe::sched {

namespace {

// Queued requests passed over for another replica's prefix cache before a replica stops
// looking further down the queue in one step (bounds the cost of one schedule()).
constexpr size_t kMaxAffinitySkips = 8;

}  // namespace

// ---- state ----------------------------------------------------------------------------

struct seq_state {
  request req;                   // its prompt moved into history
  std::vector<int32_t> history;  // prompt + generated
  int32_t n_prompt = 0;
  uint64_t order = 0;  // submit order: breaks ties, tells a resubmitted id from the old one
  double arrival = 0;
  double enqueued = 0;  // when it last entered the queue
  enum class where : unsigned char { queued, running, swapped } at = where::queued;
  bool resumed = false;  // preempted or moved: goes before fresh requests of its level
  uint32_t replica = 0;
  kv_seq kv;                  // its table covers [0, n_computed + planned)
  int32_t n_computed = 0;     // tokens of history whose KV is in kv.table
  uint64_t planned_step = 0;  // the last step that feeds it
  tenant_state* tenant = nullptr;
  // Async scheduling (policy_config::max_inflight_steps): work planned but not answered.
  int32_t n_inflight = 0;    // tokens fed by steps in flight, after n_computed
  int32_t pending = 0;       // tokens sampled by steps in flight, not in history yet
  uint64_t sample_step = 0;  // the latest step in flight that samples it
  // Bumped whenever its KV is dropped or moved (preemption, replica removed): results of
  // work planned before are void.
  uint64_t epoch = 0;
  // Plans as diffs: its replica's worker holds its history, sampling and the first
  // n_table_sent entries of table, from work already planned (replica_info::plan_diffs).
  bool on_worker = false;
  int32_t n_table_sent = 0;

  int32_t generated() const { return static_cast<int32_t>(history.size()) - n_prompt; }
  int32_t scheduled() const { return n_computed + n_inflight; }  // positions fed or being fed
  int32_t remaining() const { return static_cast<int32_t>(history.size()) + pending - scheduled(); }
  void forget_inflight() {
    n_inflight = 0;
    pending = 0;
    ++epoch;
  }
};

struct flight_item {
  uint64_t id = 0, order = 0, epoch = 0;
  int32_t n = 0;
  bool sample = false;
};

struct flight {
  uint64_t step_id = 0;
  std::vector<flight_item> items;  // in plan order
};

struct replica_state {
  replica_info info;
  kv_cache_manager kv;
  std::vector<seq_state*> running;  // holding device blocks (prefilling or decoding)
  std::vector<seq_state*> swapped;
  uint64_t step_id = 0;               // the step being (or last) planned
  std::vector<flight_item> planning;  // the plan under way, in plan order
  std::deque<flight> flights;         // planned and not answered, oldest first
  bool draining = false;              // admits nothing new (policy::drain_replica)
  uint64_t prefix_hit_tokens = 0, preemptions = 0;
  // Sequences its worker holds and must drop (step_plan::released), sent with the next plan.
  std::vector<uint64_t> released;

  replica_state(const replica_info& r, int64_t host_blocks, bool prefix_caching, int32_t policy_step_tokens)
      : info(r),
        kv(r.kv_blocks, r.block_size, host_blocks, prefix_caching),
        step_tokens(r.max_step_tokens > 0
                        ? static_cast<int32_t>(std::min<int64_t>(r.max_step_tokens, policy_step_tokens))
                        : policy_step_tokens) {}
  int32_t step_tokens;  // its steps' token budget: the policy's, or less when its worker takes less
  // Runs requests for its model; a request naming no model runs anywhere.
  bool serves(const request& q) const { return q.model.empty() || q.model == info.model; }
  bool fits(const seq_state& s) const {
    return serves(s.req) && kv.blocks_for(s.n_prompt + s.req.sampling.max_tokens) <= info.kv_blocks;
  }
};

struct policy::impl {
  policy_config cfg;
  fair_share tenants;
  std::map<uint32_t, std::unique_ptr<replica_state>> replicas;  // ordered: deterministic
  std::unordered_map<uint64_t, std::unique_ptr<seq_state>> seqs;
  std::vector<seq_state*> queue;          // waiting for admission, unordered (scanned by key)
  std::map<int32_t, int64_t> priorities;  // priority -> unfinished jobs: the aging cap
  int64_t queued_tokens = 0;              // history tokens of the queue (SLO predictor)
  uint64_t next_order = 1, next_step = 1;
  std::vector<request_event> events;        // outside a step: cancels, failures
  double now = 0;                           // of the public call under way
  std::unique_ptr<trace_writer> tracer;     // policy_config::trace
  std::vector<policy_observer*> observers;  // the tracer first

  step_decision rec;  // what the schedule() under way decided

  explicit impl(policy_config c) : cfg(std::move(c)), tenants(cfg.tenants, cfg.default_tenant) {}

  // ---- ordering -----------------------------------------------------------------------

  int64_t level(const seq_state& s, double now) const {
    const int32_t p = s.req.priority;
    if (cfg.aging_s <= 0 || priorities.empty()) return p;
    const int32_t cap = priorities.rbegin()->first;
    const double aged = p + std::floor(std::max(0.0, now - s.arrival) / cfg.aging_s);
    return static_cast<int64_t>(std::max<double>(p, std::min<double>(cap, aged)));
  }

  // Running order: higher level first, then earlier arrival. The victim is the last.
  bool runs_before(const seq_state& a, int64_t la, const seq_state& b, int64_t lb) const {
    if (la != lb) return la > lb;
    if (a.arrival != b.arrival) return a.arrival < b.arrival;
    return a.order < b.order;
  }

  // Queue order: level, resumed first, tenant with the lowest counter, arrival.
  bool queued_before(const seq_state& a, int64_t la, const seq_state& b, int64_t lb) const {
    if (la != lb) return la > lb;
    if (a.resumed != b.resumed) return a.resumed;
    if (a.tenant->vtime != b.tenant->vtime) return a.tenant->vtime < b.tenant->vtime;
    if (a.arrival != b.arrival) return a.arrival < b.arrival;
    return a.order < b.order;
  }

  // ---- observers ----------------------------------------------------------------------

  template <class F>
  void notify(F&& f) {
    for (policy_observer* o : observers) f(*o);
  }

  // ---- blocks -------------------------------------------------------------------------

  int64_t watermark(const replica_state& r) const {
    return static_cast<int64_t>(std::ceil(cfg.kv_watermark * static_cast<double>(r.info.kv_blocks)));
  }

  // ---- queue --------------------------------------------------------------------------

  void enqueue(seq_state& s) {
    if (s.tenant->queued_tokens == 0) tenants.backlogged(*s.tenant);
    s.at = seq_state::where::queued;
    s.enqueued = now;
    queue.push_back(&s);
    queued_tokens += static_cast<int64_t>(s.history.size());
    s.tenant->queued_tokens += static_cast<int64_t>(s.history.size());
  }

  void dequeue(seq_state& s) {
    queue.erase(std::find(queue.begin(), queue.end(), &s));
    queued_tokens -= static_cast<int64_t>(s.history.size());
    s.tenant->queued_tokens -= static_cast<int64_t>(s.history.size());
  }

  // The worker of s's replica drops what it holds of s with the next plan: s will be sent
  // in full if it comes back (a preemption or a move), or it is finished.
  static void leave_worker(replica_state& r, seq_state& s) {
    if (!s.on_worker) return;
    r.released.push_back(s.req.id);
    s.on_worker = false;
    s.n_table_sent = 0;
  }

  // Back to the queue to be prefilled again (prompt + generated) wherever there is room.
  void requeue(seq_state& s) {
    s.on_worker = false;  // the caller told its replica, or the replica is gone
    s.n_table_sent = 0;
    s.kv.table.clear();  // given back by the caller, or gone with the replica
    s.kv.n_registered = 0;
    s.kv.host_slots.clear();
    s.n_computed = 0;
    s.resumed = true;
    s.forget_inflight();  // its first plan elsewhere feeds real tokens only
    enqueue(s);
  }

  static void erase_from(std::vector<seq_state*>& v, seq_state* s) { v.erase(std::find(v.begin(), v.end(), s)); }

  // ---- finishing ----------------------------------------------------------------------

  // Removes a request from every structure; its event is the caller's.
  void drop(seq_state& s) {
    if (s.at == seq_state::where::queued) {
      dequeue(s);
    } else {
      replica_state& r = *replicas.at(s.replica);
      leave_worker(r, s);
      r.kv.free(s.kv);
      erase_from(s.at == seq_state::where::running ? r.running : r.swapped, &s);
    }
    tenants.deactivate(*s.tenant);
    if (--priorities[s.req.priority] == 0) priorities.erase(s.req.priority);
    seqs.erase(s.req.id);
  }

  finish_reason stop_reason(const seq_state& s, int32_t token) const {
    const auto& sp = s.req.sampling;
    auto has = [token](const std::vector<int32_t>& v) { return std::find(v.begin(), v.end(), token) != v.end(); };
    if (!sp.ignore_eos && has(s.req.eos_ids)) return finish_reason::stop;
    if (has(sp.stop_ids)) return finish_reason::stop;
    if (s.generated() >= sp.max_tokens) return finish_reason::length;
    if (cfg.max_context > 0 && static_cast<int64_t>(s.history.size()) >= cfg.max_context) return finish_reason::length;
    return finish_reason::none;
  }

  // ---- preemption ---------------------------------------------------------------------

  // A victim may have work in flight: its blocks go back now, and a later plan may hand
  // them to another sequence. That is safe because a worker executes its plans strictly in
  // order: every step still writing them runs before any step that reuses them.
  void preempt(replica_state& r, seq_state& v) {
    ++r.preemptions;
    rec.preempted.push_back(v.req.id);
    erase_from(r.running, &v);
    leave_worker(r, v);
    const bool swap = cfg.preemption == preemption_mode::swap && v.n_computed > 0 && !v.kv.table.empty();
    if (swap && r.kv.swap_out(v.kv)) {
      v.forget_inflight();  // comes back from n_computed, re-feeding what was in flight
      v.at = seq_state::where::swapped;
      r.swapped.push_back(&v);
      rec.swapped_out.push_back(v.req.id);
      return;
    }
    r.kv.free(v.kv);
    requeue(v);
  }

  // Grows s's table to cover `tokens` positions, preempting from the back of `order` (not
  // yet planned this step) when blocks run out. False when s itself had to go.
  bool grow(replica_state& r, seq_state& s, int64_t tokens, const std::vector<seq_state*>& order, size_t& tail,
            std::vector<int32_t>& added) {
    while (!r.kv.grow(s.kv, tokens, added)) {
      seq_state* victim = nullptr;
      while (tail > 0) {
        seq_state* v = order[tail - 1];
        if (v == &s) break;
        --tail;
        if (v->at == seq_state::where::running && v->replica == r.info.id && v->planned_step != r.step_id) {
          victim = v;
          break;
        }
      }
      if (!victim) {
        preempt(r, s);
        return false;
      }
      preempt(r, *victim);
    }
    return true;
  }

  // ---- planning -----------------------------------------------------------------------

  void plan_work(replica_state& r, step_plan& plan, seq_state& s, int32_t n, seq_decision&& d) {
    seq_work w;
    w.seq_id = s.req.id;
    const int32_t pos = s.scheduled();
    if (pos < static_cast<int32_t>(s.history.size())) {
      w.tokens.assign(s.history.begin() + pos, s.history.begin() + pos + n);
    } else {  // the token sampled by this sequence's work in the previous step (n == 1)
      w.tokens.assign(1, -1);
      w.feed_last_sampled = true;
    }
    w.start_pos = pos;
    w.sample = pos + n == static_cast<int32_t>(s.history.size()) + s.pending;
    if (s.on_worker) {  // the worker has the rest; it appends the tokens it samples itself
      w.diff = true;
      w.block_table.assign(s.kv.table.begin() + s.n_table_sent, s.kv.table.end());
    } else {
      w.block_table = s.kv.table;
      w.sampling = s.req.sampling;
      w.history = s.history;
      w.n_prompt = s.n_prompt;
    }
    if (r.info.plan_diffs) {
      s.on_worker = true;
      s.n_table_sent = static_cast<int32_t>(s.kv.table.size());
    }
    r.planning.push_back({s.req.id, s.order, s.epoch, n, w.sample});
    s.planned_step = r.step_id;
    s.n_inflight += n;
    if (w.sample) {
      ++s.pending;
      s.sample_step = r.step_id;
    }
    tenants.charge(*s.tenant, n);
    d.id = s.req.id;
    d.n = n;
    d.start_pos = pos;
    d.sample = w.sample;
    rec.seqs.push_back(std::move(d));
    plan.seqs.push_back(std::move(w));
  }

  // Tokens of its next chunk for a sequence with `remaining` tokens to feed, or 0 to wait.
  // A prompt longer than the replica's whole step budget is chunked even with chunked prefill off.
  int32_t chunk(const replica_state& r, int32_t remaining, int32_t budget) const {
    if (cfg.chunked_prefill || remaining > r.step_tokens) return std::min(remaining, budget);
    return remaining <= budget ? remaining : 0;  // whole prompts only
  }

  // A sequence whose next token is still being sampled can be fed it (a placeholder) only
  // when that is its single pending token, sampled by the step planned just before on this
  // replica (the worker remembers no older step's tokens), and the token it would sample
  // is still within max_tokens and max_context.
  bool can_feed_pending(const replica_state& r, const seq_state& s) const {
    if (s.pending == 0) return true;
    if (s.pending > 1 || r.flights.empty() || r.flights.back().step_id != s.sample_step) return false;
    if (s.generated() + s.pending >= s.req.sampling.max_tokens) return false;
    return cfg.max_context <= 0 || static_cast<int64_t>(s.history.size()) + s.pending < cfg.max_context;
  }

  // Running requests plus pending prefill tokens: what routing balances.
  static int64_t load(const replica_state& r) {
    int64_t l = 0;
    for (const auto* v : {&r.running, &r.swapped})
      for (const seq_state* s : *v) l += std::max(1, s->remaining());
    return l;
  }

  bool can_admit(replica_state& r, seq_state& s) {
    if (static_cast<int32_t>(r.running.size()) >= r.info.max_batch || !r.fits(s)) return false;
    const auto need = r.kv.blocks_for(static_cast<int64_t>(s.history.size()));
    return r.kv.available() - need >= watermark(r);
  }

  // The replica a queued request should go to (see policy_config::affinity_load_factor).
  uint32_t route(seq_state& s, uint32_t asking) {
    const replica_state* best_hit = nullptr;
    const replica_state* least = nullptr;
    int32_t best_hits = 0, least_hits = 0;
    int64_t best_hit_load = 0, least_load = 0;
    for (const auto& [id, rp] : replicas) {
      const replica_state& r = *rp;
      if (!r.fits(s) || r.draining) continue;
      const int32_t bs = r.info.block_size;
      const int32_t hits = r.kv.prefix_hits(s.kv, s.history, (s.history.size() - 1) / bs);
      const int64_t l = load(r);
      // Ties go to the asking replica: no reason to wait for another.
      const bool asking_tie = id == asking;
      if (!least || l < least_load || (l == least_load && asking_tie)) least = &r, least_load = l, least_hits = hits;
      if (!best_hit || hits > best_hits || (hits == best_hits && (l < best_hit_load || asking_tie)))
        best_hit = &r, best_hits = hits, best_hit_load = l;
    }
    if (!least) return asking;
    if (best_hits > least_hits && static_cast<double>(best_hit_load) <=
                                      cfg.affinity_load_factor * static_cast<double>(least_load + cfg.max_step_tokens))
      return best_hit->info.id;
    return least->info.id;
  }

  // The best queued request for replica r, passing over those in `skip` and those r cannot
  // hold.
  seq_state* best_queued(const replica_state& r, double now, const std::vector<seq_state*>& skip) const {
    seq_state* best = nullptr;
    int64_t best_level = 0;
    for (seq_state* s : queue) {
      if (!r.fits(*s) || std::find(skip.begin(), skip.end(), s) != skip.end()) continue;
      const int64_t l = level(*s, now);
      if (!best || queued_before(*s, l, *best, best_level)) best = s, best_level = l;
    }
    return best;
  }

  std::optional<planned_step> schedule(replica_state& r, double now);
  void admit(replica_state& r, step_plan& plan, int32_t& budget, double now);
};

// ---- schedule -----------------------------------------------------------------------------

std::optional<planned_step> policy::impl::schedule(replica_state& r, double t) {
  now = t;
  r.step_id = next_step;
  rec = step_decision{};
  r.kv.clear_freed();
  planned_step out;
  out.replica = r.info.id;
  out.plan.step_id = r.step_id;
  step_plan& plan = out.plan;
  int32_t budget = r.step_tokens;
  r.planning.clear();

  // Best first; victims are taken from the back.
  std::vector<std::pair<int64_t, seq_state*>> keyed;
  keyed.reserve(r.running.size());
  for (seq_state* s : r.running) keyed.emplace_back(level(*s, now), s);
  std::sort(keyed.begin(), keyed.end(),
            [this](const auto& a, const auto& b) { return runs_before(*a.second, a.first, *b.second, b.first); });
  std::vector<seq_state*> order;
  order.reserve(keyed.size());
  for (const auto& k : keyed) order.push_back(k.second);
  size_t tail = order.size();

  // 1. Running decodes, one token each.
  for (seq_state* s : order) {
    if (budget == 0) break;
    if (s->at != seq_state::where::running || s->remaining() != 1 || !can_feed_pending(r, *s)) continue;
    seq_decision d;
    if (!grow(r, *s, s->scheduled() + 1, order, tail, d.alloc)) continue;
    plan_work(r, plan, *s, 1, std::move(d));
    --budget;
  }
  // 2. The next chunk of running prefills.
  for (seq_state* s : order) {
    if (budget == 0) break;
    if (s->at != seq_state::where::running || s->planned_step == r.step_id || s->remaining() <= 1) continue;
    const int32_t n = chunk(r, s->remaining(), budget);
    if (n == 0) continue;
    seq_decision d;
    if (!grow(r, *s, s->scheduled() + n, order, tail, d.alloc)) continue;
    plan_work(r, plan, *s, n, std::move(d));
    budget -= n;
  }
  // 3. Swapped sequences come back before new admissions.
  if (!r.swapped.empty()) {
    std::vector<seq_state*> back = r.swapped;
    std::sort(back.begin(), back.end(),
              [this](seq_state* a, seq_state* b) { return runs_before(*a, level(*a, now), *b, level(*b, now)); });
    for (seq_state* s : back) {
      if (budget == 0 || static_cast<int32_t>(r.running.size()) >= r.info.max_batch) break;
      const int32_t n = chunk(r, s->remaining(), budget);
      const auto host_blocks = static_cast<int64_t>(s->kv.host_slots.size());
      const int64_t need = std::max(host_blocks, r.kv.blocks_for(s->n_computed + n));
      if (n == 0 || r.kv.available() - need < (r.running.empty() ? 0 : watermark(r))) break;
      seq_decision d;
      r.kv.swap_in(s->kv, d.alloc);  // the worker copies the KV back before the step
      s->at = seq_state::where::running;
      erase_from(r.swapped, s);
      r.running.push_back(s);
      rec.swapped_in.push_back(s->req.id);
      size_t no_tail = 0;  // room was checked above
      if (!grow(r, *s, s->n_computed + n, order, no_tail, d.alloc)) continue;
      plan_work(r, plan, *s, n, std::move(d));
      budget -= n;
    }
  }
  // 4. New admissions from the global queue, once every swapped sequence is back.
  if (r.swapped.empty() && !r.draining) admit(r, plan, budget, now);

  const bool changed = !plan.seqs.empty() || !rec.preempted.empty();
  if (changed) {
    rec.t = now;
    rec.replica = r.info.id;
    rec.step = r.step_id;
    rec.freed = r.kv.take_freed();
    notify([this](policy_observer& o) { o.on_step(rec); });
  }
  if (plan.seqs.empty()) {
    r.planning.clear();
    if (changed) ++next_step;  // keep step ids of recorded lines unique
    return std::nullopt;
  }
  ++next_step;
  r.flights.push_back({r.step_id, std::move(r.planning)});
  r.planning.clear();
  r.kv.take_copies(plan);
  plan.released = std::exchange(r.released, {});
  return out;
}

void policy::impl::admit(replica_state& r, step_plan& plan, int32_t& budget, double now) {
  std::vector<seq_state*> skipped;
  const int32_t bs = r.info.block_size;
  while (budget > 0 && static_cast<int32_t>(r.running.size()) < r.info.max_batch && !queue.empty()) {
    seq_state* s = best_queued(r, now, skipped);
    if (!s) return;
    if (replicas.size() > 1) {
      const uint32_t target = route(*s, r.info.id);
      if (target != r.info.id && now - s->enqueued < cfg.affinity_wait_s && can_admit(*replicas.at(target), *s)) {
        skipped.push_back(s);
        if (skipped.size() >= kMaxAffinitySkips) return;
        continue;
      }
    }
    // At least the last token is computed, to produce logits.
    const auto max_hits = static_cast<int32_t>((s->history.size() - 1) / bs);
    const int32_t hits = r.kv.prefix_hits(s->kv, s->history, max_hits);
    const int32_t cached = hits * bs;
    const int32_t n = chunk(r, static_cast<int32_t>(s->history.size()) - cached, budget);
    if (n == 0) return;  // a whole prompt waits for a step with room (chunked prefill off)

    // Hit blocks that sit unreferenced in the LRU stop being available once shared.
    const int64_t avail = r.kv.available() - r.kv.idle_hits(s->kv, hits);
    const int64_t need_chunk = r.kv.blocks_for(cached + n) - hits;
    const int64_t need_all = r.kv.blocks_for(static_cast<int64_t>(s->history.size())) - hits;
    // The watermark keeps room for running decodes; an idle replica takes anything that fits.
    if (r.running.empty() ? avail < need_chunk : avail - need_all < watermark(r)) return;

    dequeue(*s);
    tenants.admitted(*s->tenant);
    r.kv.share_prefix(s->kv, hits);
    s->n_computed = cached;
    s->at = seq_state::where::running;
    s->replica = r.info.id;
    r.running.push_back(s);
    r.prefix_hit_tokens += static_cast<uint64_t>(cached);
    rec.admitted.push_back(s->req.id);
    seq_decision d;
    size_t no_tail = 0;
    grow(r, *s, cached + n, {}, no_tail, d.alloc);  // room was checked above
    plan_work(r, plan, *s, n, std::move(d));
    budget -= n;
  }
}

// ---- the public face ----------------------------------------------------------------------

policy::policy(policy_config cfg) {
  if (cfg.max_step_tokens <= 0)
    throw error(error_kind::failed, "max_step_tokens: expected > 0, got " + std::to_string(cfg.max_step_tokens),
                "max_step_tokens");
  if (!(cfg.kv_watermark >= 0 && cfg.kv_watermark < 1))
    throw error(error_kind::failed, "kv_watermark: expected a fraction in [0, 1)", "kv_watermark");
  if (!(cfg.affinity_load_factor >= 1))
    throw error(error_kind::failed, "affinity_load_factor: expected >= 1", "affinity_load_factor");
  if (cfg.host_kv_blocks < 0) throw error(error_kind::failed, "host_kv_blocks: expected >= 0", "host_kv_blocks");
  if (cfg.max_inflight_steps < 1)
    throw error(error_kind::failed, "max_inflight_steps: expected >= 1, got " + std::to_string(cfg.max_inflight_steps),
                "max_inflight_steps");
  impl_ = new impl(std::move(cfg));
  if (impl_->cfg.trace) {  // its first line is the config: a replay rebuilds this policy
    impl_->tracer = std::make_unique<trace_writer>(impl_->cfg);
    impl_->observers.push_back(impl_->tracer.get());
  }
}

policy::~policy() { delete impl_; }

void policy::add_replica(const replica_info& r, double now) {
  auto bad = [](const char* field, const char* expected) {
    throw error(error_kind::failed, std::string("replica_info.") + field + ": expected " + expected, field);
  };
  if (r.kv_blocks <= 0) bad("kv_blocks", "> 0");
  if (r.kv_blocks > INT32_MAX) bad("kv_blocks", "< 2^31");
  if (r.block_size <= 0) bad("block_size", "> 0");
  if (r.max_batch <= 0) bad("max_batch", "> 0");
  if (impl_->replicas.count(r.id))
    throw error(error_kind::failed, "replica_info.id: replica " + std::to_string(r.id) + " is already added", "id");
  if (r.host_kv_blocks < -1) bad("host_kv_blocks", ">= 0 (or -1: the policy's host_kv_blocks)");
  if (r.host_kv_blocks > INT32_MAX) bad("host_kv_blocks", "< 2^31");
  if (r.max_step_tokens < 0) bad("max_step_tokens", ">= 0 (0: the policy's max_step_tokens)");
  const int64_t host = r.host_kv_blocks >= 0 ? r.host_kv_blocks : impl_->cfg.host_kv_blocks;
  impl_->replicas.emplace(
      r.id, std::make_unique<replica_state>(r, host, impl_->cfg.prefix_caching, impl_->cfg.max_step_tokens));
  impl_->notify([&](policy_observer& o) { o.on_add_replica(now, r); });
}

void policy::drain_replica(uint32_t id, double now) {
  auto it = impl_->replicas.find(id);
  if (it == impl_->replicas.end()) return;
  impl_->notify([&](policy_observer& o) { o.on_drain_replica(now, id); });
  it->second->draining = true;
}

void policy::remove_replica(uint32_t id, double now) {
  impl& m = *impl_;
  auto it = m.replicas.find(id);
  if (it == m.replicas.end()) return;
  m.notify([&](policy_observer& o) { o.on_remove_replica(now, id); });
  m.now = now;
  replica_state& r = *it->second;
  // Its KV is gone with it: resume from the reported tokens elsewhere. A result still in
  // flight is dropped (on_result ignores unknown replicas), so no token is reported twice.
  for (auto* v : {&r.running, &r.swapped})
    for (seq_state* s : *v) m.requeue(*s);
  m.replicas.erase(it);
  if (m.replicas.empty()) return;  // wait for replicas to come back
  std::vector<seq_state*> stranded;
  for (seq_state* s : m.queue) {
    bool served = false, fits = false;
    for (const auto& [rid, rp] : m.replicas) {
      served = served || rp->serves(s->req);
      fits = fits || rp->fits(*s);
    }
    if (served && !fits) stranded.push_back(s);  // none serving its model: it waits, as with no replica
  }
  for (seq_state* s : stranded) {
    request_event e;
    e.id = s->req.id;
    e.finished = finish_reason::error;
    e.error =
        "no remaining replica holds prompt + max_tokens = " + std::to_string(s->n_prompt + s->req.sampling.max_tokens) +
        " tokens";
    m.drop(*s);
    m.events.push_back(std::move(e));
  }
}

admission policy::submit(request rq, double now) {
  impl& m = *impl_;
  admission a;
  auto reject = [&](error_kind kind, std::string field, std::string message) {
    a.accepted = false;
    a.error = {kind, std::move(message), std::move(field)};
  };
  const auto n_prompt = static_cast<int64_t>(rq.prompt.size());
  const int64_t total = n_prompt + rq.sampling.max_tokens;
  const std::string bad_sampling = validate(rq.sampling);
  int64_t largest = 0;
  // Only replicas of its model count; with none (yet), it waits like with no replica at all.
  bool served = false, fits = false;
  for (const auto& [id, r] : m.replicas) {
    if (!r->serves(rq)) continue;
    served = true;
    largest = std::max(largest, r->info.kv_blocks * r->info.block_size);
    fits = fits || r->kv.blocks_for(total) <= r->info.kv_blocks;
  }
  fits = fits || !served;
  tenant_state& tenant = m.tenants.get(rq.tenant);
  std::string over;
  if (m.seqs.count(rq.id)) {
    reject(error_kind::failed, "id", "id: request " + std::to_string(rq.id) + " is already submitted");
  } else if (rq.prompt.empty()) {
    reject(error_kind::failed, "prompt", "prompt: expected at least one token");
  } else if (!bad_sampling.empty()) {
    reject(error_kind::failed, bad_sampling.substr(0, bad_sampling.find(':')), bad_sampling);
  } else if (m.cfg.max_context > 0 && total > m.cfg.max_context) {
    reject(error_kind::failed, n_prompt >= m.cfg.max_context ? "prompt" : "max_tokens",
           "prompt + max_tokens: " + std::to_string(total) + " tokens, over max_context " +
               std::to_string(m.cfg.max_context));
  } else if (!fits) {
    reject(error_kind::failed, n_prompt >= largest ? "prompt" : "max_tokens",
           "prompt + max_tokens: " + std::to_string(total) + " tokens never fit the KV cache of a replica (at most " +
               std::to_string(largest) + " tokens)");
  } else if (!m.cfg.chunked_prefill && n_prompt > m.cfg.max_step_tokens) {
    reject(error_kind::failed, "prompt",
           "prompt: " + std::to_string(n_prompt) + " tokens, over max_step_tokens " +
               std::to_string(m.cfg.max_step_tokens) + " with chunked prefill off");
  } else if (static_cast<int64_t>(m.queue.size()) >= m.cfg.max_queued) {
    reject(error_kind::overloaded, "queue",
           "queue: " + std::to_string(m.queue.size()) + " requests waiting, the limit");
  } else if (!(over = m.tenants.over_limit(tenant, n_prompt)).empty()) {
    reject(error_kind::overloaded, "tenant", over);
  } else if (m.cfg.ttft_slo_s > 0 && m.cfg.prefill_tokens_per_s > 0) {
    const double replicas = static_cast<double>(std::max<size_t>(1, m.replicas.size()));
    const double ttft = static_cast<double>(m.queued_tokens + n_prompt) / (m.cfg.prefill_tokens_per_s * replicas);
    if (ttft > m.cfg.ttft_slo_s)
      reject(error_kind::overloaded, "ttft",
             "ttft: predicted " + std::to_string(ttft) + " s from queued prefill, over the bound " +
                 std::to_string(m.cfg.ttft_slo_s) + " s");
  }
  m.notify([&](policy_observer& o) { o.on_submit(now, rq, a); });
  if (!a.accepted) return a;

  auto s = std::make_unique<seq_state>();
  s->history = std::move(rq.prompt);
  s->n_prompt = static_cast<int32_t>(s->history.size());
  s->history.reserve(s->history.size() + rq.sampling.max_tokens);
  s->req = std::move(rq);
  s->req.prompt.clear();
  s->order = m.next_order++;
  s->arrival = now;
  s->tenant = &tenant;
  m.now = now;
  m.tenants.activate(tenant);
  ++m.priorities[s->req.priority];
  m.enqueue(*s);
  m.seqs.emplace(s->req.id, std::move(s));
  return a;
}

void policy::cancel(uint64_t id, double now) {
  impl& m = *impl_;
  auto it = m.seqs.find(id);
  if (it == m.seqs.end()) return;
  seq_state& s = *it->second;
  replica_state* r = s.at == seq_state::where::queued ? nullptr : m.replicas.at(s.replica).get();
  if (r) r->kv.clear_freed();
  // Blocks go back at once: a worker executes its plans strictly in order, so a step that
  // reuses them runs after every step in flight that still writes them; the outputs of
  // those steps for this id are ignored when they arrive.
  m.drop(s);
  const std::vector<int32_t> freed = r ? r->kv.take_freed() : std::vector<int32_t>{};
  m.notify([&](policy_observer& o) { o.on_cancel(now, id, freed); });
  request_event e;
  e.id = id;
  e.finished = finish_reason::cancelled;
  m.events.push_back(std::move(e));
}

std::optional<planned_step> policy::schedule(uint32_t replica, double now) {
  auto it = impl_->replicas.find(replica);
  if (it == impl_->replicas.end() || static_cast<int64_t>(it->second->flights.size()) >= impl_->cfg.max_inflight_steps)
    return std::nullopt;
  return impl_->schedule(*it->second, now);
}

std::vector<request_event> policy::on_result(uint32_t replica, const step_result& result, double now) {
  impl& m = *impl_;
  std::vector<request_event> out;
  auto it = m.replicas.find(replica);
  if (it == m.replicas.end()) return out;  // a replica removed while its step was in flight
  replica_state& r = *it->second;
  if (r.flights.empty() || result.step_id != r.flights.front().step_id)
    throw error(error_kind::failed,
                "step_result.step_id: " + std::to_string(result.step_id) +
                    " is not the oldest step in flight on replica " + std::to_string(replica),
                "step_id");
  const std::vector<flight_item>& flight = r.flights.front().items;
  if (result.outputs.size() != flight.size())
    throw error(error_kind::failed,
                "step_result.outputs: expected " + std::to_string(flight.size()) + " outputs, got " +
                    std::to_string(result.outputs.size()),
                "outputs");
  for (size_t i = 0; i < flight.size(); ++i) {
    const seq_output& o = result.outputs[i];
    if (o.seq_id != flight[i].id || (flight[i].sample && o.token < 0))
      throw error(error_kind::failed,
                  "step_result.outputs[" + std::to_string(i) + "]: expected seq " + std::to_string(flight[i].id) +
                      (flight[i].sample ? " with a sampled token" : ""),
                  "outputs");
  }
  r.kv.clear_freed();
  std::vector<std::pair<uint64_t, finish_reason>> finished;
  for (size_t i = 0; i < flight.size(); ++i) {
    const flight_item& f = flight[i];
    auto sit = m.seqs.find(f.id);
    if (sit == m.seqs.end()) continue;  // finished or cancelled since it was planned
    seq_state& s = *sit->second;
    // A resubmitted id, or preempted / moved since: the work was void.
    if (s.order != f.order || s.epoch != f.epoch || s.at != seq_state::where::running || s.replica != replica) continue;
    s.n_computed += f.n;
    s.n_inflight -= f.n;
    r.kv.register_computed(s.kv, s.history, s.n_computed);
    if (!f.sample) continue;
    --s.pending;
    const seq_output& o = result.outputs[i];
    s.history.push_back(o.token);
    request_event e;
    e.id = s.req.id;
    e.tokens.push_back({o.token, o.logprob});
    if (s.req.sampling.top_logprobs > 0) e.top.push_back(o.top);
    e.finished = m.stop_reason(s, o.token);
    if (e.finished != finish_reason::none) {
      finished.emplace_back(s.req.id, e.finished);
      m.drop(s);
    }
    out.push_back(std::move(e));
  }
  r.flights.pop_front();
  const std::vector<int32_t> freed = r.kv.take_freed();
  m.notify([&](policy_observer& o) { o.on_result(now, replica, result, finished, freed); });
  return out;
}

std::vector<request_event> policy::take_events() { return std::exchange(impl_->events, {}); }

size_t policy::queued() const { return impl_->queue.size(); }

size_t policy::running() const { return impl_->seqs.size() - impl_->queue.size(); }

std::optional<replica_stats> policy::stats(uint32_t replica) const {
  auto it = impl_->replicas.find(replica);
  if (it == impl_->replicas.end()) return std::nullopt;
  const replica_state& r = *it->second;
  replica_stats st;
  const block_pool& pool = r.kv.pool();
  st.total_blocks = pool.total();
  st.free_blocks = pool.free_count();
  st.used_blocks = pool.used_count();
  st.cached_blocks = pool.cached_count();
  st.host_blocks_used = pool.host_used();
  st.running = r.running.size();
  st.swapped = r.swapped.size();
  st.prefix_hit_tokens = r.prefix_hit_tokens;
  st.preemptions = r.preemptions;
  return st;
}

std::string policy::take_trace() { return impl_->tracer ? impl_->tracer->take() : std::string(); }

void policy::add_observer(policy_observer& o) { impl_->observers.push_back(&o); }

// ---- invariants ---------------------------------------------------------------------------

std::string policy::check_invariants() const {
  const impl& m = *impl_;
  auto fail = [](const std::string& what) { return what; };
  size_t bound = 0;
  for (const auto& [id, rp] : m.replicas) {
    const replica_state& r = *rp;
    const std::string where = "replica " + std::to_string(id) + ": ";
    std::vector<const kv_seq*> running_kv, swapped_kv;
    for (const seq_state* s : r.running) {
      if (s->at != seq_state::where::running || s->replica != id) return fail(where + "running list holds a stranger");
      running_kv.push_back(&s->kv);
      const int64_t covered = static_cast<int64_t>(s->kv.table.size()) * r.info.block_size;
      if (covered < s->scheduled()) return fail(where + "table does not cover computed and in-flight positions");
      if (s->kv.table.size() > static_cast<size_t>(r.kv.blocks_for(s->history.size() + s->pending)))
        return fail(where + "table longer than the sequence");
      int32_t fed = 0, sampled = 0;
      for (const flight& fl : r.flights)
        for (const flight_item& f : fl.items)
          if (f.id == s->req.id && f.order == s->order && f.epoch == s->epoch) fed += f.n, sampled += f.sample;
      if (fed != s->n_inflight || sampled != s->pending)
        return fail(where + "request " + std::to_string(s->req.id) + ": in-flight counts disagree with the steps");
      if (s->n_table_sent > static_cast<int32_t>(s->kv.table.size()) || (s->on_worker && !r.info.plan_diffs))
        return fail(where + "request " + std::to_string(s->req.id) + ": more of its table sent than it holds");
      if (s->generated() + s->pending > s->req.sampling.max_tokens)
        return fail(where + "request " + std::to_string(s->req.id) + " planned past max_tokens");
    }
    for (const seq_state* s : r.swapped) {
      if (s->at != seq_state::where::swapped) return fail(where + "swapped list holds a stranger");
      if (s->on_worker) return fail(where + "swapped sequence still held by the worker");
      swapped_kv.push_back(&s->kv);
    }
    if (std::string why = r.kv.check(running_kv, swapped_kv); !why.empty()) return fail(where + why);
    if (static_cast<int32_t>(r.running.size()) > r.info.max_batch) return fail(where + "over max_batch");
    if (static_cast<int64_t>(r.flights.size()) > m.cfg.max_inflight_steps)
      return fail(where + "more steps in flight than max_inflight_steps");
    bound += r.running.size() + r.swapped.size();
  }
  for (const seq_state* s : m.queue)
    if (!s->kv.table.empty() || s->n_computed != 0 || s->n_inflight != 0 || s->pending != 0 || s->on_worker ||
        s->at != seq_state::where::queued)
      return fail("queued request " + std::to_string(s->req.id) + " holds KV state");
  if (bound + m.queue.size() != m.seqs.size()) return fail("requests lost: bound + queued != known");
  return {};
}

}  // namespace troupe::sched
