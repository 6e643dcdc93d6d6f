// The CPU worker backend: one model replica on the host, its paged KV pool, and the
// forward pass of a whole step plan at once over the kernel registry's selected variants.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "src/engine/llama_recipe.h"
#include "troupe/kernel_registry.h"
#include "troupe/model.h"

namespace troupe::kern::cpu {
class thread_pool;
}

namespace troupe {

class communicator;
namespace tp {
struct shard;
}

struct cpu_backend_options {
  int n_threads = 1;               // handed to the kernels through troupe_kctx
  int64_t kv_bytes = 0;            // size of the KV pool; 0 = kv_fraction of physical RAM
  double kv_fraction = 0.05;       // used when kv_bytes == 0
  int32_t block_size = 16;         // tokens per KV block
  int64_t max_batch_tokens = 512;  // most new tokens one step plan may carry (sizes the scratch buffers)
  int64_t swap_bytes = 0;          // host pool for preemption by swap (step_plan::swap_out/in); 0 = none
  // KV pool elements in f16: half the memory per token and half the bytes attention reads
  // (llama.cpp's default). Off by default: the f32 pool keeps logits within 1e-4 of the
  // reference implementations; f16 rounds each key and value to 11 significant bits.
  bool kv_f16 = false;
  // A kernel context from the caller (its pool and parallel_for are used, n_threads is
  // ignored); null: the backend starts its own pool of n_threads.
  const troupe_kctx* kctx = nullptr;
  // Tensor parallelism: this rank's shard of the model (tp::make_shard) and the group's
  // communicator; the attention output and MLP down projections are all-reduced across the
  // group. Both null: the whole model on this backend. Both must outlive the backend.
  const tp::shard* shard = nullptr;
  communicator* comm = nullptr;
};

// The recipe (src/engine/llama_recipe.h) runs on this class's host buffers: it is the executor.
class cpu_backend : public worker_backend, private llama_executor {
 public:
  // Keeps references to `model` and `registry`: both must outlive the backend. Throws
  // troupe::error(failed) naming the tensor when a weight's shape or type does not fit the
  // config, or when the options leave room for no KV block; troupe::error(unimplemented)
  // naming the op, backend and dtype when the registry has no CPU variant for one of the
  // model's weight types or the KV type (kernel_registry::require).
  cpu_backend(const model_file& model, const kernel_registry& registry, const cpu_backend_options& opt);
  ~cpu_backend() override;

  // One plan at a time (the activation buffers are the backend's); throws
  // troupe::error(failed) naming the step and seq id for a plan that does not fit.
  step_result step(const step_plan& plan) override;
  int64_t kv_blocks() const override { return n_blocks_; }
  int32_t block_size() const override { return block_size_; }
  std::string describe() const override;
  void copy_block(int32_t src, int32_t dst) override;
  int64_t host_blocks() const override { return n_host_blocks_; }
  int64_t max_step_tokens() const override { return opt_.max_batch_tokens; }

  // Runs `tokens` of one sequence from `start_pos` (its KV blocks in `block_table`, as a plan
  // gives them) and returns the logits of every position, (tokens, vocab) row-major: what
  // perplexity and the comparison of two models need. At most max_step_tokens tokens.
  std::vector<float> all_logits(std::span<const int32_t> tokens, int32_t start_pos,
                                std::span<const int32_t> block_table);

  // The logits of the last step, one row of vocab floats per seq_work with sample == true,
  // in plan order: for tests and debugging.
  std::span<const float> last_logits(size_t sampled_index) const;
  int64_t vocab_size() const { return cfg_.vocab_size; }

 private:
  struct scratch;  // activation buffers, sized for max_batch_tokens

  void validate(const step_plan& plan) const;
  void swap(const step_plan& plan);

  // ---- llama_executor: each op through its selected variant, on the host buffers
  float* buf(llama_act a) const;
  const tensor_view& weight(weight_id w) const;
  void embedding(llama_act out, int64_t rows) override;
  void rmsnorm(llama_act out, llama_act x, weight_id w, int64_t rows) override;
  void add_rmsnorm(llama_act out, llama_act x, llama_act residual, weight_id w, int64_t rows) override;
  void matmul(llama_act y, llama_act x, weight_id w, int64_t rows) override;
  void rope(llama_act x, int64_t rows, int64_t n_heads) override;
  void add_bias(llama_act x, weight_id b, int64_t rows) override;
  void head_rmsnorm(llama_act x, weight_id w, int64_t rows, int64_t n_heads) override;
  void kv_store(int64_t layer, llama_act k, llama_act v, int64_t rows) override;
  void attention(int64_t layer, llama_act out, llama_act q) override;
  void silu_mul(llama_act gate, llama_act up, int64_t n) override;
  void all_reduce(llama_act x, int64_t rows) override;
  void gather_rows(llama_act out, llama_act x, int64_t n_sample) override;

  const model_config& cfg_;
  const model_weights& w_;
  cpu_backend_options opt_;
  std::unique_ptr<kern::cpu::thread_pool> pool_;  // when the caller gave no kctx
  troupe_kctx kctx_{};

  // The selected variant of each op, fetched once from the registry.
  troupe_matmul_fn matmul_[5]{};  // by dtype: f32, f16, bf16, q8_0, q4_0
  troupe_embedding_fn embedding_ = nullptr;
  troupe_embedding_fn gather_ = nullptr;  // embedding_f32: the sampled rows of the hidden state
  troupe_rmsnorm_fn rmsnorm_ = nullptr;
  troupe_add_rmsnorm_fn add_rmsnorm_ = nullptr;
  troupe_rope_fn rope_ = nullptr;
  troupe_kv_store_fn kv_store_ = nullptr;  // kv_store or kv_store_f16, as the pool
  void (*attention_)(void) = nullptr;      // troupe_attention_fn or _f16kv_fn, as the pool
  troupe_silu_mul_fn silu_mul_ = nullptr;
  troupe_add_bias_fn add_bias_ = nullptr;  // with qkv_bias
  troupe_argmax_fn argmax_ = nullptr;
  std::string kernels_desc_;

  std::vector<float> inv_freq_;  // (head_dim/2) RoPE frequencies, Llama 3 scaling applied

  // The KV pool: per layer, K and V of (n_blocks, n_kv_heads, block_size, head_dim), f32 or
  // f16 (opt_.kv_f16) elements (the layout of kernel_abi.h's attention).
  int32_t block_size_ = 16;
  int64_t n_blocks_ = 0;
  int64_t kv_elem_ = 4;                      // bytes per element
  int64_t layer_bytes_ = 0;                  // one layer's K (or V) pool
  std::unique_ptr<char[]> k_pool_, v_pool_;  // (n_layers, n_blocks, n_kv_heads, block_size, head_dim)
  // The host pool: one slot holds a whole block, every layer's K then V rows, so that a
  // swap moves one contiguous slot. (n_host_blocks, n_layers, 2, n_kv_heads, block_size, head_dim)
  int64_t n_host_blocks_ = 0;
  std::unique_ptr<char[]> host_pool_;

  std::unique_ptr<scratch> s_;
};

}  // namespace troupe
