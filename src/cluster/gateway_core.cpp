#include "src/cluster/gateway_core.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace troupe {

void gateway_output::append(gateway_output&& o) {
  for (auto& r : o.to_clients) to_clients.push_back(std::move(r));
  for (auto& m : o.to_scheduler) to_scheduler.push_back(std::move(m));
}

std::optional<std::string> tenant_of_key(const std::vector<std::string>& api_keys, const std::string& api_key) {
  if (api_keys.empty()) return api_key.empty() ? "default" : api_key;
  if (api_key.empty()) return std::nullopt;
  for (const auto& k : api_keys) {
    const auto eq = k.find('=');
    if (k.substr(0, eq) == api_key) return eq == std::string::npos ? api_key : k.substr(eq + 1);
  }
  return std::nullopt;
}

// ---- one job in flight --------------------------------------------------------------------------

struct gateway_core::job_state {
  job_state(const tokenizer& tok, std::vector<std::string> stop_strings) : text(tok, std::move(stop_strings)) {}
  uint64_t id = 0;
  std::string peer;
  std::string client_request_id;
  sampling_params sampling;
  bool stream = true;
  uint32_t prompt_tokens = 0;
  text_stream text;
  std::string pending_text;  // final text not yet sent (a job that does not stream)
  uint32_t ids_sent = 0;     // index of pending_ids[0] in the output
  std::vector<int32_t> pending_ids;
  std::vector<float> pending_logprobs;
  std::vector<std::vector<token_logprob>> pending_top;
  double accepted_at = 0;
  double first_token_at = -1;
  double queue_ms = 0;
};

gateway_core::gateway_core(gateway_options opts, std::vector<served_model> models)
    : opts_(std::move(opts)), models_(std::move(models)) {
  if (models_.empty()) throw error(error_kind::failed, "gateway: no model to serve", "model");
}

gateway_core::~gateway_core() = default;

client_reply gateway_core::error_reply(const std::string& peer, uint64_t job_id, const std::string& client_request_id,
                                       error_info e) {
  return {peer, proto::job_error{job_id, client_request_id, std::move(e)}};
}

// ---- from clients -----------------------------------------------------------------------------

gateway_output gateway_core::on_client_message(const std::string& peer, proto::client_message msg, double now) {
  if (auto* j = std::get_if<proto::job>(&msg)) return submit(peer, std::move(*j), now);
  return cancel(peer, std::get<proto::cancel_job>(msg).client_request_id, now);
}

gateway_output gateway_core::submit(const std::string& peer, proto::job j, double now) {
  gateway_output out;
  auto reject = [&](error_kind kind, const std::string& message, const std::string& field) {
    out.to_clients.push_back(error_reply(peer, 0, j.client_request_id, {kind, message, field}));
    return out;
  };
  const std::optional<std::string> known = tenant_of_key(opts_.api_keys, j.api_key);
  if (!known)
    return reject(error_kind::failed, j.api_key.empty() ? "an API key is required" : "unknown API key", "api_key");
  const std::string& tenant = *known;
  if (!accepting_) return reject(error_kind::overloaded, "the gateway is shutting down", "");
  if (!scheduler_up_)
    return reject(error_kind::overloaded,
                  "no scheduler: it has not answered this gateway for " +
                      std::to_string(static_cast<int64_t>(now - scheduler_heard_)) +
                      " s (down or unreachable); retry later",
                  "scheduler");
  if (jobs_.size() >= opts_.max_queue)
    return reject(error_kind::overloaded,
                  "the gateway's queue is full (" + std::to_string(opts_.max_queue) + " jobs in flight); retry later",
                  "queue");
  const served_model* model = &models_.front();
  if (!j.model.empty()) {
    auto it = std::find_if(models_.begin(), models_.end(), [&](const served_model& m) { return m.name == j.model; });
    if (it == models_.end()) {
      std::string names;
      for (const auto& m : models_) names += (names.empty() ? "" : ", ") + m.name;
      return reject(error_kind::failed, "unknown model '" + j.model + "'; this gateway serves: " + names, "model");
    }
    model = &*it;
  }
  if (std::string why = validate(j.sampling); !why.empty())
    return reject(error_kind::failed, why, why.substr(0, why.find(':')));
  if (!j.client_request_id.empty() && by_client_.count({peer, j.client_request_id}))
    return reject(error_kind::failed, "client request id '" + j.client_request_id + "' is already in flight",
                  "client_request_id");

  const tokenizer& tok = *model->tok;
  std::vector<int32_t> prompt;
  if (j.prompt_is_ids) {
    prompt = std::move(j.prompt_ids);
    for (size_t i = 0; i < prompt.size(); ++i)
      if (prompt[i] < 0 || prompt[i] >= tok.vocab_size())
        return reject(error_kind::failed,
                      "prompt token " + std::to_string(i) + " is " + std::to_string(prompt[i]) +
                          ", outside the vocabulary [0, " + std::to_string(tok.vocab_size()) + ")",
                      "prompt");
  } else if (!j.prompt_text.empty()) {
    prompt = tok.encode(j.prompt_text, tok.data().add_bos);
  }
  if (prompt.empty()) return reject(error_kind::failed, "the prompt is empty", "prompt");
  const int64_t ctx = model->max_context;
  if (ctx > 0 && static_cast<int64_t>(prompt.size()) >= ctx)
    return reject(error_kind::failed,
                  "prompt of " + std::to_string(prompt.size()) + " tokens does not fit the context of " +
                      std::to_string(ctx) + " tokens of model " + model->name,
                  "prompt");
  // As `troupe generate`: generation ends at the context (finish reason length).
  if (ctx > 0)
    j.sampling.max_tokens = static_cast<int32_t>(std::min<int64_t>(j.sampling.max_tokens, ctx - prompt.size()));

  auto s = std::make_unique<job_state>(tok, j.sampling.stop_strings);
  s->id = next_id_++;
  s->peer = peer;
  s->client_request_id = j.client_request_id;
  s->sampling = j.sampling;
  s->stream = j.stream;
  s->prompt_tokens = static_cast<uint32_t>(prompt.size());
  s->accepted_at = now;

  request q;
  q.id = s->id;
  q.tenant = tenant;
  q.model = model->name;
  q.priority = j.priority;
  q.prompt = std::move(prompt);
  q.sampling = j.sampling;
  if (tok.eos() >= 0) q.eos_ids.push_back(tok.eos());
  for (int32_t id : tok.data().extra_eos_ids) q.eos_ids.push_back(id);
  if (q.sampling.min_tokens > 0 && !q.sampling.ignore_eos) {  // the sampler holds these back until then
    q.sampling.end_ids = q.eos_ids;
    q.sampling.end_ids.insert(q.sampling.end_ids.end(), q.sampling.stop_ids.begin(), q.sampling.stop_ids.end());
  }
  for (const auto& [id, bias] : q.sampling.logit_bias)
    if (id < 0 || id >= tok.vocab_size())
      return reject(error_kind::failed,
                    "logit_bias names token " + std::to_string(id) + ", outside the vocabulary [0, " +
                        std::to_string(tok.vocab_size()) + ")",
                    "logit_bias");
  out.to_scheduler.push_back(std::move(q));
  if (!s->client_request_id.empty()) by_client_[{peer, s->client_request_id}] = s->id;
  jobs_[s->id] = std::move(s);
  return out;
}

gateway_output gateway_core::cancel(const std::string& peer, const std::string& client_request_id, double now) {
  gateway_output out;
  auto it = by_client_.find({peer, client_request_id});
  if (it == by_client_.end()) return out;  // already finished: the done message is on its way
  auto& s = *jobs_.at(it->second);
  out.to_scheduler.push_back(proto::cancel_request{s.id});
  finish(s, finish_reason::cancelled, "cancelled by the client", now, out);
  return out;
}

gateway_output gateway_core::on_client_gone(const std::string& peer, double now) {
  gateway_output out;
  std::vector<uint64_t> ids;
  for (const auto& [id, s] : jobs_)
    if (s->peer == peer) ids.push_back(id);
  for (uint64_t id : ids) {
    out.to_scheduler.push_back(proto::cancel_request{id});
    finish(*jobs_.at(id), finish_reason::cancelled, "client disconnected", now, out);
  }
  if (!ids.empty()) spdlog::info("gateway: client disconnected; cancelled its {} jobs", ids.size());
  out.to_clients.clear();  // nobody to read them
  return out;
}

gateway_output gateway_core::cancel_all(const std::string& reason, double now) {
  gateway_output out;
  std::vector<uint64_t> ids;
  for (const auto& [id, s] : jobs_) ids.push_back(id);
  for (uint64_t id : ids) {
    out.to_scheduler.push_back(proto::cancel_request{id});
    finish(*jobs_.at(id), finish_reason::cancelled, reason, now, out);
  }
  return out;
}

// ---- from the scheduler ---------------------------------------------------------------------------

std::string gateway_core::not_ready() const {
  if (!accepting_) return "the gateway is shutting down";
  if (!scheduler_up_) return "no scheduler: it stopped answering this gateway";
  if (!scheduler_answered_) return "waiting for the scheduler to answer";
  for (const auto& m : models_)
    if (std::find(ready_models_.begin(), ready_models_.end(), m.name) == ready_models_.end())
      return "no worker is ready for model " + m.name;
  return {};
}

gateway_output gateway_core::on_tick(double now) {
  gateway_output out;
  if (scheduler_heard_ < 0) scheduler_heard_ = now;
  out.to_scheduler.push_back(proto::heartbeat{++heartbeats_, true});
  if (!scheduler_up_ || now - scheduler_heard_ <= opts_.scheduler_timeout_s) return out;
  scheduler_up_ = false;
  const std::string why = fmt::format(
      "the scheduler stopped answering (nothing heard for {:.1f} s, more than the gateway's {:.1f} s "
      "--scheduler-timeout): it died or is unreachable; the job's tokens so far stand, resubmit it",
      now - scheduler_heard_, opts_.scheduler_timeout_s);
  std::vector<uint64_t> ids;
  for (const auto& [id, s] : jobs_) ids.push_back(id);
  for (uint64_t id : ids) {
    out.to_scheduler.push_back(proto::cancel_request{id});  // for a scheduler that was only stalled
    finish(*jobs_.at(id), finish_reason::error, why, now, out, "scheduler");
  }
  spdlog::error(
      "gateway: lost the scheduler (nothing heard for {:.1f} s); {} job(s) in flight ended with an error, "
      "new jobs get overloaded until it answers",
      now - scheduler_heard_, ids.size());
  return out;
}

gateway_output gateway_core::on_scheduler(const proto::control_message& msg, double now) {
  gateway_output out;
  if (!scheduler_up_) spdlog::info("gateway: the scheduler answers again; accepting jobs");
  scheduler_up_ = true;
  scheduler_answered_ = true;
  scheduler_heard_ = now;
  if (const auto* hb = std::get_if<proto::heartbeat>(&msg)) ready_models_ = hb->ready_models;
  if (const auto* evs = std::get_if<proto::request_events>(&msg)) {
    for (const auto& je : evs->events) {
      auto it = jobs_.find(je.event.id);
      if (it == jobs_.end()) continue;  // finished here already (stop string, cancel)
      auto& s = *it->second;
      if (je.queue_ms >= 0) s.queue_ms = je.queue_ms;
      if (!je.event.tokens.empty() && s.first_token_at < 0) s.first_token_at = now;
      on_tokens(s, je.event, now, out);
      if (!jobs_.count(je.event.id)) continue;  // ended at a stop string
      if (je.event.finished != finish_reason::none)
        finish(s, je.event.finished, je.event.error, now, out);
      else
        send_chunk(s, false, out);
    }
  } else if (const auto* rej = std::get_if<proto::request_rejected>(&msg)) {
    auto it = jobs_.find(rej->id);
    if (it != jobs_.end()) {
      auto& s = *it->second;
      if (rej->error.field == "gateway_id")  // the operator's mistake, not the client's: say it here too
        spdlog::error("gateway: the scheduler refused this gateway: {}", rej->error.message);
      out.to_clients.push_back(error_reply(s.peer, s.id, s.client_request_id, rej->error));
      by_client_.erase({s.peer, s.client_request_id});
      jobs_.erase(it);
    }
  } else if (const auto* pe = std::get_if<proto::peer_error>(&msg)) {
    // A refused gateway id answers every heartbeat: said once.
    if (pe->error.field != "gateway_id" || !std::exchange(refused_logged_, true))
      spdlog::error("gateway: the scheduler reports: {} ({})", pe->error.message, pe->error.field);
  }
  return out;
}

void gateway_core::on_tokens(job_state& s, const request_event& e, double now, gateway_output& out) {
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    s.pending_ids.push_back(e.tokens[i].id);
    s.pending_logprobs.push_back(e.tokens[i].logprob);
    if (i < e.top.size()) s.pending_top.push_back(e.top[i]);
    if (s.text.feed(e.tokens[i].id)) {
      out.to_scheduler.push_back(proto::cancel_request{s.id});
      finish(s, finish_reason::stop, "", now, out);
      return;
    }
  }
}

void gateway_core::send_chunk(job_state& s, bool final, gateway_output& out) {
  s.pending_text += s.text.take();
  if (!s.stream && !final) return;
  if (s.pending_ids.empty() && s.pending_text.empty()) return;
  proto::token_chunk c;
  c.job_id = s.id;
  c.client_request_id = s.client_request_id;
  c.index = s.ids_sent;
  c.ids = std::move(s.pending_ids);
  c.text_delta = std::move(s.pending_text);
  c.logprobs = std::move(s.pending_logprobs);
  c.top = std::move(s.pending_top);
  s.ids_sent += static_cast<uint32_t>(c.ids.size());
  s.pending_ids.clear();
  s.pending_text.clear();
  s.pending_logprobs.clear();
  s.pending_top.clear();
  out.to_clients.push_back({s.peer, std::move(c)});
}

// Sends what is left and the done message, and forgets the job.
void gateway_core::finish(job_state& s, finish_reason reason, const std::string& detail, double now,
                          gateway_output& out, const std::string& field) {
  s.text.finish();
  send_chunk(s, true, out);
  if (reason == finish_reason::error) {
    // The cluster could not finish it (every worker able to serve it went away): the tokens
    // sent so far stand, and the job ends with an error of kind disconnected.
    out.to_clients.push_back(
        {s.peer, proto::job_error{s.id, s.client_request_id, {error_kind::disconnected, detail, field}}});
    if (!s.client_request_id.empty()) by_client_.erase({s.peer, s.client_request_id});
    jobs_.erase(s.id);
    return;
  }
  proto::job_done d;
  d.job_id = s.id;
  d.client_request_id = s.client_request_id;
  d.reason = reason;
  d.prompt_tokens = s.prompt_tokens;
  d.completion_tokens = s.ids_sent;
  d.queue_ms = s.queue_ms;
  d.ttft_ms = s.first_token_at >= 0 ? (s.first_token_at - s.accepted_at) * 1000.0 : 0.0;
  d.total_ms = (now - s.accepted_at) * 1000.0;
  d.detail = detail;
  out.to_clients.push_back({s.peer, std::move(d)});
  if (!s.client_request_id.empty()) by_client_.erase({s.peer, s.client_request_id});
  jobs_.erase(s.id);  // s is gone from here on
}

}  // namespace troupe
