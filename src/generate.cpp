// The single-process generation loop: tokenize, prefill every prompt in chunks packed into
// steps of at most max_batch_tokens, then decode all sequences together one token per step
// until each stops.
#include "src/generate.h"

#include <algorithm>
#include <chrono>

#include "src/text_stream.h"
#include "troupe/error.h"

namespace troupe {

namespace {

// One request in flight.
struct sequence {
  size_t index = 0;
  std::vector<int32_t> tokens;  // prompt + generated: the history the sampler sees
  int32_t n_prompt = 0;
  int32_t n_cached = 0;  // positions whose KV is in the pool
  std::vector<int32_t> block_table;
  const sampling_params* sampling = nullptr;
  text_stream text;  // the generated text continues the prompt: a leading space is part of it
  generation_output* out = nullptr;
  bool done = false;

  sequence(const tokenizer& tok, const sampling_params& p) : sampling(&p), text(tok, p.stop_strings) {}
};

// Blocks of the backend's pool, handed out as sequences grow and returned when they end.
class block_pool {
 public:
  explicit block_pool(const worker_backend& b) : block_size_(b.block_size()) {
    for (int64_t i = b.kv_blocks() - 1; i >= 0; --i) free_.push_back((int32_t)i);
  }
  // Grows `table` to cover positions [0, n).
  void cover(std::vector<int32_t>& table, int64_t n) {
    while ((int64_t)table.size() * block_size_ < n) {
      if (free_.empty())
        throw error(error_kind::overloaded, "generate: the KV pool is out of blocks (" + std::to_string(n) +
                                                " positions needed by one sequence); give it more memory");
      table.push_back(free_.back());
      free_.pop_back();
    }
  }
  void release(std::vector<int32_t>& table) {
    free_.insert(free_.end(), table.begin(), table.end());
    table.clear();
  }

 private:
  int32_t block_size_;
  std::vector<int32_t> free_;
};

// Gives the callback the text that can no longer become part of a stop string.
void stream(sequence& s, const text_callback& on_text) {
  const std::string_view piece = s.text.take();
  if (!piece.empty() && on_text) on_text(s.index, piece);
}

void finish(sequence& s, const char* reason, block_pool& pool, const text_callback& on_text) {
  s.text.finish();
  s.out->text = s.text.text();
  s.out->finish_reason = reason;
  s.done = true;
  pool.release(s.block_table);
  stream(s, on_text);
}

// Takes a sampled token: records it, streams its text, and decides whether the sequence ends.
void accept(sequence& s, int32_t token, const tokenizer& tok, int64_t max_seq_len, block_pool& pool,
            const text_callback& on_text) {
  const sampling_params& p = *s.sampling;
  s.tokens.push_back(token);
  s.out->ids.push_back(token);
  const bool stop_id = std::find(p.stop_ids.begin(), p.stop_ids.end(), token) != p.stop_ids.end();
  if ((!p.ignore_eos && tok.is_eos(token)) || stop_id) return finish(s, "stop", pool, on_text);

  if (s.text.feed(token)) return finish(s, "stop", pool, on_text);  // a stop string
  if ((int32_t)s.out->ids.size() >= p.max_tokens) return finish(s, "length", pool, on_text);
  if (max_seq_len > 0 && (int64_t)s.tokens.size() >= max_seq_len) return finish(s, "length", pool, on_text);
  stream(s, on_text);
}

seq_work work_for(const sequence& s, int32_t n_new, bool sample) {
  seq_work w;
  w.seq_id = s.index;
  w.tokens.assign(s.tokens.begin() + s.n_cached, s.tokens.begin() + s.n_cached + n_new);
  w.start_pos = s.n_cached;
  w.block_table = s.block_table;
  w.sample = sample;
  if (sample) {
    w.sampling = *s.sampling;
    w.history = s.tokens;
    w.n_prompt = s.n_prompt;
  }
  return w;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
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
    s.tokens = outs[i].prompt_ids;
    s.n_prompt = (int32_t)s.tokens.size();
    s.out = &outs[i];
  }
  if ((int64_t)seqs.size() > opt.max_batch_tokens)
    throw error(error_kind::failed,
                "generate: " + std::to_string(seqs.size()) +
                    " prompts do not fit one decode step of max_batch_tokens " + std::to_string(opt.max_batch_tokens),
                "prompt");
  block_pool pool(backend);
  uint64_t step_id = 0;

  // Prefill: chunks of every prompt packed into steps of at most max_batch_tokens; a
  // sequence samples its first token in the step that feeds the end of its prompt.
  auto t0 = std::chrono::steady_clock::now();
  for (size_t next = 0; next < seqs.size();) {
    step_plan plan;
    plan.step_id = step_id++;
    std::vector<sequence*> fed;
    int64_t budget = opt.max_batch_tokens;
    for (size_t i = next; i < seqs.size() && budget > 0; ++i) {
      sequence& s = seqs[i];
      const int32_t n = (int32_t)std::min<int64_t>(budget, s.n_prompt - s.n_cached);
      const bool last = s.n_cached + n == s.n_prompt;
      pool.cover(s.block_table, s.n_cached + n);
      plan.seqs.push_back(work_for(s, n, last));
      fed.push_back(&s);
      budget -= n;
    }
    const step_result r = backend.step(plan);
    for (size_t j = 0; j < fed.size(); ++j) {
      sequence& s = *fed[j];
      s.n_cached += (int32_t)plan.seqs[j].tokens.size();
      tm.prefill_tokens += (int64_t)plan.seqs[j].tokens.size();
      if (plan.seqs[j].sample) {
        accept(s, r.outputs[j].token, tok, opt.max_seq_len, pool, on_text);
        ++next;
      }
    }
  }
  tm.prefill_ms += ms_since(t0);

  // Decode: one token per live sequence per step, all together.
  t0 = std::chrono::steady_clock::now();
  for (;;) {
    step_plan plan;
    plan.step_id = step_id++;
    std::vector<sequence*> fed;
    for (sequence& s : seqs) {
      if (s.done) continue;
      pool.cover(s.block_table, s.n_cached + 1);
      plan.seqs.push_back(work_for(s, 1, true));
      fed.push_back(&s);
    }
    if (fed.empty()) break;
    const step_result r = backend.step(plan);
    for (size_t j = 0; j < fed.size(); ++j) {
      fed[j]->n_cached += 1;
      ++tm.decode_tokens;
      accept(*fed[j], r.outputs[j].token, tok, opt.max_seq_len, pool, on_text);
    }
  }
  tm.decode_ms += ms_since(t0);
  return outs;
}

}  // namespace troupe
