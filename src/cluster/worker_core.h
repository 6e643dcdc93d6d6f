// The worker's logic without threads or sockets: what it registers with, and the execution
// of one step plan on its backend, turning a failure into a step result that says so.
#pragma once
#include <memory>
#include <string>

#include "src/cluster/protocol.h"
#include "src/cluster/seq_cache.h"
#include "src/cluster/step_resolver.h"
#include "troupe/model.h"

namespace troupe {

struct worker_identity {
  std::string node;   // host name or a label
  std::string model;  // the model's name, as clients ask for it
  int32_t max_batch = 64;
};

class worker_core {
 public:
  worker_core(std::unique_ptr<worker_backend> backend, worker_identity id);
  proto::worker_registration registration() const;
  // Runs the plan; a backend error becomes step_outcome::error (the scheduler then
  // re-plans this worker's sequences elsewhere) instead of ending the process. Plans must
  // come in the order the scheduler sent them: placeholders (seq_work::feed_last_sampled)
  // are resolved from the previous step's samples before the backend (a tensor-parallel
  // leader relays the resolved plan) sees the plan, in place. Diffs (seq_work::diff) are
  // expanded by a seq_cache here, unless the backend expands them itself (a tensor-parallel
  // leader, after relaying them).
  // A plan it rejects (plan_rejected: over its step budget, a block outside its pool) names
  // the sequences at fault in step_outcome::rejected; the scheduler fails those only.
  proto::step_outcome step(step_plan& plan);
  // Drops every cached sequence (registering anew: the scheduler sends full work again).
  void forget_sequences();
  uint64_t steps() const { return steps_; }

 private:
  std::unique_ptr<worker_backend> backend_;
  worker_identity id_;
  step_resolver resolver_;
  seq_cache cache_;  // unused when backend_->expands_plan_diffs()
  uint64_t steps_ = 0;
};

// A benchmark backend, not a model: every sampled token is `token`, returned at once. It
// measures what the cluster (actors, ZeroMQ, Cap'n Proto, scheduling) adds per token.
class fixed_token_backend : public worker_backend {
 public:
  explicit fixed_token_backend(int32_t token, int64_t kv_blocks = 1 << 16, int32_t block_size = 16)
      : token_(token), kv_blocks_(kv_blocks), block_size_(block_size) {}
  step_result step(const step_plan& plan) override;
  int64_t kv_blocks() const override { return kv_blocks_; }
  int32_t block_size() const override { return block_size_; }
  std::string describe() const override { return "benchmark backend (fixed token, no model)"; }
  void copy_block(int32_t, int32_t) override {}

 private:
  int32_t token_;
  int64_t kv_blocks_;
  int32_t block_size_;
};

}  // namespace troupe
