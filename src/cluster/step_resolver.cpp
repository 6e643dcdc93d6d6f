#include "src/cluster/step_resolver.h"

#include <string>

#include "troupe/error.h"

namespace troupe {

void step_resolver::resolve(step_plan& plan) const {
  for (auto& w : plan.seqs) {
    if (!w.feed_last_sampled) continue;
    auto it = last_.find(w.seq_id);
    if (it == last_.end() || w.tokens.size() != 1)
      throw error(error_kind::failed,
                  "step " + std::to_string(plan.step_id) + ", seq " + std::to_string(w.seq_id) +
                      ": feed_last_sampled needs one token and a token sampled for it in the previous step",
                  "tokens");
    w.tokens[0] = it->second;
    // A diff's history is the worker's cached one, which already ends with that token
    // (seq_cache appends what it samples).
    if (!w.diff) w.history.push_back(it->second);
    w.feed_last_sampled = false;
  }
}

void step_resolver::remember(const step_result& result) {
  last_.clear();
  for (const auto& o : result.outputs)
    if (o.token >= 0) last_[o.seq_id] = o.token;
}

}  // namespace troupe
