#include "src/cluster/scheduler_core.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "src/cluster/overloaded.h"

namespace troupe {

namespace {
scheduler_options with_trace(scheduler_options o) {
  if (!o.trace_path.empty()) o.policy.trace = true;
  return o;
}
}  // namespace

scheduler_core::scheduler_core(scheduler_options opts) : opts_(with_trace(std::move(opts))), driver_(opts_.policy) {}

scheduler_core::~scheduler_core() = default;

size_t scheduler_core::queued() const { return driver_.policy().queued(); }
size_t scheduler_core::running() const { return driver_.policy().running(); }

// Plans go to their replica's worker, events to the gateways that submitted the requests.
class scheduler_core::sink final : public sched::driver_sink {
 public:
  sink(scheduler_core& core, outbox& out) : core_(core), out_(out) {}

  void on_plan(uint32_t replica, step_plan&& plan, double now) override {
    for (const auto& w : plan.seqs) {
      if (auto a = core_.admitted_at_.find(w.seq_id); a != core_.admitted_at_.end()) {
        core_.queue_ms_[w.seq_id] = (now - a->second) * 1000.0;
        core_.admitted_at_.erase(a);
      }
    }
    out_.push_back({core_.replicas_.at(replica).peer, std::move(plan)});
  }
  void on_events(std::vector<sched::request_event>& events, std::optional<uint32_t>, double) override {
    core_.route(std::move(events), out_);
  }

 private:
  scheduler_core& core_;
  outbox& out_;
};

// ---- inbound ----------------------------------------------------------------------------------

scheduler_core::outbox scheduler_core::on_message(const std::string& peer, proto::control_message msg, double now) {
  outbox out;
  auto rit = replica_of_peer_.find(peer);
  replica* rep = rit == replica_of_peer_.end() ? nullptr : &replicas_.at(rit->second);
  if (rep) rep->last_seen = now;
  std::visit(
      overloaded{
          [&](proto::worker_registration& r) { out = on_registration(peer, r, now); },
          [&](proto::heartbeat& h) {
            if (h.gateway) {
              gateway_seen_[peer] = now;
              if (claim_gateway(peer).empty())
                out.push_back({peer, proto::heartbeat{h.seq, false, ready_models()}});
              else
                out.push_back({peer, proto::peer_error{{error_kind::failed, gateway_id_taken(peer), "gateway_id"}}});
            } else if (rep) {
              out.push_back({peer, proto::heartbeat{h.seq, false}});
            } else {
              out.push_back({peer, proto::peer_error{{error_kind::disconnected, "heartbeat from an unregistered worker",
                                                      "registration"}}});
            }
          },
          [&](proto::step_outcome& o) {
            if (rep) on_step_result(*rep, o, now, out);
          },
          [&](proto::drain& d) {
            if (rep)
              on_drain(*rep, d, now, out);
            else
              out.push_back({peer, proto::peer_error{{error_kind::disconnected, "drain from an unregistered worker",
                                                      "registration"}}});
          },
          [&](sched::request& q) { on_request(peer, q, now, out); },
          [&](proto::cancel_request& c) { on_cancel(peer, c, now, out); },
          [&](proto::peer_error& e) {
            spdlog::warn("scheduler: peer {} reports: {} ({})", peer, e.error.message, e.error.field);
          },
          [&](auto&) {
            out.push_back({peer, proto::peer_error{{error_kind::unimplemented,
                                                    "the scheduler does not accept this message", "message"}}});
          },
      },
      msg);
  return out;
}

std::string scheduler_core::gateway_id_of(const std::string& peer) {
  const auto hash = peer.rfind('#');
  return hash == std::string::npos ? peer : peer.substr(0, hash);
}

// A gateway id names one gateway: a second process claiming it (a copied config, a restart
// while the old one still runs) is refused, so that cancels and logs stay unambiguous. The
// claim lasts until its peer disconnects or falls silent. Returns the holder's peer when it
// is another's, else "".
std::string scheduler_core::claim_gateway(const std::string& peer) {
  const std::string gateway = gateway_id_of(peer);
  auto [claim, fresh] = gateway_peer_.try_emplace(gateway, peer);
  if (fresh) spdlog::info("scheduler: gateway {} connected (routing id {})", gateway, peer);
  if (claim->second == peer) return {};
  if (refused_gateways_.insert(peer).second)  // once per peer: its every heartbeat asks again
    spdlog::error("scheduler: refused gateway {}: gateway id '{}' is already in use by {}", peer, gateway,
                  claim->second);
  return claim->second;
}

std::string scheduler_core::gateway_id_taken(const std::string& peer) {
  return "gateway id '" + gateway_id_of(peer) +
         "' is already in use by another gateway on this scheduler; give each gateway its own --gateway-id";
}

std::vector<std::string> scheduler_core::ready_models() const {
  std::set<std::string> models;
  for (const auto& [id, r] : replicas_)
    if (!r.draining) models.insert(r.model);
  return {models.begin(), models.end()};
}

size_t scheduler_core::requests_of(const std::string& gateway_peer) const {
  return static_cast<size_t>(std::count_if(gateway_of_.begin(), gateway_of_.end(),
                                           [&](const auto& g) { return g.second.peer == gateway_peer; }));
}

void scheduler_core::on_request(const std::string& peer, sched::request& q, double now, outbox& out) {
  const uint64_t gateway_request = q.id;
  if (auto g = gateway_seen_.find(peer); g != gateway_seen_.end()) g->second = now;
  if (const std::string holder = claim_gateway(peer); !holder.empty()) {
    spdlog::error("scheduler: refused a request from {}: gateway id '{}' is already in use by {}", peer,
                  gateway_id_of(peer), holder);
    out.push_back(
        {peer, proto::request_rejected{gateway_request, {error_kind::failed, gateway_id_taken(peer), "gateway_id"}}});
    return;
  }
  if (cluster_id_.count({peer, gateway_request})) {
    out.push_back({peer, proto::request_rejected{gateway_request,
                                                 {error_kind::failed,
                                                  "request id " + std::to_string(gateway_request) +
                                                      " is already in flight from this gateway",
                                                  "id"}}});
    return;
  }
  const uint64_t id = next_request_++;
  q.id = id;
  std::string model = q.model;
  auto adm = driver_.submit(std::move(q), now);
  if (!adm.accepted) {
    out.push_back({peer, proto::request_rejected{gateway_request, adm.error}});
    return;
  }
  gateway_of_[id] = {peer, gateway_request};
  cluster_id_[{peer, gateway_request}] = id;
  if (!model.empty()) model_of_[id] = std::move(model);
  admitted_at_[id] = now;
  pump(now, out);
}

void scheduler_core::on_cancel(const std::string& peer, const proto::cancel_request& c, double now, outbox& out) {
  // Looked up under the sender: another gateway's request with the same number is not hit.
  auto it = cluster_id_.find({peer, c.id});
  if (it == cluster_id_.end()) {
    spdlog::info(
        "scheduler: ignored a cancel from {} for request {}: no request of that gateway with this id is in "
        "flight (finished already, or not its own)",
        peer, c.id);
    return;
  }
  sink to(*this, out);
  driver_.cancel(it->second, now, to);
  pump(now, out);
}

void scheduler_core::forget(uint64_t id) {
  if (auto g = gateway_of_.find(id); g != gateway_of_.end()) {
    cluster_id_.erase({g->second.peer, g->second.gateway_request});
    gateway_of_.erase(g);
  }
  admitted_at_.erase(id);
  queue_ms_.erase(id);
  model_of_.erase(id);
}

scheduler_core::outbox scheduler_core::on_registration(const std::string& peer, const proto::worker_registration& r,
                                                       double now) {
  outbox out;
  if (auto it = replica_of_peer_.find(peer); it != replica_of_peer_.end())
    remove(it->second, "registered again", now, out);  // a restarted worker with the same name
  // Limits it cannot plan within: refused, saying which (field "limits": not the
  // "registration" that asks a worker to register again).
  std::string bad;
  if (r.kv_blocks <= 0)
    bad = "kv_blocks " + std::to_string(r.kv_blocks) + " (expected > 0)";
  else if (r.kv_blocks > INT32_MAX)
    bad = "kv_blocks " + std::to_string(r.kv_blocks) + " (expected < 2^31)";
  else if (r.block_size <= 0)
    bad = "block_size " + std::to_string(r.block_size) + " (expected > 0)";
  else if (r.max_batch <= 0)
    bad = "max_batch " + std::to_string(r.max_batch) + " (expected > 0)";
  else if (r.max_step_tokens < 0)
    bad = "max_step_tokens " + std::to_string(r.max_step_tokens) + " (expected >= 0)";
  else if (r.host_blocks < 0 || r.host_blocks > INT32_MAX)
    bad = "host_blocks " + std::to_string(r.host_blocks) + " (expected 0 to 2^31)";
  if (!bad.empty()) {
    spdlog::error("scheduler: refused worker {}: its limits cannot be honoured: {}", peer, bad);
    out.push_back(
        {peer, proto::peer_error{
                   {error_kind::failed, "the scheduler cannot plan within this worker's limits: " + bad, "limits"}}});
    return out;
  }
  replica rep;
  rep.id = next_replica_++;
  rep.peer = peer;
  rep.last_seen = now;
  rep.model = r.model;
  sched::replica_info info{rep.id, r.kv_blocks, r.block_size, r.max_batch, r.host_blocks, r.model};
  info.plan_diffs = r.plan_diffs;  // an older worker takes every sequence in full
  info.max_step_tokens = r.max_step_tokens;
  driver_.add_replica(info, now);
  rep.info = info;
  replicas_[rep.id] = rep;
  replica_of_peer_[peer] = rep.id;
  const int64_t policy_budget = opts_.policy.max_step_tokens;
  const int64_t budget = r.max_step_tokens > 0 ? std::min(r.max_step_tokens, policy_budget) : policy_budget;
  spdlog::info(
      "scheduler: worker {} registered as replica {} (node {}, {}, model {}, {} KV blocks of {}, batch {}, {} host "
      "swap blocks, steps of {} tokens{})",
      peer, rep.id, r.node, r.device, r.model, r.kv_blocks, r.block_size, r.max_batch, r.host_blocks, budget,
      r.max_step_tokens <= 0              ? " (budget not reported: the policy's)"
      : r.max_step_tokens < policy_budget ? fmt::format(": the worker's own, below the policy's {}", policy_budget)
                                          : std::string());
  if (opts_.policy.preemption == sched::preemption_mode::swap && r.host_blocks == 0)
    spdlog::warn("scheduler: worker {} has no host swap pool (--swap-mb): its preemptions recompute", peer);
  out.push_back({peer, proto::registered{rep.id}});
  pump(now, out);
  return out;
}

void scheduler_core::on_step_result(replica& r, const proto::step_outcome& o, double now, outbox& out) {
  if (!o.error.empty()) {
    if (!driver_.on_step_failed(r.id, o.result.step_id)) return;  // stale: from before a re-registration
    if (o.rejected.empty()) {
      remove(r.id, "step failed: " + o.error, now, out);  // the worker's own failure
    } else {
      reject_sequences(r, o, now, out);
    }
    pump(now, out);
    return;
  }
  sink to(*this, out);
  if (driver_.on_result(r.id, o.result, now, to)) pump(now, out);
}

scheduler_core::outbox scheduler_core::on_peer_gone(const std::string& peer, double now) {
  outbox out;
  if (auto it = replica_of_peer_.find(peer); it != replica_of_peer_.end()) {
    remove(it->second, "disconnected", now, out);
    pump(now, out);
    return out;
  }
  gateway_gone(peer, "disconnected", now);
  pump(now, out);
  return out;
}

// A gateway went away (disconnected, or silent past the heartbeat timeout): nobody will read
// its requests' tokens.
void scheduler_core::gateway_gone(const std::string& peer, const std::string& why, double now) {
  gateway_seen_.erase(peer);
  refused_gateways_.erase(peer);
  std::vector<uint64_t> orphans;
  for (const auto& [id, gw] : gateway_of_)
    if (gw.peer == peer) orphans.push_back(id);
  sched::null_sink drop;  // the orphans' cancellations have no gateway left
  for (uint64_t id : orphans) {
    driver_.cancel(id, now, drop);
    forget(id);
  }
  if (!orphans.empty()) spdlog::warn("scheduler: gateway {} {}; cancelled its {} requests", peer, why, orphans.size());
  // Its gateway id is free again (a restarted gateway may take it).
  if (auto claim = gateway_peer_.find(gateway_id_of(peer)); claim != gateway_peer_.end() && claim->second == peer) {
    spdlog::info("scheduler: gateway {} {} (routing id {}); its id is free", claim->first, why, peer);
    gateway_peer_.erase(claim);
  }
}

scheduler_core::outbox scheduler_core::on_tick(double now) {
  outbox out;
  std::vector<uint32_t> silent;
  for (const auto& [id, r] : replicas_)
    if (now - r.last_seen > opts_.heartbeat_timeout_s) silent.push_back(id);
  for (uint32_t id : silent) remove(id, "missed heartbeats", now, out);
  // Gateways that send heartbeats (all of ours) and stopped: gone, as if disconnected (a
  // stopped process keeps its TCP connection open).
  std::vector<std::string> quiet;
  for (const auto& [peer, seen] : gateway_seen_)
    if (now - seen > opts_.gateway_timeout_s) quiet.push_back(peer);
  for (const auto& peer : quiet)
    gateway_gone(peer, fmt::format("missed heartbeats ({:.1f} s silent)", now - gateway_seen_.at(peer)), now);
  std::vector<uint32_t> late;
  for (const auto& [id, r] : replicas_)
    if (r.draining && r.drain_deadline > 0 && now >= r.drain_deadline) late.push_back(id);
  for (uint32_t id : late) {
    const std::string peer = replicas_.at(id).peer;
    remove(id, "drain deadline passed", now, out);
    out.push_back({peer, proto::shutdown{"drained (deadline passed; its jobs moved to other replicas)"}});
  }
  if (!silent.empty() || !late.empty() || !quiet.empty()) pump(now, out);
  return out;
}

scheduler_core::outbox scheduler_core::shutdown_workers(const std::string& reason) {
  outbox out;
  for (const auto& [id, r] : replicas_) out.push_back({r.peer, proto::shutdown{reason}});
  return out;
}

// ---- draining -------------------------------------------------------------------------------------

void scheduler_core::on_drain(replica& r, const proto::drain& d, double now, outbox& out) {
  if (r.draining) return;
  r.draining = true;
  r.drain_deadline = d.deadline_s > 0 ? now + d.deadline_s : 0;
  driver_.drain_replica(r.id, now);
  const auto st = driver_.policy().stats(r.id);
  spdlog::info("scheduler: replica {} ({}) draining: {} sequences left to finish there{}", r.id, r.peer,
               st ? st->running + st->swapped : 0,
               d.deadline_s > 0 ? fmt::format(", deadline {:.1f} s", d.deadline_s) : std::string());
  pump(now, out);
}

void scheduler_core::retire_drained(double now, outbox& out) {
  std::vector<uint32_t> empty;
  for (const auto& [id, r] : replicas_) {
    if (!r.draining || driver_.in_flight(id) > 0) continue;
    const auto st = driver_.policy().stats(id);
    if (!st || st->running + st->swapped == 0) empty.push_back(id);
  }
  for (uint32_t id : empty) {
    const std::string peer = replicas_.at(id).peer;
    remove(id, "drained", now, out, true);  // nothing of it is left to re-plan
    out.push_back({peer, proto::shutdown{"drained"}});
  }
}

// ---- planning and routing -----------------------------------------------------------------------

void scheduler_core::remove(uint32_t replica_id, const std::string& why, double now, outbox& out, bool drained) {
  auto it = replicas_.find(replica_id);
  if (it == replicas_.end()) return;
  if (drained)
    spdlog::info("scheduler: replica {} ({}) drained; shutting it down", replica_id, it->second.peer);
  else
    spdlog::warn("scheduler: replica {} ({}) removed: {}; its requests are re-planned", replica_id, it->second.peer,
                 why);
  const std::string model = it->second.model;
  replica_of_peer_.erase(it->second.peer);
  replicas_.erase(it);
  sink to(*this, out);
  driver_.remove_replica(replica_id, now, to);
  // A drain is a planned restart: queued requests wait for the next worker.
  if (drained) return;
  const bool none_left = replicas_.empty();
  const bool model_left =
      std::any_of(replicas_.begin(), replicas_.end(), [&](const auto& r) { return r.second.model == model; });
  if (model_left) return;
  // No worker is left for this model (or none at all): waiting for one could be forever, so
  // the requests it could have served end now with an error the client can act on
  // (resubmit), instead of hanging. A request naming no model fails only with no worker left.
  std::vector<sched::request_event> failed;
  sched::null_sink replaced;  // the cancellations below: replaced by the errors
  for (const auto& [id, gateway] : gateway_of_) {
    const auto m = model_of_.find(id);
    if (!none_left && (m == model_of_.end() || m->second != model)) continue;
    driver_.cancel(id, now, replaced);
    sched::request_event e;
    e.id = id;
    e.finished = sched::finish_reason::error;
    e.error = none_left ? "no worker is left to serve this request (the last replica was removed: " + why + ")"
                        : "no worker is left to serve model " + model + " (its last replica was removed: " + why + ")";
    failed.push_back(std::move(e));
  }
  if (!failed.empty())
    spdlog::warn("scheduler: no replica left{}; {} request(s) ended with an error",
                 none_left ? std::string() : " for model " + model, failed.size());
  route(std::move(failed), out);
}

// The worker rejected a plan and ran none of it, naming the sequences at fault: those end
// with an error; the replica stays, its state starts afresh (the worker forgot every cached
// sequence) and its other sequences are re-planned, resuming from the tokens they have.
void scheduler_core::reject_sequences(replica& r, const proto::step_outcome& o, double now, outbox& out) {
  std::vector<sched::request_event> failed;
  sched::null_sink replaced;  // their cancellations: replaced by the errors
  for (uint64_t id : o.rejected) {
    if (!gateway_of_.count(id)) continue;  // finished meanwhile, or not a request of ours
    driver_.cancel(id, now, replaced);
    sched::request_event e;
    e.id = id;
    e.finished = sched::finish_reason::error;
    e.error = "worker " + r.peer + " rejected this request's work: " + o.error;
    failed.push_back(std::move(e));
  }
  route(std::move(failed), out);
  // Re-planned from scratch: the worker continues as a fresh replica (a new id, the same
  // limits; added before the old one goes, so that no request is left without a replica
  // able to hold it), the old one's steps in flight are dropped when their results come, and
  // its sequences go back to the queue.
  const uint32_t old_id = r.id;
  replica fresh = r;
  fresh.id = fresh.info.id = next_replica_++;
  driver_.add_replica(fresh.info, now);
  if (fresh.draining) driver_.drain_replica(fresh.id, now);
  replicas_.erase(old_id);
  replicas_[fresh.id] = fresh;
  replica_of_peer_[fresh.peer] = fresh.id;
  sink to(*this, out);
  driver_.remove_replica(old_id, now, to);
  spdlog::warn(
      "scheduler: replica {} ({}) rejected step {}: {}; {} request(s) it named end with an error, the others "
      "are re-planned on it, now replica {}",
      old_id, fresh.peer, o.result.step_id, o.error, o.rejected.size(), fresh.id);
}

void scheduler_core::pump(double now, outbox& out) {
  retire_drained(now, out);
  sink to(*this, out);
  driver_.pump(now, to);  // a worker runs its plans in the order sent
}

// Groups events by the gateway that submitted each request: one message per gateway, each
// event under the id that gateway gave the request.
void scheduler_core::route(std::vector<sched::request_event> events, outbox& out) {
  if (events.empty()) return;
  std::map<std::string, proto::request_events> by_gateway;
  for (auto& e : events) {
    auto g = gateway_of_.find(e.id);
    if (g == gateway_of_.end()) continue;
    proto::job_event je;
    if (auto q = queue_ms_.find(e.id); q != queue_ms_.end()) {
      je.queue_ms = q->second;
      queue_ms_.erase(q);
    }
    const bool finished = e.finished != sched::finish_reason::none;
    const uint64_t id = e.id;
    e.id = g->second.gateway_request;
    je.event = std::move(e);
    by_gateway[g->second.peer].events.push_back(std::move(je));
    if (finished) forget(id);
  }
  for (auto& [peer, m] : by_gateway) out.push_back({peer, std::move(m)});
}

std::string scheduler_core::take_trace() { return driver_.policy().take_trace(); }

}  // namespace troupe
