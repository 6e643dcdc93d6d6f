#include "src/cluster/worker_core.h"

#include <exception>

namespace troupe {

worker_core::worker_core(std::unique_ptr<worker_backend> backend, worker_identity id)
    : backend_(std::move(backend)), id_(std::move(id)) {}

proto::worker_registration worker_core::registration() const {
  return {id_.node,      backend_->describe(),    id_.model, backend_->kv_blocks(),      backend_->block_size(),
          id_.max_batch, backend_->host_blocks(), true,      backend_->max_step_tokens()};
}

void worker_core::forget_sequences() {
  resolver_.clear();
  cache_.clear();
}

proto::step_outcome worker_core::step(step_plan& plan) {
  proto::step_outcome o;
  o.result.step_id = plan.step_id;
  try {
    // Checked here, before a tensor-parallel leader relays the plan: every backend behind
    // this worker holds at most max_step_tokens() per step.
    if (auto over = over_step_budget(plan, backend_->max_step_tokens()); !over.empty()) {
      int64_t total = 0;
      for (const auto& w : plan.seqs) total += static_cast<int64_t>(w.tokens.size());
      throw plan_rejected("step " + std::to_string(plan.step_id) + ": " + std::to_string(total) +
                              " tokens, more than this worker's step budget of " +
                              std::to_string(backend_->max_step_tokens()) + " (--max-batch-tokens)",
                          "tokens", std::move(over));
    }
    resolver_.resolve(plan);
    o.result = backend_->expands_plan_diffs() ? backend_->step(plan) : cache_.step(*backend_, plan);
    o.result.step_id = plan.step_id;
    resolver_.remember(o.result);
    ++steps_;
  } catch (const plan_rejected& e) {
    forget_sequences();  // the scheduler re-plans every sequence in full
    o.error = e.what();
    o.rejected = e.seqs();
  } catch (const std::exception& e) {
    forget_sequences();
    o.error = e.what();
  }
  return o;
}

step_result fixed_token_backend::step(const step_plan& plan) {
  step_result r;
  r.step_id = plan.step_id;
  r.outputs.reserve(plan.seqs.size());
  for (const auto& w : plan.seqs) r.outputs.push_back({w.seq_id, w.sample ? token_ : -1, 0.0f, {}});
  return r;
}

}  // namespace troupe
