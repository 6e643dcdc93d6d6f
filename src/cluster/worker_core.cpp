#include "src/cluster/worker_core.h"

#include <exception>

namespace troupe {

worker_core::worker_core(std::unique_ptr<worker_backend> backend, worker_identity id)
    : backend_(std::move(backend)), id_(std::move(id)) {}

proto::worker_registration worker_core::registration() const {
  return {id_.node,      backend_->describe(),    id_.model, backend_->kv_blocks(), backend_->block_size(),
          id_.max_batch, backend_->host_blocks(), true};
}

proto::step_outcome worker_core::step(step_plan& plan) {
  proto::step_outcome o;
  o.result.step_id = plan.step_id;
  try {
    resolver_.resolve(plan);
    o.result = backend_->expands_plan_diffs() ? backend_->step(plan) : cache_.step(*backend_, plan);
    o.result.step_id = plan.step_id;
    resolver_.remember(o.result);
    ++steps_;
  } catch (const std::exception& e) {
    resolver_.clear();
    cache_.clear();
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
