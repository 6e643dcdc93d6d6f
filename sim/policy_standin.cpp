// A stand-in for the scheduling policy, compiled only while src/ has no policy
// implementation (see sim/CMakeLists.txt). It lets the simulator build and run end to
// end before the real policy lands; it is deliberately simple (FCFS by priority,
// chunked prefill, KV reserved for prompt + max_tokens at admission, no preemption)
// and is deleted once src/sched has its own.
#include <algorithm>
#include <deque>
#include <map>

#include "src/sched/policy.h"

namespace troupe::sched {

struct policy::impl {
  struct seq {
    request req;
    int32_t pos = 0;  // tokens with KV computed
    int32_t generated = 0;
    int32_t planned = 0;  // tokens in the step in flight
    std::vector<int32_t> blocks;
  };
  struct replica {
    replica_info info;
    std::vector<int32_t> free_blocks;
    std::vector<seq> running;
  };
  policy_config cfg;
  std::deque<request> queue;
  std::map<uint32_t, replica> replicas;
  uint64_t step_id = 0;
  std::vector<request_event> events;
};

policy::policy(policy_config cfg) : impl_(new impl) { impl_->cfg = cfg; }
policy::~policy() { delete impl_; }

void policy::add_replica(const replica_info& r, double) {
  auto& rep = impl_->replicas[r.id];
  rep.info = r;
  for (int64_t b = r.kv_blocks - 1; b >= 0; --b) rep.free_blocks.push_back(int32_t(b));
}

void policy::remove_replica(uint32_t id, double) { impl_->replicas.erase(id); }

admission policy::submit(request r, double) {
  if (int64_t(impl_->queue.size()) >= impl_->cfg.max_queued) return {false, error_kind::overloaded, "queue full", ""};
  auto at =
      std::find_if(impl_->queue.begin(), impl_->queue.end(), [&](const request& q) { return q.priority < r.priority; });
  impl_->queue.insert(at, std::move(r));
  return {};
}

void policy::cancel(uint64_t, double) {}

std::optional<planned_step> policy::schedule(uint32_t id, double) {
  auto it = impl_->replicas.find(id);
  if (it == impl_->replicas.end()) return std::nullopt;
  auto& rep = it->second;
  const int32_t bs = rep.info.block_size;
  while (!impl_->queue.empty() && int32_t(rep.running.size()) < rep.info.max_batch) {
    const auto& r = impl_->queue.front();
    const size_t need = size_t((r.prompt.size() + size_t(r.sampling.max_tokens) + size_t(bs) - 1) / size_t(bs));
    if (need > rep.free_blocks.size()) break;
    impl::seq s;
    s.req = std::move(impl_->queue.front());
    impl_->queue.pop_front();
    for (size_t i = 0; i < need; ++i) {
      s.blocks.push_back(rep.free_blocks.back());
      rep.free_blocks.pop_back();
    }
    rep.running.push_back(std::move(s));
  }
  planned_step out;
  out.replica = id;
  out.plan.step_id = ++impl_->step_id;
  int32_t budget = impl_->cfg.max_step_tokens;
  for (auto& s : rep.running) {
    const int32_t n_prompt = int32_t(s.req.prompt.size());
    const int32_t n = s.pos < n_prompt ? std::min(n_prompt - s.pos, budget) : 1;
    if (n <= 0 || budget <= 0) break;
    budget -= n;
    s.planned = n;
    seq_work w;
    w.seq_id = s.req.id;
    w.start_pos = s.pos;
    if (s.pos < n_prompt)
      w.tokens.assign(s.req.prompt.begin() + s.pos, s.req.prompt.begin() + s.pos + n);
    else
      w.tokens.assign(1, 0);
    w.sample = s.pos + n >= n_prompt;
    const size_t used = size_t((s.pos + n + bs - 1) / bs);
    w.block_table.assign(s.blocks.begin(), s.blocks.begin() + std::min(used, s.blocks.size()));
    out.plan.seqs.push_back(std::move(w));
  }
  if (out.plan.seqs.empty()) return std::nullopt;
  return out;
}

std::vector<request_event> policy::on_result(uint32_t id, const step_result& result, double) {
  std::vector<request_event> evs;
  auto& rep = impl_->replicas.at(id);
  for (const auto& o : result.outputs) {
    auto s =
        std::find_if(rep.running.begin(), rep.running.end(), [&](const impl::seq& q) { return q.req.id == o.seq_id; });
    if (s == rep.running.end()) continue;
    s->pos += s->planned;
    if (o.token < 0) continue;
    ++s->generated;
    request_event ev;
    ev.id = o.seq_id;
    ev.tokens.push_back({o.token, 0.0f});
    if (s->generated >= s->req.sampling.max_tokens) {
      ev.finished = finish_reason::length;
      rep.free_blocks.insert(rep.free_blocks.end(), s->blocks.begin(), s->blocks.end());
      rep.running.erase(s);
    }
    evs.push_back(std::move(ev));
  }
  return evs;
}

std::vector<request_event> policy::take_events() { return std::move(impl_->events); }
size_t policy::queued() const { return impl_->queue.size(); }
size_t policy::running() const {
  size_t n = 0;
  for (const auto& [id, r] : impl_->replicas) n += r.running.size();
  return n;
}

}  // namespace troupe::sched
