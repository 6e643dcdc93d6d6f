// The Llama forward pass over an executor, and the gathering of a plan into a batch.
#include "src/engine/llama_recipe.h"

#include <algorithm>

namespace troupe {

// ---- the batch -------------------------------------------------------------------------

void gather_batch(std::span<const seq_work> seqs, int32_t block_size, batch_order order, step_batch& out) {
  out.seq.clear();
  out.seq_begin.assign(1, 0);
  out.block_tables.clear();
  out.ids.clear();
  out.positions.clear();
  out.slots.clear();
  out.sampled.clear();
  out.logit_rows.clear();
  out.n_decode = 0;
  out.max_end = 0;

  auto is_decode = [](const seq_work& w) { return w.tokens.size() == 1; };
  for (size_t i = 0; i < seqs.size(); ++i)
    if (order == batch_order::plan || is_decode(seqs[i])) out.seq.push_back(i);
  if (order == batch_order::decode_first)
    for (size_t i = 0; i < seqs.size(); ++i)
      if (!is_decode(seqs[i])) out.seq.push_back(i);

  for (size_t i : out.seq) {
    const seq_work& w = seqs[i];
    out.n_decode += is_decode(w) ? 1 : 0;
    out.block_tables.emplace_back(w.block_table);
    for (size_t t = 0; t < w.tokens.size(); ++t) {
      const int32_t p = w.start_pos + (int32_t)t;
      out.ids.push_back(w.tokens[t]);
      out.positions.push_back(p);
      out.slots.push_back(w.block_table[p / block_size] * block_size + p % block_size);
    }
    out.seq_begin.push_back((int64_t)out.ids.size());
    out.max_end = std::max<int64_t>(out.max_end, w.start_pos + (int64_t)w.tokens.size());
    if (w.sample) {
      out.sampled.push_back(i);
      out.logit_rows.push_back((int32_t)out.ids.size() - 1);
    }
  }
}

// ---- the recipe ------------------------------------------------------------------------

void llama_forward(llama_executor& ex, const model_config& c, int64_t T, int64_t n_sample) {
  using a = llama_act;
  using w = llama_weight;
  if (T <= 0) return;
  ex.embedding(a::x, T);  // (T, dim)
  for (int64_t l = 0; l < c.n_layers; ++l) {
    // attention: q, k, v of every new token of every sequence in three matmuls
    if (l == 0)
      ex.rmsnorm(a::xn, a::x, {l, w::attn_norm}, T);
    else  // the residual add of the previous layer's feed-forward, fused into this norm
      ex.add_rmsnorm(a::xn, a::x, a::tmp, {l, w::attn_norm}, T);
    ex.matmul(a::q, a::xn, {l, w::wq}, T);  // (T, q_dim)
    ex.matmul(a::k, a::xn, {l, w::wk}, T);  // (T, kv_dim)
    ex.matmul(a::v, a::xn, {l, w::wv}, T);  // (T, kv_dim)
    if (c.qkv_bias) {
      ex.add_bias(a::q, {l, w::bq}, T);
      ex.add_bias(a::k, {l, w::bk}, T);
      ex.add_bias(a::v, {l, w::bv}, T);
    }
    if (c.qk_norm) {
      ex.head_rmsnorm(a::q, {l, w::q_norm}, T, c.n_heads);
      ex.head_rmsnorm(a::k, {l, w::k_norm}, T, c.n_kv_heads);
    }
    ex.rope(a::q, T, c.n_heads);
    ex.rope(a::k, T, c.n_kv_heads);
    ex.kv_store(l, a::k, a::v, T);
    ex.attention(l, a::att, a::q);
    ex.matmul(a::tmp, a::att, {l, w::wo}, T);  // (T, dim): this rank's heads' share
    ex.all_reduce(a::tmp, T);

    // SwiGLU feed-forward
    ex.add_rmsnorm(a::xn, a::x, a::tmp, {l, w::ffn_norm}, T);
    ex.matmul(a::gate, a::xn, {l, w::w_gate}, T);  // (T, hidden)
    ex.matmul(a::up, a::xn, {l, w::w_up}, T);      // (T, hidden)
    ex.silu_mul(a::gate, a::up, T * c.hidden_dim);
    ex.matmul(a::tmp, a::gate, {l, w::w_down}, T);  // (T, dim): this rank's slice of hidden
    ex.all_reduce(a::tmp, T);
  }
  if (n_sample <= 0) return;
  // Norms are per row: norming all T rows and then taking the sampled ones equals norming
  // only those, and keeps the last residual add fused.
  ex.add_rmsnorm(a::xn, a::x, a::tmp, {0, w::output_norm}, T);
  ex.gather_rows(a::last, a::xn, n_sample);                 // (n_sample, dim)
  ex.matmul(a::logits, a::last, {0, w::output}, n_sample);  // (n_sample, vocab)
}

}  // namespace troupe
