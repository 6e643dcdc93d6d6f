// The single-process generation loop: the scheduling policy and its driver (src/sched/)
// over one local backend, one step in flight. Every prompt is submitted at once; the policy
// decides each step (chunked prefill, batched decode, KV blocks, preemption) and when each
// request ends (EOS, stop ids, max_tokens); this file only detokenizes, applies stop
// strings and streams text.
#include "src/cluster/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <utility>

#include "src/sched/driver.h"
#include "src/cluster/seq_cache.h"
#include "src/model/text_stream.h"
#include "troupe/error.h"

namespace troupe {

namespace {

// One request's output side; its index is its request id in the policy.
struct sequence {
  size_t index = 0;
  int32_t n_prompt = 0;
  const sampling_params* sampling = nullptr;
  text_stream text;  // the generated text continues the prompt: a leading space is part of it
  generation_output* out = nullptr;
  bool done = false;

  sequence(const tokenizer& tok, const sampling_params& p) : sampling(&p), text(tok, p.stop_strings) {}
};

// Gives the callback the text that can no longer become part of a stop string.
void stream(sequence& s, const text_callback& on_text) {
  const std::string_view piece = s.text.take();
  if (!piece.empty() && on_text) on_text(s.index, piece);
}

// Adds a generated token's text and streams what became final; true when the text now ends
// at a stop string (it is cut there and the sequence is over).
bool feed_text(sequence& s, int32_t token, const text_callback& on_text) {
  if (s.text.feed(token)) return true;
  stream(s, on_text);
  return false;
}

// The sequence ended: what the text stream still holds back is final now.
void end_text(sequence& s, const text_callback& on_text) {
  s.text.finish();
  s.out->text = s.text.text();
  stream(s, on_text);
}

// ---- the loop around the driver ---------------------------------------------------------------------

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The driver's sink: keeps the one plan in flight and turns request events into outputs.
class local_run final : public sched::driver_sink {
 public:
  local_run(std::vector<sequence>& seqs, const text_callback& on_text) : seqs_(seqs), on_text_(on_text) {}

  void on_plan(uint32_t, step_plan&& plan, double) override { plan_ = std::move(plan); }

  void on_events(std::vector<sched::request_event>& events, std::optional<uint32_t>, double) override {
    for (const sched::request_event& e : events) {
      sequence& s = seqs_.at(e.id);
      if (s.done) continue;  // the cancellation that follows a stop string
      for (size_t i = 0; i < e.tokens.size() && !s.done; ++i) {
        const int32_t token = e.tokens[i].id;
        s.out->ids.push_back(token);
        // A stop finish comes with the EOS or stop id that caused it: not part of the text.
        if (e.finished == sched::finish_reason::stop && i + 1 == e.tokens.size()) break;
        if (feed_text(s, token, on_text_)) {
          finish(s, "stop");
          stopped_.push_back(e.id);  // the policy knows no stop strings: it is cancelled
        }
      }
      if (s.done) continue;
      if (e.finished == sched::finish_reason::error)
        throw error(error_kind::failed, "generate: request " + std::to_string(e.id) + ": " + e.error);
      if (e.finished == sched::finish_reason::stop || e.finished == sched::finish_reason::length)
        finish(s, to_string(e.finished));
    }
  }

  std::optional<step_plan> take_plan() { return std::exchange(plan_, std::nullopt); }
  std::vector<uint64_t> take_stopped() { return std::exchange(stopped_, {}); }
  size_t unfinished() const { return seqs_.size() - finished_; }

 private:
  void finish(sequence& s, const char* reason) {
    end_text(s, on_text_);
    s.out->finish_reason = reason;
    s.done = true;
    ++finished_;
  }

  std::vector<sequence>& seqs_;
  const text_callback& on_text_;
  std::optional<step_plan> plan_;
  std::vector<uint64_t> stopped_;
  size_t finished_ = 0;
};

// One replica, the backend; one step in flight, every prompt computed (no prefix cache, so
// that timings and outputs do not depend on which prompts share a batch).
sched::policy_config local_policy(const generate_options& opt) {
  sched::policy_config c;
  c.max_step_tokens = static_cast<int32_t>(std::clamp<int64_t>(opt.max_batch_tokens, 1, 1 << 30));
  c.max_queued = std::numeric_limits<int64_t>::max();
  c.prefix_caching = false;
  c.max_inflight_steps = 1;
  return c;
}

sched::request request_for(size_t i, const std::vector<int32_t>& prompt, const sampling_params& sp,
                           const tokenizer& tok, int64_t max_seq_len) {
  sched::request q;
  q.id = i;
  q.prompt = prompt;
  q.sampling = sp;
  // The context limit ends a sequence like max_tokens does ("length").
  if (max_seq_len > 0)
    q.sampling.max_tokens =
        static_cast<int32_t>(std::min<int64_t>(sp.max_tokens, max_seq_len - (int64_t)prompt.size()));
  if (tok.eos() >= 0) q.eos_ids.push_back(tok.eos());
  for (int32_t id : tok.data().extra_eos_ids) q.eos_ids.push_back(id);
  return q;
}

}  // namespace

std::vector<generation_output> generate(worker_backend& backend, const tokenizer& tok,
                                        const std::vector<generation_request>& requests, const generate_options& opt,
                                        const text_callback& on_text, generation_timings* timings) {
  generation_timings local;
  generation_timings& tm = timings ? *timings : local;
  std::vector<generation_output> outs(requests.size());
  std::vector<sequence> seqs;
  seqs.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const generation_request& r = requests[i];
    if (std::string why = validate(r.sampling); !why.empty())
      throw error(error_kind::failed, "generate: request " + std::to_string(i) + ": " + why, "sampling");
    outs[i].prompt_ids = !r.prompt_ids.empty() ? r.prompt_ids : tok.encode(r.prompt, tok.data().add_bos);
    if (outs[i].prompt_ids.empty())
      throw error(error_kind::failed, "generate: request " + std::to_string(i) + ": empty prompt", "prompt");
    if (opt.max_seq_len > 0 && (int64_t)outs[i].prompt_ids.size() >= opt.max_seq_len)
      throw error(error_kind::failed,
                  "generate: request " + std::to_string(i) + ": prompt of " +
                      std::to_string(outs[i].prompt_ids.size()) + " tokens leaves no room in a context of " +
                      std::to_string(opt.max_seq_len),
                  "prompt");
    sequence& s = seqs.emplace_back(tok, r.sampling);
    s.index = i;
    s.n_prompt = (int32_t)outs[i].prompt_ids.size();
    s.out = &outs[i];
  }

  const auto t_start = std::chrono::steady_clock::now();
  auto now_s = [&] { return ms_between(t_start, std::chrono::steady_clock::now()) * 1e-3; };
  sched::driver drv(local_policy(opt));
  sched::replica_info replica;
  replica.id = 0;
  replica.kv_blocks = backend.kv_blocks();
  replica.block_size = backend.block_size();
  replica.max_batch = static_cast<int32_t>(std::clamp<size_t>(requests.size(), 1, 1 << 30));
  replica.host_kv_blocks = 0;
  drv.add_replica(replica, 0.0);
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto adm = drv.submit(request_for(i, outs[i].prompt_ids, requests[i].sampling, tok, opt.max_seq_len), 0.0);
    if (adm.accepted) continue;
    // What is left after the checks above: the sequence can never fit the KV pool.
    const bool kv =
        adm.error.kind == error_kind::failed && (adm.error.field == "prompt" || adm.error.field == "max_tokens");
    throw error(kv ? error_kind::overloaded : adm.error.kind,
                "generate: request " + std::to_string(i) + ": " + adm.error.message +
                    (kv ? "; give the KV pool more memory" : ""),
                adm.error.field);
  }

  local_run run(seqs, on_text);
  seq_cache cache;  // what a worker keeps of each sequence between plans
  sched::null_sink drop;
  while (run.unfinished() > 0) {
    drv.pump(now_s(), run);
    auto plan = run.take_plan();
    if (!plan)  // nothing runs and nothing can start: waiting would be forever
      throw error(error_kind::overloaded,
                  "generate: the KV pool (" + std::to_string(replica.kv_blocks) + " blocks of " +
                      std::to_string(replica.block_size) + " tokens) cannot hold the next step of the " +
                      std::to_string(run.unfinished()) + " unfinished request(s); give it more memory");
    // A step that feeds prompt tokens (or recomputes a preempted sequence) counts as prefill.
    bool prefill = false;
    for (const seq_work& w : plan->seqs) {
      if (w.tokens.size() > 1 || w.start_pos < seqs[w.seq_id].n_prompt) {
        prefill = true;
        tm.prefill_tokens += (int64_t)w.tokens.size();
      } else {
        ++tm.decode_tokens;
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const step_result result = cache.step(backend, *plan);  // plans are diffs after the first
    drv.on_result(replica.id, result, now_s(), run);
    for (uint64_t id : run.take_stopped()) drv.cancel(id, now_s(), drop);
    (prefill ? tm.prefill_ms : tm.decode_ms) += ms_between(t0, std::chrono::steady_clock::now());
  }
  return outs;
}

}  // namespace troupe
