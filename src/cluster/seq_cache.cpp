#include "src/cluster/seq_cache.h"

#include <string>

#include "troupe/error.h"

namespace troupe {

const std::vector<int32_t>* seq_cache::history(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : &it->second.history;
}

step_result seq_cache::step(worker_backend& backend, const step_plan& plan) {
  try {
    return run(backend, plan);
  } catch (...) {
    clear();  // some vectors may sit in expanded_, and the scheduler re-sends in full anyway
    expanded_.seqs.clear();
    throw;
  }
}

step_result seq_cache::run(worker_backend& backend, const step_plan& plan) {
  for (uint64_t id : plan.released) seqs_.erase(id);
  ++run_;
  expanded_.step_id = plan.step_id;
  expanded_.swap_out = plan.swap_out;
  expanded_.swap_in = plan.swap_in;
  expanded_.seqs.resize(plan.seqs.size());
  of_work_.resize(plan.seqs.size());
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const seq_work& w = plan.seqs[i];
    auto it = seqs_.find(w.seq_id);
    if (w.diff && it == seqs_.end())
      throw error(error_kind::failed,
                  "step " + std::to_string(plan.step_id) + ", seq " + std::to_string(w.seq_id) +
                      ": a diff for a sequence this worker holds no state of (its full work never came)",
                  "seqs");
    entry* e = it != seqs_.end() ? &it->second : &seqs_[w.seq_id];
    if (e->run == run_)
      throw error(error_kind::failed,
                  "step " + std::to_string(plan.step_id) + ": seq " + std::to_string(w.seq_id) + " has two works",
                  "seqs");
    e->run = run_;
    if (!w.diff) {  // new to this worker, or resumed: replaces whatever was cached
      e->history = w.history;
      e->table = w.block_table;
      e->sampling = w.sampling;
      e->n_prompt = w.n_prompt;
    } else {
      e->table.insert(e->table.end(), w.block_table.begin(), w.block_table.end());
    }
    seq_work& x = expanded_.seqs[i];
    x.seq_id = w.seq_id;
    x.tokens = w.tokens;  // a chunk or one token: what the step computes anyway
    x.start_pos = w.start_pos;
    x.sample = w.sample;
    x.feed_last_sampled = w.feed_last_sampled;
    x.diff = false;
    x.n_prompt = e->n_prompt;
    x.history = std::move(e->history);
    x.block_table = std::move(e->table);
    x.sampling = std::move(e->sampling);
    of_work_[i] = e;
  }
  step_result result = backend.step(expanded_);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    entry& e = *of_work_[i];
    seq_work& x = expanded_.seqs[i];
    e.history = std::move(x.history);
    e.table = std::move(x.block_table);
    e.sampling = std::move(x.sampling);
    if (plan.seqs[i].sample && i < result.outputs.size() && result.outputs[i].token >= 0)
      e.history.push_back(result.outputs[i].token);
  }
  return result;
}

}  // namespace troupe
