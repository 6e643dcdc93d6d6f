// The JSONL step trace and its replay. nlohmann-json stays in this file.
#include "src/sched/trace.h"

#include "src/sched/driver.h"

#include <istream>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

namespace troupe::sched {

using nlohmann::json;

namespace {

std::string line(const json& j) { return j.dump() + "\n"; }

}  // namespace

// ---- writing ------------------------------------------------------------------------------

namespace {

json tenant_json(const tenant_config& t) {
  return {{"name", t.name},
          {"weight", t.weight},
          {"max_running", t.max_running},
          {"max_queued_tokens", t.max_queued_tokens}};
}

tenant_config tenant_of(const json& j) {
  tenant_config t;
  t.name = j.value("name", std::string());
  t.weight = j.at("weight");
  t.max_running = j.at("max_running");
  t.max_queued_tokens = j.at("max_queued_tokens");
  return t;
}

// The policy_config a config line records (trace stays on: a replay records its own).
policy_config config_of(const json& j) {
  policy_config c;
  c.max_step_tokens = j.at("max_step_tokens");
  c.chunked_prefill = j.at("chunked_prefill");
  c.max_queued = j.at("max_queued");
  c.max_context = j.at("max_context");
  c.kv_watermark = j.at("kv_watermark");
  c.prefix_caching = j.at("prefix_caching");
  const std::string mode = j.at("preemption");
  if (mode != "recompute" && mode != "swap")
    throw error(error_kind::failed, "config: preemption: expected recompute or swap, got '" + mode + "'", "preemption");
  c.preemption = mode == "swap" ? preemption_mode::swap : preemption_mode::recompute;
  c.host_kv_blocks = j.at("host_kv_blocks");
  c.aging_s = j.at("aging_s");
  for (const auto& t : j.at("tenants")) c.tenants.push_back(tenant_of(t));
  c.default_tenant = tenant_of(j.at("default_tenant"));
  c.affinity_load_factor = j.at("affinity_load_factor");
  c.affinity_wait_s = j.at("affinity_wait_s");
  c.ttft_slo_s = j.at("ttft_slo_s");
  c.prefill_tokens_per_s = j.at("prefill_tokens_per_s");
  c.max_inflight_steps = j.at("max_inflight_steps");
  c.trace = true;
  return c;
}

}  // namespace

namespace {

std::string trace_config(const policy_config& c) {
  json tenants = json::array();
  for (const auto& t : c.tenants) tenants.push_back(tenant_json(t));
  return line({{"ev", "config"},
               {"max_step_tokens", c.max_step_tokens},
               {"chunked_prefill", c.chunked_prefill},
               {"max_queued", c.max_queued},
               {"max_context", c.max_context},
               {"kv_watermark", c.kv_watermark},
               {"prefix_caching", c.prefix_caching},
               {"preemption", c.preemption == preemption_mode::swap ? "swap" : "recompute"},
               {"host_kv_blocks", c.host_kv_blocks},
               {"aging_s", c.aging_s},
               {"tenants", tenants},
               {"default_tenant", tenant_json(c.default_tenant)},
               {"affinity_load_factor", c.affinity_load_factor},
               {"affinity_wait_s", c.affinity_wait_s},
               {"ttft_slo_s", c.ttft_slo_s},
               {"prefill_tokens_per_s", c.prefill_tokens_per_s},
               {"max_inflight_steps", c.max_inflight_steps}});
}

std::string trace_add_replica(double t, const replica_info& r) {
  json j = {{"ev", "add_replica"},
            {"t", t},
            {"replica", r.id},
            {"kv_blocks", r.kv_blocks},
            {"block_size", r.block_size},
            {"max_batch", r.max_batch},
            {"host_kv_blocks", r.host_kv_blocks}};
  if (!r.model.empty()) j["model"] = r.model;                           // absent when empty, as in older traces
  if (r.max_step_tokens > 0) j["max_step_tokens"] = r.max_step_tokens;  // absent when the policy's
  return line(j);
}

std::string trace_drain_replica(double t, uint32_t replica) {
  return line({{"ev", "drain_replica"}, {"t", t}, {"replica", replica}});
}

std::string trace_remove_replica(double t, uint32_t replica) {
  return line({{"ev", "remove_replica"}, {"t", t}, {"replica", replica}});
}

std::string trace_submit(double t, const request& r, const admission& a) {
  json j = {{"ev", "submit"},
            {"t", t},
            {"id", r.id},
            {"tenant", r.tenant},
            {"priority", r.priority},
            {"prompt", r.prompt},
            {"max_tokens", r.sampling.max_tokens},
            {"eos_ids", r.eos_ids},
            {"stop_ids", r.sampling.stop_ids},
            {"ignore_eos", r.sampling.ignore_eos},
            {"accepted", a.accepted}};
  if (!r.model.empty()) j["model"] = r.model;  // absent when empty, as in older traces
  if (!a.accepted) {
    j["kind"] = std::string(troupe::to_string(a.error.kind));
    j["field"] = a.error.field;
  }
  return line(j);
}

std::string trace_cancel(double t, uint64_t id, const std::vector<int32_t>& freed) {
  return line({{"ev", "cancel"}, {"t", t}, {"id", id}, {"freed", freed}});
}

std::string trace_step_line(const step_decision& s) {
  json seqs = json::array();
  for (const seq_decision& q : s.seqs)
    seqs.push_back({{"id", q.id}, {"n", q.n}, {"pos", q.start_pos}, {"sample", q.sample}, {"alloc", q.alloc}});
  return line({{"ev", "step"},
               {"t", s.t},
               {"replica", s.replica},
               {"step", s.step},
               {"seqs", seqs},
               {"admitted", s.admitted},
               {"preempted", s.preempted},
               {"swapped_out", s.swapped_out},
               {"swapped_in", s.swapped_in},
               {"freed", s.freed}});
}

std::string trace_result(double t, uint32_t replica, const step_result& r,
                         const std::vector<std::pair<uint64_t, finish_reason>>& finished,
                         const std::vector<int32_t>& freed) {
  json out = json::array(), fin = json::array();
  for (const seq_output& o : r.outputs) out.push_back({o.seq_id, o.token});
  for (const auto& [id, why] : finished) fin.push_back({id, to_string(why)});
  return line({{"ev", "result"},
               {"t", t},
               {"replica", replica},
               {"step", r.step_id},
               {"out", out},
               {"finished", fin},
               {"freed", freed}});
}

}  // namespace

trace_writer::trace_writer(const policy_config& cfg) : text_(trace_config(cfg)) {}

void trace_writer::on_add_replica(double t, const replica_info& r) { text_ += trace_add_replica(t, r); }

void trace_writer::on_remove_replica(double t, uint32_t replica) { text_ += trace_remove_replica(t, replica); }

void trace_writer::on_drain_replica(double t, uint32_t replica) { text_ += trace_drain_replica(t, replica); }

void trace_writer::on_submit(double t, const request& r, const admission& a) { text_ += trace_submit(t, r, a); }

void trace_writer::on_cancel(double t, uint64_t id, const std::vector<int32_t>& freed) {
  text_ += trace_cancel(t, id, freed);
}

void trace_writer::on_step(const step_decision& s) { text_ += trace_step_line(s); }

void trace_writer::on_result(double t, uint32_t replica, const step_result& r,
                             const std::vector<std::pair<uint64_t, finish_reason>>& finished,
                             const std::vector<int32_t>& freed) {
  text_ += trace_result(t, replica, r, finished, freed);
}

// ---- comparing ----------------------------------------------------------------------------

namespace {

// The next line worth comparing, parsed; false at the end.
bool next_line(std::istream& in, bool decisions_only, size_t& n, std::string& text, json& j) {
  while (std::getline(in, text)) {
    ++n;
    j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return true;
    if (!decisions_only) return true;
    if (j.value("ev", "") != "step") continue;
    j.erase("t");
    return true;
  }
  return false;
}

}  // namespace

std::string compare_traces(std::istream& a, std::istream& b, bool decisions_only) {
  std::string la, lb;
  json ja, jb;
  size_t na = 0, nb = 0;
  for (;;) {
    const bool more_a = next_line(a, decisions_only, na, la, ja);
    const bool more_b = next_line(b, decisions_only, nb, lb, jb);
    if (!more_a && !more_b) return {};
    if (more_a != more_b)
      return "line " + std::to_string(more_a ? na : nb) +
             ": only one trace has it: " + (more_a ? la : lb).substr(0, 300);
    if (ja.is_discarded() || jb.is_discarded()) return "line " + std::to_string(na) + ": not JSON";
    if (ja != jb)
      return "line " + std::to_string(na) + ": expected " + la.substr(0, 300) + "\n  got " + lb.substr(0, 300);
  }
}

namespace {

request request_of(const json& j) {
  request r;
  r.id = j.at("id");
  r.tenant = j.at("tenant");
  r.model = j.value("model", std::string());  // absent in older traces
  r.priority = j.at("priority");
  r.prompt = j.at("prompt").get<std::vector<int32_t>>();
  r.sampling.max_tokens = j.at("max_tokens");
  r.eos_ids = j.at("eos_ids").get<std::vector<int32_t>>();
  r.sampling.stop_ids = j.at("stop_ids").get<std::vector<int32_t>>();
  r.sampling.ignore_eos = j.at("ignore_eos");
  return r;
}

finish_reason reason_of(const std::string& s) {
  for (auto r : {finish_reason::stop, finish_reason::length, finish_reason::cancelled, finish_reason::error})
    if (s == to_string(r)) return r;
  return finish_reason::none;
}

}  // namespace

trace_events read_trace_events(std::istream& trace) {
  trace_events out;
  std::string l;
  for (size_t n = 1; std::getline(trace, l); ++n) {
    try {
      const json j = json::parse(l);
      const std::string ev = j.at("ev");
      if (ev == "config") continue;
      const double t = j.at("t");
      if (ev == "submit") {
        out.arrivals.push_back({t, request_of(j), j.at("accepted")});
      } else if (ev == "cancel") {
        out.finishes.push_back({t, j.at("id"), finish_reason::cancelled});
      } else if (ev == "result") {
        for (const auto& f : j.at("finished")) out.finishes.push_back({t, f.at(0), reason_of(f.at(1))});
      }
    } catch (const json::exception& e) {
      throw error(error_kind::failed, "trace line " + std::to_string(n) + ": " + e.what(), "trace");
    }
  }
  return out;
}

// ---- replaying ----------------------------------------------------------------------------

replay_report replay(std::istream& trace, policy_config cfg, bool use_recorded_config) {
  cfg.trace = true;
  replay_report rep;
  std::stringstream original;
  std::string l;
  // The recorded lines are the driver's calls; a replay makes them again through a driver
  // whose plans and events nobody reads.
  std::optional<driver> made;
  null_sink ignore;
  try {
    while (std::getline(trace, l)) {
      ++rep.lines;
      const json j = json::parse(l);
      const std::string ev = j.at("ev");
      // Only decisions are compared: the config lines differ whenever the replay runs
      // under other flags, which is what such a replay is for.
      if (ev != "config") original << l << '\n';
      if (!made) {
        // The policy that decided, as its config line recorded it (older traces have none).
        if (ev == "config" && use_recorded_config) {
          cfg = config_of(j);
          rep.recorded_config = true;
        }
        made.emplace(cfg);
        if (ev == "config") continue;
      }
      driver& d = *made;
      const double t = j.at("t");
      if (ev == "add_replica") {
        replica_info r;
        r.id = j.at("replica");
        r.kv_blocks = j.at("kv_blocks");
        r.block_size = j.at("block_size");
        r.max_batch = j.at("max_batch");
        r.host_kv_blocks = j.value("host_kv_blocks", int64_t{-1});  // absent in older traces
        r.model = j.value("model", std::string());                  // absent in older traces
        r.max_step_tokens = j.value("max_step_tokens", int64_t{0});
        d.add_replica(r, t);
      } else if (ev == "remove_replica") {
        d.remove_replica(j.at("replica"), t, ignore);
      } else if (ev == "drain_replica") {
        d.drain_replica(j.at("replica"), t);
      } else if (ev == "submit") {
        d.submit(request_of(j), t);
      } else if (ev == "cancel") {
        d.cancel(j.at("id"), t, ignore);
      } else if (ev == "step") {
        d.schedule(j.at("replica"), t, ignore);  // one schedule() on one replica
      } else if (ev == "result") {
        step_result r;
        r.step_id = j.at("step");
        for (const auto& o : j.at("out")) {
          seq_output so;
          so.seq_id = o.at(0);
          so.token = o.at(1);
          r.outputs.push_back(so);
        }
        // A result the replay did not plan for is a different decision: say so here rather
        // than as a missing line further on.
        if (!d.on_result(j.at("replica"), r, t, ignore))
          throw error(error_kind::failed,
                      "step_result.step_id: " + std::to_string(r.step_id) +
                          " is not the oldest step in flight on replica " +
                          std::to_string(j.at("replica").get<uint32_t>()),
                      "step_id");
      } else {
        throw error(error_kind::failed, "ev: unknown event '" + ev + "'", "ev");
      }
    }
  } catch (const std::exception& e) {
    rep.same = false;
    rep.difference = "line " + std::to_string(rep.lines) + ": " + e.what();
    return rep;
  }
  if (!made) made.emplace(cfg);
  std::string mine = made->policy().take_trace();
  mine.erase(0, mine.find('\n') + 1);  // the replay policy's own config line
  std::stringstream produced(mine);
  rep.difference = compare_traces(original, produced);
  rep.same = rep.difference.empty();
  return rep;
}

}  // namespace troupe::sched
