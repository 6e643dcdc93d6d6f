// The Llama forward pass, written once for every backend: a step plan gathered into batch
// arrays, and the recipe of one step as a sequence of ops over an executor. Each backend
// (src/engine/cpu_backend.cpp, src/engine/cuda/) is an executor: it owns the buffers, the stream
// and the KV pool, and runs each op through the variant the kernel registry selected.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "troupe/model.h"
#include "troupe/step.h"

namespace troupe {

// ---- the batch: every new token of a plan in one (n_tokens) row range -----------------

enum class batch_order {
  plan,          // batch sequence r is plan.seqs[r]
  decode_first,  // sequences feeding exactly one token first (in plan order), then the others
};

struct step_batch {
  std::vector<size_t> seq;                             // (n_seqs) plan index of batch sequence r
  std::vector<int64_t> seq_begin;                      // (n_seqs + 1) first batch token of sequence r
  std::vector<std::span<const int32_t>> block_tables;  // (n_seqs) sequence r's table, viewing the plan
  std::vector<int32_t> ids, positions;                 // (n_tokens)
  std::vector<int32_t> slots;                          // (n_tokens) KV slot: block * block_size + offset
  std::vector<size_t> sampled;                         // (n_sample) plan index of each sampled sequence
  std::vector<int32_t> logit_rows;                     // (n_sample) batch token whose logits it samples
  int64_t n_decode = 0;                                // sequences feeding exactly one token
  int64_t max_end = 0;                                 // longest sequence after the step, in positions

  int64_t tokens() const { return (int64_t)ids.size(); }
  int64_t seqs() const { return (int64_t)seq.size(); }
  int64_t n_sample() const { return (int64_t)sampled.size(); }
};

// Reads each seq_work's tokens, start_pos, block_table and sample, nothing else; the block
// tables must cover every new position (check_step_plan). `out` keeps its capacity, so a
// step allocates nothing once the batch sizes have been seen. Sampled sequences come in
// batch order: under batch_order::plan that is plan order.
void gather_batch(std::span<const seq_work> seqs, int32_t block_size, batch_order order, step_batch& out);

// ---- the recipe -----------------------------------------------------------------------

// Activations, each the executor's buffer of max_batch_tokens (or sampled) rows.
enum class llama_act {
  x,   // (T, dim) the residual stream
  xn,  // (T, dim) normed
  q,
  att,  // (T, n_heads * head_dim)
  k,
  v,       // (T, n_kv_heads * head_dim)
  tmp,     // (T, dim) output of wo and w_down, a partial sum under tensor parallelism
  gate,    // (T, hidden_dim)
  up,      // (T, hidden_dim)
  last,    // (n_sample, dim) normed hidden state of each sampled sequence's last token
  logits,  // (n_sample, vocab)
};

enum class llama_weight {
  attn_norm,
  wq,
  wk,
  wv,
  wo,
  ffn_norm,
  w_gate,
  w_up,
  w_down,
  output_norm,
  output,
  bq,  // with model_config::qkv_bias
  bk,
  bv,
  q_norm,  // with model_config::qk_norm
  k_norm,
};
struct weight_id {
  int64_t layer = 0;  // ignored for output_norm and output
  llama_weight which = llama_weight::wq;
};

// One op of the recipe per call, on the executor's buffers; `rows` is T or n_sample.
class llama_executor {
 public:
  virtual ~llama_executor() = default;
  virtual void embedding(llama_act out, int64_t rows) = 0;  // out = tok_embd rows of the batch's ids
  virtual void rmsnorm(llama_act out, llama_act x, weight_id w, int64_t rows) = 0;
  // x += residual, then out = rmsnorm(x) * w
  virtual void add_rmsnorm(llama_act out, llama_act x, llama_act residual, weight_id w, int64_t rows) = 0;
  virtual void matmul(llama_act y, llama_act x, weight_id w, int64_t rows) = 0;  // y = x W^T
  virtual void rope(llama_act x, int64_t rows, int64_t n_heads) = 0;             // at the batch's positions
  virtual void add_bias(llama_act x, weight_id b, int64_t rows) = 0;             // every row of x += b
  // every head_dim-wide head of x (rows, n_heads * head_dim) = rmsnorm(head) * w (head_dim)
  virtual void head_rmsnorm(llama_act x, weight_id w, int64_t rows, int64_t n_heads) = 0;
  // the rows of k and v into layer's KV pool at the batch's slots
  virtual void kv_store(int64_t layer, llama_act k, llama_act v, int64_t rows) = 0;
  // out = causal attention of each batch sequence's queries over its blocks of layer's pool
  // (over the last model_config::sliding_window positions when that is set)
  virtual void attention(int64_t layer, llama_act out, llama_act q) = 0;
  virtual void silu_mul(llama_act gate, llama_act up, int64_t n) = 0;  // gate = silu(gate) * up
  virtual void all_reduce(llama_act x, int64_t rows) = 0;              // (rows, dim) summed over the TP group
  // out (n_sample, dim) = rows logit_rows of x
  virtual void gather_rows(llama_act out, llama_act x, int64_t n_sample) = 0;
};

// One step of the model over n_tokens batch rows: embedding, then per layer
//   rmsnorm (fused with the previous layer's residual add) -> q/k/v matmuls (+ biases:
//   Qwen2) (-> per-head q/k norms: Qwen3) -> rope ->
//   KV store -> paged attention -> o matmul -> all-reduce -> add + rmsnorm ->
//   gate/up matmuls -> silu_mul -> down matmul -> all-reduce,
// then the last residual add with the final norm, and logits for the n_sample sampled rows.
void llama_forward(llama_executor& ex, const model_config& c, int64_t n_tokens, int64_t n_sample);

}  // namespace troupe
